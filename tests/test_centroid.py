"""The centroid defense: hooks, the distance, votes, tie-breaking, layer weighting, centroid
sets, the loose variant, threshold calibration, the FGSM evaluation and the CLI."""
import json
import re

import pytest
import torch
from torch import nn

from geoaudit._errors import InputError
from geoaudit.defenses import (
    CentroidDefense,
    calibrate_thresholds,
    evaluate_centroid_defense,
    parse_eps_grid,
    select_centroids,
)
from geoaudit.defenses._centroid import THRESHOLD_PRESETS, default_layer_names, rank_classes

K = 3


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, K)).eval()


def tiny_data(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % K


def manual_distances(model, x, cents):
    """(L, N, M) rescaled cosine distances computed by hand, layer by layer."""
    out = []
    a, c = x, cents
    for m in model:
        a, c = m(a), m(c)
        if isinstance(m, (nn.Linear, nn.ReLU)):
            cos = nn.functional.cosine_similarity(a[:, None, :], c[None, :, :], dim=2, eps=1e-12)
            out.append((1 - cos) / 2)
    return torch.stack(out)


def test_default_layers_and_hooked_activations_match_a_manual_forward():
    model = tiny_model()
    x, _ = tiny_data()
    assert default_layer_names(model) == ["1", "2", "3"]
    d = CentroidDefense(model, x[:K], 0.3)
    acts = d.activations(x)
    with torch.no_grad():
        h1 = model[1](model[0](x))
        h2 = model[2](h1)
        h3 = model[3](h2)
    assert list(acts) == ["1", "2", "3"]
    for got, want in zip(acts.values(), (h1, h2, h3)):
        torch.testing.assert_close(got, want)


def test_distance_is_rescaled_cosine_distance():
    model = tiny_model()
    x, _ = tiny_data()
    d = CentroidDefense(model, x[:K], 0.3)
    dist, logits = d.distances(x)
    with torch.no_grad():
        want = manual_distances(model, x, x[:K])
        torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(dist, want, atol=1e-5, rtol=1e-5)
    assert float(dist.min()) >= 0 and float(dist.max()) <= 1
    # a centroid is at distance 0 from itself at every layer
    assert float(dist[:, torch.arange(K), torch.arange(K)].abs().max()) < 1e-5


def test_votes_follow_thresholds_and_ties_go_to_the_logits():
    model = tiny_model()
    x, _ = tiny_data()
    base = CentroidDefense(model, x[:K], 1.0)
    dist, logits = base.distances(x)
    own_argmax = logits.argmax(1)
    # every distance under 1: every class votes everywhere -> all tie -> the model's prediction
    assert torch.equal(base.predict(x), own_argmax)
    # no class votes: the model's prediction too
    assert torch.equal(CentroidDefense(model, x[:K], 0.0).predict(x), own_argmax)
    # only class 2 can vote: it wins wherever it got at least one vote
    d2 = CentroidDefense(model, x[:K], [0.0, 0.0, 1.0])
    sc = d2.scores(x)
    assert torch.equal(sc.votes[:, 2], torch.full((x.shape[0],), float(d2.num_layers), dtype=torch.float64))
    assert (d2.predict(x) == 2).all()
    # classes 0 and 1 vote everywhere, class 2 never: the tie between 0 and 1 goes to the larger logit
    d01 = CentroidDefense(model, x[:K], [1.0, 1.0, 0.0])
    want = torch.where(logits[:, 0] >= logits[:, 1], 0, 1)
    assert torch.equal(d01.predict(x), want)


def test_rank_classes_orders_by_votes_then_logits():
    votes = torch.tensor([[1.0, 3.0, 3.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[9.0, 0.1, 0.5, 5.0]])
    assert rank_classes(votes, logits).tolist() == [[2, 1, 0, 3]]


def test_layer_weighting_early_and_late_change_the_winner():
    model = tiny_model()
    x, _ = tiny_data()
    n_layers = 3
    # class 0 votes only at layer 1 and class 1 only at layers 2 and 3; class 2 never
    thr = torch.zeros(n_layers, K)
    thr[0, 0] = 1.0
    thr[1:, 1] = 1.0
    flat = CentroidDefense(model, x[:K], thr, layer_weighting="flat")
    early = CentroidDefense(model, x[:K], thr, layer_weighting="early")
    late = CentroidDefense(model, x[:K], thr, layer_weighting="late")
    assert (flat.predict(x) == 1).all()                     # 2 votes beat 1
    assert (early.predict(x) == 0).all()                    # e^-1 > e^-2 + e^-3
    assert (late.predict(x) == 1).all()
    sc = early.scores(x)
    w = torch.exp(-torch.arange(n_layers, dtype=torch.float64))
    torch.testing.assert_close(sc.votes[0], torch.stack([w[0], w[1] + w[2], torch.tensor(0.0, dtype=torch.float64)]))
    # class 0 at layers 1 and 2, class 1 at layer 3 only: late bias flips the flat winner
    thr2 = torch.zeros(n_layers, K)
    thr2[:2, 0] = 1.0
    thr2[2, 1] = 1.0
    assert (CentroidDefense(model, x[:K], thr2).predict(x) == 0).all()
    assert (CentroidDefense(model, x[:K], thr2, layer_weighting="late").predict(x) == 1).all()  # e^0 > e^-1 + e^-2


def test_several_centroid_sets_use_the_closest_centroid_of_each_class():
    model = tiny_model()
    x, _ = tiny_data()
    sets = torch.stack([x[:K], x[K:2 * K]])  # (2, K, 1, 4, 4)
    d5 = CentroidDefense(model, sets, 0.3)
    pair = CentroidDefense(model, (sets.flatten(0, 1), torch.arange(K).repeat(2)), 0.3)
    dist, _ = d5.distances(x)
    with torch.no_grad():
        m = manual_distances(model, x, sets.flatten(0, 1))  # (L, N, 2K)
    torch.testing.assert_close(dist, torch.minimum(m[..., :K], m[..., K:]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pair.distances(x)[0], dist)
    # uneven counts per class are accepted (class 0 has three centroids, the others one)
    uneven = CentroidDefense(model, (x[:5], torch.tensor([0, 1, 2, 0, 0])), 0.3)
    ud, _ = uneven.distances(x)
    with torch.no_grad():
        mu = manual_distances(model, x, x[:5])
    torch.testing.assert_close(ud[..., 0], mu[..., [0, 3, 4]].amin(-1), atol=1e-5, rtol=1e-5)


def test_topk_and_loose_correctness():
    model = tiny_model()
    x, y = tiny_data()
    d = CentroidDefense(model, x[:K], 0.2, top_k=2)
    sc = d.scores(x)
    assert d.topk(x).shape == (x.shape[0], 2)
    assert torch.equal(d.topk(x, 1)[:, 0], d.predict(x))
    assert torch.equal(d.loose_correct(x, y, 1), d.predict(x) == y)
    assert d.loose_correct(x, y, K).all()
    two = d.loose_correct(x, y)  # default k = top_k = 2
    assert torch.equal(two, (sc.ranking[:, :2] == y[:, None]).any(1))
    assert (two.int() >= (d.predict(x) == y).int()).all()


def test_calibrated_thresholds_are_within_class_quantiles():
    model = tiny_model()
    x, y = tiny_data(30)
    cents = x[:K]
    q = 0.7
    thr = calibrate_thresholds(model, cents, x, y, quantile=q)
    with torch.no_grad():
        m = manual_distances(model, x, cents)  # (L, N, K)
    own = m.gather(2, y[None, :, None].expand(m.shape[0], -1, 1)).squeeze(2)
    want = torch.stack([torch.quantile(own[:, y == c], q, dim=1) for c in range(K)], dim=1)
    torch.testing.assert_close(thr, want, atol=1e-5, rtol=1e-5)
    pooled = calibrate_thresholds(model, cents, x, y, quantile=q, per_layer=False)
    torch.testing.assert_close(pooled, torch.stack([torch.quantile(own[:, y == c].flatten(), q) for c in range(K)]),
                               atol=1e-5, rtol=1e-5)
    # about a fraction q of each class's images vote for their class at each layer
    d = CentroidDefense(model, cents, thr)
    dist, _ = d.distances(x)
    own_d = dist.gather(2, y[None, :, None].expand(dist.shape[0], -1, 1)).squeeze(2)
    frac = (own_d < d.thresholds[:, y]).float().mean()
    assert 0.5 <= float(frac) <= 0.75


def test_select_centroids_rules():
    model = tiny_model()
    x, y = tiny_data(30)
    preds = model(x).argmax(1)
    y = preds.clone()  # every image correctly classified, every class present?
    if len(set(y.tolist())) < K:
        y = torch.arange(30) % K
    cents, labels, idx = select_centroids(model, x, y, num_sets=2)
    assert cents.shape == (2, K, 1, 4, 4) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(cents[0, 1], x[idx[0, 1]]) and (y[idx] == torch.arange(K)).all()
    r1 = select_centroids(model, x, y, method="random", random_state=3)[2]
    r2 = select_centroids(model, x, y, method="random", random_state=3)[2]
    assert torch.equal(r1, r2)


def test_presets_are_the_papers_tables():
    assert THRESHOLD_PRESETS["mnist"]["thresholds"][1] == 0.4
    assert THRESHOLD_PRESETS["fashion-mnist"]["thresholds"][4] == 0.35
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x = torch.rand(10, 1, 4, 4)
    d = CentroidDefense(model, x, "mnist")
    assert d.thresholds[0].tolist() == pytest.approx(THRESHOLD_PRESETS["mnist"]["thresholds"])


def test_bad_inputs_are_clear_errors():
    model = tiny_model()
    x, _ = tiny_data()
    with pytest.raises(InputError, match=re.escape("Centroids are missing for 1 of 3 classes: 2 ('2')")):
        CentroidDefense(model, (x[:2], torch.tensor([0, 1])), 0.3)
    with pytest.raises(InputError, match="Got 2 thresholds for 3 classes"):
        CentroidDefense(model, x[:K], [0.1, 0.2])
    with pytest.raises(InputError, match=r"per-layer thresholds must be \(3, 3\)"):
        CentroidDefense(model, x[:K], torch.full((2, 3), 0.2))
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        CentroidDefense(model, x[:K], 1.5)
    with pytest.raises(InputError, match=r"no layer 'fc9'; available layer names: 0, 1, 2, 3"):
        CentroidDefense(model, x[:K], 0.3, layers=["fc9"])
    with pytest.raises(InputError, match="preset 'mnist' has 10 classes but the model has 3"):
        CentroidDefense(model, x[:K], "mnist")
    with pytest.raises(InputError, match="Unknown threshold preset 'cifar'"):
        CentroidDefense(model, x[:K], "cifar")
    with pytest.raises(InputError, match="layer_weighting"):
        CentroidDefense(model, x[:K], 0.3, layer_weighting="middle")
    with pytest.raises(InputError, match="values in"):
        CentroidDefense(model, x[:K] * 3, 0.3)
    # a chosen subset of layers works and changes L
    assert CentroidDefense(model, x[:K], 0.3, layers=["1", "3"]).num_layers == 2


def test_parse_eps_grid():
    assert parse_eps_grid("0,0.05,...,0.2") == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert parse_eps_grid("0:0.3:0.1") == [0.0, 0.1, 0.2, 0.3]
    assert parse_eps_grid("0.2,0") == [0.0, 0.2]
    with pytest.raises(InputError):
        parse_eps_grid("0,abc")
    with pytest.raises(InputError):
        parse_eps_grid("0,1.5")


def test_end_to_end_on_sklearn_digits(digits_mlp):
    model, d = digits_mlp
    xtr, ytr = d["train"]
    xte, yte = d["test"][0][:300], d["test"][1][:300]
    defense = CentroidDefense.from_data(model, xtr, ytr, quantile=0.95, top_k=3)
    grid = [0.0, 0.05, 0.1, 0.3]
    curve = evaluate_centroid_defense(defense, xte, yte, eps_grid=grid, top_k=3)
    rows = curve.rows()
    assert [r["eps"] for r in rows] == grid and curve.n == 300
    clean = float((model(xte).argmax(1) == yte).float().mean())
    assert rows[0]["undefended"] == pytest.approx(clean)
    assert clean > 0.6  # the model did learn
    for r in rows:
        assert 0 <= r["defended"] <= r["loose"] <= 1  # top-1 correct implies top-3 correct
        # the defense must not cost much accuracy against the undefended model
        assert r["defended"] >= r["undefended"] - 0.15
    assert rows[-1]["undefended"] < rows[0]["undefended"]  # the attack bites
    d = curve.to_dict()
    json.dumps(d)
    assert curve.to_csv().splitlines()[0] == "eps,undefended,defended,loose,undefended_topk,attack_success"


def _checkpoint(tmp_path, model):
    from geoaudit.train import make_config, save_checkpoint

    return save_checkpoint(tmp_path / "ck", model, make_config(
        arch="mlp7", class_names=[str(i) for i in range(10)], in_channels=1, image_size=8))


def test_cli_defend_centroid(tmp_path, digits_mlp, capsys):
    from geoaudit.cli import main

    ck = _checkpoint(tmp_path, digits_mlp[0])
    out = tmp_path / "out"
    rc = main(["defend", "centroid", "--model", str(ck), "--data", "digits", "--eps-grid", "0,0.1",
               "--limit", "120", "--calib-limit", "300", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    for f in ("centroid_eval.json", "centroid_eval.csv", "centroid_eval.png", "thresholds.json", "centroids.png"):
        assert (out / f).exists(), f
    res = json.loads((out / "centroid_eval.json").read_text())
    assert [r["eps"] for r in res["rows"]] == [0.0, 0.1] and res["n"] == 120
    # thresholds.json from that run is accepted back, and a preset too
    out2 = tmp_path / "out2"
    assert main(["defend", "centroid", "--model", str(ck), "--data", "digits", "--eps-grid", "0",
                 "--limit", "50", "--calib-limit", "200", "--thresholds", str(out / "thresholds.json"),
                 "--layer-weighting", "late", "--device", "cpu", "--out", str(out2)]) == 0
    assert main(["defend", "centroid", "--model", str(ck), "--data", "digits", "--eps-grid", "0",
                 "--limit", "50", "--calib-limit", "200", "--thresholds", "mnist", "--device", "cpu",
                 "--out", str(out2)]) == 0


def test_cli_defend_bad_inputs(tmp_path, digits_mlp, capsys):
    from geoaudit.cli import main

    ck = _checkpoint(tmp_path, digits_mlp[0])
    base = ["defend", "centroid", "--model", str(ck), "--data", "digits", "--eps-grid", "0", "--limit", "30",
            "--calib-limit", "200", "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(base + ["--layers", "net.1,nope"]) == 2
    assert "no layer 'nope'; available layer names: net, net.0, net.1" in capsys.readouterr().err
    bad = tmp_path / "thr.json"
    bad.write_text("[0.1, 0.2]")
    assert main(base + ["--thresholds", str(bad)]) == 2
    assert "Got 2 thresholds for 10 classes" in capsys.readouterr().err
    assert main(base + ["--thresholds", "nothing-like-this"]) == 2
    assert "neither 'calibrate', a preset" in capsys.readouterr().err
    assert main(["defend", "centroid", "--model", str(tmp_path / "missing"), "--data", "digits",
                 "--out", str(tmp_path / "o")]) == 2
    assert "No geoaudit checkpoint" in capsys.readouterr().err
    assert main(base[:-2] + ["--eps-grid", "0,x", "--out", str(tmp_path / "o")]) == 2
    assert main(["defend"]) == 2


def test_centroid_curve_follows_the_result_protocol():
    import dataclasses

    from geoaudit.defenses import CentroidCurve

    c = CentroidCurve(eps=[0.0, 0.1], undefended=[0.9, 0.2], defended=[0.85, 0.5], loose=[0.95, 0.7],
                      undefended_topk=[0.97, 0.6], attack_success=[None, 0.75], n=10, num_classes=4, top_k=2,
                      defense={"thresholds": [0.1, 0.2]}, meta={"data": "x"})
    assert c.eps == (0.0, 0.1) and c.chance == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n = 3
    with pytest.raises(TypeError):
        c.meta["data"] = "y"
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d and d["rows"][1]["attack_success"] == 0.75
    assert d["defense"] == {"thresholds": [0.1, 0.2]}
    assert "loose@2" in c.summary() and "<pre>" in c._repr_html_()
    with pytest.raises(InputError, match="equal lengths"):
        CentroidCurve(eps=[0.0], undefended=[0.9, 0.1], defended=[0.8], loose=[0.9], undefended_topk=[0.9],
                      attack_success=[None], n=1, num_classes=2, top_k=1)
    fig = c.plot()
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and fig.axes[0].get_xlabel() == "FGSM epsilon (Linf)"


def test_centroid_scores_summary_and_dict():
    model = tiny_model()
    x, y = tiny_data()
    sc = CentroidDefense(model, x[:K], 0.3).scores(x)
    d = sc.to_dict()
    assert d["n"] == 12 and d["num_classes"] == K and d["prediction"] == sc.prediction.tolist()
    assert "12 images" in sc.summary()


def test_load_split_builtin_digits():
    from geoaudit.data import BUILTIN_DATA, load_builtin, load_split

    assert "digits" in BUILTIN_DATA
    x, y, names = load_builtin("digits", "test", image_size=8)
    assert x.shape[1:] == (1, 8, 8) and len(names) == 10 and 0 <= float(x.min()) and float(x.max()) <= 1
    x2, y2, _ = load_split("digits", "train", image_size=12, channels=3, per_class=5, random_state=1)
    assert x2.shape == (50, 3, 12, 12) and torch.bincount(y2).tolist() == [5] * 10
    x3, _, _ = load_split("digits", "train", image_size=12, limit=30, random_state=1)
    x4, _, _ = load_split("digits", "train", image_size=12, limit=30, seed=1)  # the deprecated name
    assert torch.equal(x3, x4) and x3.shape[0] == 30
    with pytest.raises(InputError, match="splits 'train' and 'test'"):
        load_split("digits", "validation")
    with pytest.raises(InputError, match="'image_size' parameter of load_split"):
        load_split("digits", "test", image_size=4)


def test_offline_mnist_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision

    from geoaudit._errors import DependencyError
    from geoaudit.data import load_split

    class Offline:
        def __init__(self, root, train, download):
            (tmp_path / "root" / "sub" / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    (tmp_path / "keep").mkdir()
    with pytest.raises(DependencyError, match="could not be loaded") as e:
        load_split("mnist", "test", data_root=tmp_path / "root" / "sub")
    assert "--" not in str(e.value)  # the library names no command-line option
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_evaluate_centroid_checkpoint_and_files(tmp_path, digits_mlp):
    from matplotlib.figure import Figure

    from geoaudit.defenses import CentroidEvaluation, evaluate_centroid_checkpoint
    from geoaudit.report import plot_centroid_images, write_centroid_evaluation

    ck = _checkpoint(tmp_path, digits_mlp[0])
    ev = evaluate_centroid_checkpoint(ck, "digits", eps_grid="0,0.1", limit=60, calib_limit=200, device="cpu",
                                      centroid_sets=2, per_layer=False)
    assert isinstance(ev, CentroidEvaluation) and ev.centroids.shape[:2] == (2, 10)
    assert ev.curve.n == 60 and "pooled over layers" in ev.thresholds["rule"]
    assert json.loads(json.dumps(ev.to_dict()))["class_names"] == [str(i) for i in range(10)]
    assert isinstance(plot_centroid_images(ev.centroids, ev.class_names), Figure)
    written = write_centroid_evaluation(ev, tmp_path / "out")
    assert sorted(written) == ["centroid_eval.csv", "centroid_eval.json", "centroid_eval.png", "centroids.png",
                               "thresholds.json"]
    assert (tmp_path / "out" / "centroids.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="'top_k' parameter"):
        evaluate_centroid_checkpoint(ck, "digits", top_k=11, eps_grid="0", limit=10, device="cpu")


# ---------------------------------------------------------------------- faithful mode
def test_faithful_mode_hooks_the_papers_layer_count_and_ties_go_to_the_lowest_class():
    from geoaudit.train import MLP7, LeNet5

    torch.manual_seed(0)
    mlp, lenet = MLP7(10, 64).eval(), LeNet5(10, 1, 28).eval()
    x8, x28 = torch.rand(10, 1, 8, 8), torch.rand(10, 1, 28, 28)
    assert CentroidDefense.faithful(mlp, x8).num_layers == 7  # the paper's "7 fully-connected layers"
    assert CentroidDefense.faithful(lenet, x28).num_layers == 5  # "5 layers, two convolutional"
    assert CentroidDefense(mlp, x8, 0.3).num_layers == 13  # calibrated default: Linear + ReLU modules
    # threshold 1: every class votes at every layer, a 10-way tie
    faithful = CentroidDefense.faithful(mlp, x8, 1.0)
    assert faithful.tie_break == "first" and faithful.to_dict()["tie_break"] == "first"
    assert (faithful.scores(x8).votes == 7).all()
    assert (faithful.predict(x8) == 0).all()  # the paper's argmax: the first class of equal maxima
    assert (faithful.topk(x8, 3) == torch.tensor([0, 1, 2])).all()
    by_logits = CentroidDefense(mlp, x8, 1.0, layers="paper")
    assert torch.equal(by_logits.predict(x8), mlp(x8).argmax(1))  # geoaudit: ties follow the model
    with pytest.raises(InputError, match="tie_break"):
        CentroidDefense(mlp, x8, 0.3, tie_break="random")


def test_faithful_mode_reproduces_the_papers_pattern_on_digits(digits_mlp):
    """Paper 002, table 1: clean accuracy drops, accuracy under FGSM rises vs undefended."""
    model, d = digits_mlp
    (xtr, ytr), (xte, yte) = d["train"], d["test"]
    cents, cl, _ = select_centroids(model, xtr, ytr, random_state=0)
    faithful = CentroidDefense.faithful(model, (cents.flatten(0, 1), cl), "mnist")
    curve = evaluate_centroid_defense(faithful, xte[:200], yte[:200], eps_grid=[0, 0.1, 0.2])
    assert curve.defended[0] < curve.undefended[0] - 0.3
    assert curve.defended[1] > curve.undefended[1] + 0.03
    assert curve.defended[2] > curve.undefended[2]
    calibrated = CentroidDefense.from_data(model, xtr, ytr, random_state=0)
    clean = evaluate_centroid_defense(calibrated, xte[:200], yte[:200], eps_grid=[0])
    assert clean.defended[0] > curve.defended[0] + 0.3  # the calibrated mode keeps clean accuracy


def test_cli_defend_centroid_faithful_mode(tmp_path, digits_mlp, capsys):
    from geoaudit.cli import main

    ck = _checkpoint(tmp_path, digits_mlp[0])
    out = tmp_path / "faithful"
    assert main(["defend", "centroid", "--model", str(ck), "--data", "digits", "--eps-grid", "0,0.1",
                 "--limit", "60", "--mode", "faithful", "--device", "cpu", "--out", str(out)]) == 0
    d = json.loads((out / "centroid_eval.json").read_text())
    assert d["defense"]["tie_break"] == "first"
    assert len(d["defense"]["layers"]) == 7
    assert d["meta"]["mode"] == "faithful" and "mnist" in d["meta"]["threshold_rule"]
