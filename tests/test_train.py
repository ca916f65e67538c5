"""geoaudit.train: Algorithm 2 weights, weighted sampling, k-means centers, attack reuse,
same seed same model, resume after a kill, Ray backend, CLI and audit integration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from geoaudit._errors import DependencyError, InputError
from geoaudit.attacks import FGSM, PGD
from geoaudit.cli import main
from geoaudit.train import (
    WeightedDataset,
    build_adversarial_dataset,
    cluster_by_label,
    from_tensors,
    load_model,
    load_training_data,
    sample_model,
    train_population,
)
from geoaudit.train._dro import CenterReuse, to_u8
from geoaudit.train._kmeans import Clustering

sys.path.insert(0, str(Path(__file__).parent))
from _train_data import make_dataset_dir, make_images  # noqa: E402

FAST = {"batch_size": 16, "lr": 0.05}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset_dir(tmp_path_factory.mktemp("data") / "geo", n_per_class=10, n_classes=3, size=16)


@pytest.fixture(scope="module")
def tiny():
    ims, labs = make_images(n_per_class=4, n_classes=3, size=16)
    return from_tensors(torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labs),
                        class_names=["a", "b", "c"])


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- Algorithm 2 ----------------------------------------------------------------------------
def test_algorithm2_weights_sequence(tmp_path, tiny):
    n, rounds, b = tiny.n, 3, 5
    res = build_adversarial_dataset(tiny, attack=FGSM(eps=0.05), out_dir=tmp_path / "D", rounds=rounds,
                                    batch_size=b, reuse=False, storage="uint8")
    d = WeightedDataset.open(res.folder)
    assert d.complete and d.size == n * (rounds + 1) == res.size
    expected = [1.0] * n + [float((k - 1) * n + i) for k in range(1, rounds + 1) for i in range(1, n + 1)]
    np.testing.assert_array_equal(d.weights[:d.size], expected)
    np.testing.assert_array_equal(d.rounds[:d.size], np.repeat(np.arange(rounds + 1), n))
    # every appended attack keeps its source example's label, and the clean rows are the data
    np.testing.assert_array_equal(d.labels[:d.size], tiny.labels.numpy()[d.source[:d.size]])
    np.testing.assert_array_equal(np.asarray(d.images[:n]), tiny.images.numpy())
    assert res.stats["attacks_computed"] == res.stats["fresh_attacks"] == n * rounds
    assert list(res.stats["attacks_per_round"]) == [n] * rounds
    # a finished D with the same settings is returned as is; other settings are refused
    again = build_adversarial_dataset(tiny, attack=FGSM(eps=0.05), out_dir=tmp_path / "D", rounds=rounds,
                                      batch_size=b, reuse=False, storage="uint8")
    assert again.stats == res.stats
    with pytest.raises(InputError, match="other settings"):
        build_adversarial_dataset(tiny, attack=FGSM(eps=0.1), out_dir=tmp_path / "D", rounds=rounds,
                                  batch_size=b, reuse=False, storage="uint8")


def test_weighted_sampling_proportions(tmp_path, tiny):
    from scipy import stats

    n = tiny.n
    d = WeightedDataset.create(tmp_path / "D", tiny.images, tiny.labels, capacity=2 * n, meta={})
    d.append(tiny.images, tiny.labels.numpy(), np.arange(1, n + 1), np.arange(n), 1)  # round-1 weights 1..N
    draws = 200_000
    counts = np.bincount(d.draw(draws, np.random.default_rng(0)), minlength=d.size)
    expected = d.weights[:d.size] / d.weights[:d.size].sum() * draws
    # Chi-square goodness of fit: for a correct sampler this fails for 1 seed in 1000.
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # And no single row is off by more than 5 binomial standard deviations (p < 6e-7 each).
    p = expected / draws
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(draws * p * (1 - p)))
    assert d.mean_sampled_weight() == pytest.approx((d.weights[:d.size] ** 2).sum() / d.weights[:d.size].sum())


# --- k-means --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_kmeans_centers_are_members(backend, device):
    if backend == "sklearn" and device != "cpu":
        pytest.skip("scikit-learn runs on the CPU")
    ims, labs = make_images(n_per_class=23, n_classes=3, size=8, seed=1)
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labs).to(device)
    c = cluster_by_label(x, y, cluster_size=5, backend=backend, random_state=0)
    assert isinstance(c, Clustering) and c.backend == backend
    a, centers = c.assignment.cpu(), c.centers.cpu()
    assert a.shape == (len(labs),) and int(a.min()) == 0 and int(a.max()) == c.n_clusters - 1
    # about 5 per cluster: round(23 / 5) = 5 clusters per label, none empty
    assert c.n_clusters == 15 and int(torch.bincount(a).min()) >= 1
    flat = x.float().div(255).flatten(1).cpu()
    for k in range(c.n_clusters):
        members = (a == k).nonzero().squeeze(1)
        assert a[centers[k]] == k                                   # the center is a member
        assert len(set(labs[members.numpy()])) == 1                 # one label per cluster
        assert labs[centers[k]] == int(c.cluster_labels[k])
        mean = flat[members].mean(0)
        dist = (flat[members] - mean).pow(2).sum(1)
        assert float((flat[centers[k]] - mean).pow(2).sum()) <= float(dist.min()) + 1e-6  # nearest the mean
    # a valid clustering: each point is nearer its own cluster mean than to most others (Lloyd fixed point
    # for torch; sklearn's labels likewise) -- checked as: the within-cluster sum beats a random labelling.
    means = torch.stack([flat[a == k].mean(0) for k in range(c.n_clusters)])
    wss = float((flat - means[a]).pow(2).sum())
    perm = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))]
    rmeans = torch.stack([flat[perm == k].mean(0) if (perm == k).any() else flat.mean(0) for k in range(c.n_clusters)])
    assert wss < 0.8 * float((flat - rmeans[perm]).pow(2).sum())


# --- attack reuse (appendix D) ----------------------------------------------------------------
class _Brightness(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], 1) * 100


class _BrightenAttack:
    """Adds 0.4 to every pixel; records what it was asked to attack."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, images, labels):
        self.calls.append(images.clone())
        return (images + 0.4).clamp(0, 1)


def test_reuse_falls_back_to_fresh_attack():
    model = _Brightness()
    # one cluster of label 0: the center (0.30) and two members (0.35 transfers, 0.02 does not)
    vals = torch.tensor([0.30, 0.35, 0.02])
    clean = to_u8(vals.view(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous())
    labels = torch.zeros(3, dtype=torch.long)
    clustering = Clustering(torch.zeros(3, dtype=torch.long), torch.tensor([0]), torch.tensor([0]), "torch")
    reuse = CenterReuse(clustering, clean, labels, torch.device("cpu"))
    attack = _BrightenAttack()
    calls = []

    def fresh(x, y):
        calls.append(len(x))
        return to_u8(attack(model, x, y))

    adv, ok, refreshed = reuse(model, clean[1:], labels[1:], torch.tensor([1, 2]), 1, fresh)
    assert refreshed == 1 and ok.tolist() == [True, False]
    assert calls == [1, 1]                                   # the center, then only the failed member
    assert torch.equal(attack.calls[1], clean[2:3].float() / 255)
    assert torch.equal(adv[0], (clean[1].int() + (reuse.center_adv[0].int() - clean[0].int())).clamp(0, 255).to(torch.uint8))
    assert torch.equal(adv[1], to_u8(clean[2:3].float() / 255 + 0.4)[0])   # the fresh attack's image
    # same round: the center is not attacked again; next round it is refreshed
    reuse(model, clean[1:2], labels[1:2], torch.tensor([1]), 1, fresh)
    assert calls == [1, 1]
    reuse(model, clean[1:2], labels[1:2], torch.tensor([1]), 2, fresh)
    assert calls == [1, 1, 1]


def test_reuse_in_algorithm2_counts(tmp_path, tiny):
    res = build_adversarial_dataset(tiny, attack=PGD(1.0, 0.5, 2), out_dir=tmp_path / "D", rounds=2, batch_size=6,
                                    reuse=True, cluster_size=4, kmeans="torch")
    s = res.stats
    assert s["kmeans"]["n_clusters"] == 3 and s["kmeans"]["backend"] == "torch"
    assert s["attacks_computed"] == s["center_refreshes"] + s["fresh_attacks"]
    assert s["reused"] + s["fresh_attacks"] == s["appended"] == 2 * tiny.n
    assert 0.0 <= s["reuse_rate"] <= 1.0 and sum(s["attacks_per_round"]) == s["attacks_computed"]


@pytest.mark.parametrize("reuse, fail_at", [(False, 3), ("auto", None)])
def test_algorithm2_resumes_after_interruption(tmp_path, tiny, reuse, fail_at):
    class Boom(Exception):
        pass

    class Flaky:
        """FGSM that raises on its n-th call (a crash in round 2)."""

        def __init__(self, fail_at):
            self.inner, self.fail_at, self.n = FGSM(eps=0.05), fail_at, 0

        def _params(self):
            return self.inner._params()

        def __call__(self, model, x, y):
            self.n += 1
            if self.n == self.fail_at:
                raise Boom()
            return self.inner(model, x, y)

    kw = dict(rounds=3, batch_size=6, reuse=reuse, cluster_size=2)
    ref_attack = Flaky(0)
    ref = build_adversarial_dataset(tiny, attack=ref_attack, out_dir=tmp_path / "ref", **kw)
    if fail_at is None:  # the last attack call: a crash in the last round, after the reuse decision
        fail_at = ref_attack.n
    with pytest.raises(Boom):
        build_adversarial_dataset(tiny, attack=Flaky(fail_at), out_dir=tmp_path / "D", **kw)
    assert not WeightedDataset.open(tmp_path / "D").complete
    res = build_adversarial_dataset(tiny, attack=Flaky(0), out_dir=tmp_path / "D", **kw)
    a, b = WeightedDataset.open(ref.folder), WeightedDataset.open(res.folder)
    assert a.size == b.size and np.array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(a.weights, b.weights)
    if reuse == "auto":
        steps_only = ("use_reuse", "pilot_rows", "projected_steps_per_round_with_reuse",
                      "projected_steps_per_round_without_reuse")    # the rest are timings
        assert all(res.stats["reuse_decision"][k] == ref.stats["reuse_decision"][k] for k in steps_only)
        assert res.stats["gradient_steps"] == ref.stats["gradient_steps"]
    sa = torch.load(ref.folder / "theta.pt", weights_only=True)["state_dict"]
    sb = torch.load(res.folder / "theta.pt", weights_only=True)["state_dict"]
    assert _states_equal(sa, sb)


# --- Algorithm 3 ----------------------------------------------------------------------------
def test_same_seed_same_model(tmp_path, tiny):
    d = WeightedDataset.create(tmp_path / "D", tiny.images, tiny.labels, capacity=tiny.n, meta={})
    kw = dict(arch="small_cnn", class_names=tiny.class_names, epochs=2, batch_size=4)
    m1, i1 = sample_model(d, seed=3, **kw)
    m2, _ = sample_model(d, seed=3, **kw)
    m3, _ = sample_model(d, seed=4, **kw)
    assert _states_equal(m1.state_dict(), m2.state_dict())
    assert not _states_equal(m1.state_dict(), m3.state_dict())
    assert len(i1["history"]) == 2 and i1["weights_source"] == "scratch"


# --- populations ----------------------------------------------------------------------------
_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from geoaudit.train import train_population

    def kill(name, epoch, stats):
        if name == "model_001" and epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, like a lost node

    train_population(sys.argv[1], augment="plain", n_models=3, epochs=2, out_dir=sys.argv[2],
                     batch_size=16, on_epoch_end=kill)
""")


def test_population_resumes_after_kill(tmp_path, data_dir):
    out = tmp_path / "pop"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, GEOAUDIT_PROGRESS="0")
    proc = subprocess.run([sys.executable, str(script), str(data_dir), str(out)], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (out / "model_000" / "config.json").exists() and not (out / "model_001").exists()
    assert (out / ".state" / "model_001.pt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["status"] for m in manifest["models"]] == ["done", "pending", "pending"]
    w0 = (out / "model_000" / "weights.pt").stat()

    res = train_population(data_dir, augment="plain", n_models=3, epochs=2, out_dir=out, batch_size=16)
    assert [m["status"] for m in res.manifest["models"]] == ["done"] * 3
    assert res.manifest["timing"]["models_trained_this_run"] == 2
    assert (out / "model_000" / "weights.pt").stat().st_mtime_ns == w0.st_mtime_ns   # not repeated
    m1 = next(m for m in res.manifest["models"] if m["name"] == "model_001")
    assert m1["resumed_from_epoch"] == 1 and not (out / ".state").exists()
    # the resumed model is bitwise the model an uninterrupted run gives
    ref = train_population(data_dir, augment="plain", n_models=1, seeds=[1], epochs=2, out_dir=tmp_path / "ref",
                           batch_size=16)
    a, cfg = load_model(out / "model_001")
    b, _ = load_model(ref.checkpoints[0])
    assert _states_equal(a.state_dict(), b.state_dict())
    tr = cfg["training"]
    assert tr["method"] == "plain" and tr["seed"] == 1 and tr["epochs"] == 2 and tr["lr"] == 0.05
    assert tr["data"]["fingerprint"] == res.manifest["data"]["fingerprint"] and "train_seconds" in tr["timing"]
    # a re-run trains nothing
    again = train_population(data_dir, augment="plain", n_models=3, epochs=2, out_dir=out, batch_size=16)
    assert again.manifest["timing"]["models_trained_this_run"] == 0


def test_ray_backend_matches_local(tmp_path, data_dir):
    ray = pytest.importorskip("ray")
    kw = dict(augment="plain", n_models=2, epochs=1, batch_size=16)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "GEOAUDIT_PROGRESS": "0"}})
    try:
        r = train_population(data_dir, out_dir=tmp_path / "ray", backend="ray", **kw)
    finally:
        ray.shutdown()
    loc = train_population(data_dir, out_dir=tmp_path / "local", **kw)
    assert [m["status"] for m in r.manifest["models"]] == ["done", "done"]
    assert list(r.manifest["seeds"]) == list(loc.manifest["seeds"]) == [0, 1]
    for a, b in zip(r.checkpoints, loc.checkpoints):
        ma, _ = load_model(a)
        mb, _ = load_model(b)
        assert _states_equal(ma.state_dict(), mb.state_dict())


def test_ray_missing_is_a_clear_error(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DependencyError, match=r"geoaudit\[ray\]"):
        train_population(data_dir, augment="plain", n_models=1, epochs=1, out_dir=tmp_path / "p", backend="ray")


def test_bad_inputs(tmp_path, data_dir):
    with pytest.raises(InputError, match="'augment' parameter of train_population must be one of"):
        train_population(data_dir, augment="fgsm", out_dir=tmp_path / "a")
    with pytest.raises(InputError, match="'arch' parameter"):
        train_population(data_dir, arch="vgg", out_dir=tmp_path / "a")
    bad = make_dataset_dir(tmp_path / "nolabel", n_per_class=2, drop=("label",))
    with pytest.raises(InputError, match="no column 'label'"):
        load_training_data(bad)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        train_population(data_dir, n_models=1, epochs=1, out_dir=tmp_path / "full")


# --- CLI ------------------------------------------------------------------------------------
def test_cli_train_resume_and_refusals(tmp_path, data_dir, capsys):
    out = tmp_path / "pgd"
    base = ["train", "--data", str(data_dir), "--augment", "pgd", "--models", "2", "--epochs", "1",
            "--rounds", "1", "--attack-steps", "2", "--eps", "1.0", "--batch-size", "16", "--device", "cpu",
            "--out", str(out)]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "2/2 models" in text and "Algorithm 2" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"] == "pgd" and m["seeds"] == [0, 1]
    assert m["weighted_dataset"]["size"] == 2 * 30 and m["weighted_dataset"]["algorithm2"]["attacks_computed"] > 0
    _, cfg = load_model(out / "model_001")
    assert cfg["training"]["attack"]["class"] == "PGD" and cfg["training"]["dro"]["rounds"] == 1
    assert main(base) == 0 and "trained 0 this run" in capsys.readouterr().out
    # other settings in the same folder are refused, naming what differs
    assert main(base[:-2] + ["--lr", "0.1", "--out", str(out)]) == 2
    assert "differing: lr" in capsys.readouterr().err
    # a checkpoint of another architecture, and a corrupt one
    cfg_path = out / "model_000" / "config.json"
    good = cfg_path.read_text()
    cfg_path.write_text(good.replace('"arch": "small_cnn"', '"arch": "lenet5"'))
    assert main(base) == 2 and "holds a 'lenet5' model" in capsys.readouterr().err
    cfg_path.write_text("{not json")
    assert main(base) == 2 and "Corrupt checkpoint config" in capsys.readouterr().err
    cfg_path.write_text(good)
    with pytest.raises(InputError, match="not 'lenet5'"):
        load_model(out / "model_000", arch="lenet5")


@pytest.mark.parametrize("argv, message", [
    (["--augment", "mixup"], "'--augment' parameter of geoaudit train must be one of"),
    (["--arch", "vgg"], "'--arch' parameter"),
    (["--backend", "spark"], "'--backend' parameter"),
    (["--augment", "perceptual", "--eps", "1"], "--eps do(es) not apply to --augment perceptual"),
    (["--models", "0"], "--models must be at least 1"),
    (["--storage", "int4"], "'--storage' parameter of geoaudit train must be one of"),
    (["--reuse", "maybe"], "'--reuse' parameter of geoaudit train must be one of"),
])
def test_cli_bad_arguments(tmp_path, data_dir, capsys, argv, message):
    rc = main(["train", "--data", str(data_dir), "--out", str(tmp_path / "o"), "--epochs", "1", *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_cli_missing_columns(tmp_path, capsys):
    bad = make_dataset_dir(tmp_path / "nolabel", n_per_class=2, drop=("label",), fmt="parquet")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "o"), "--models", "1"]) == 2
    assert "no column 'label'" in capsys.readouterr().err


def test_population_is_auditable(tmp_path, data_dir, capsys):
    out = tmp_path / "plain"
    assert main(["train", "--data", str(data_dir), "--models", "2", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--out", str(out)]) == 0
    rc = main(["audit", "--models", str(out), "--data", str(data_dir), "--split", "test", "--min-group-size", "2",
               "--device", "cpu", "--out", str(tmp_path / "audit")])
    err = capsys.readouterr().err
    assert rc == 0, err
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert len(json.dumps(report)) > 0 and "model_000" in json.dumps(report) and "model_001" in json.dumps(report)


def test_perceptual_population_and_default_attacks(tmp_path, data_dir):
    from geoaudit.attacks import PerceptualDRO
    from geoaudit.train import make_attack

    atk = make_attack("perceptual", steps=2)
    assert isinstance(atk, PerceptualDRO) and atk.steps == 2
    assert isinstance(make_attack("pgd"), PGD)
    with pytest.raises(InputError, match="Unknown pgd attack parameter"):
        make_attack("pgd", lam=1.0)
    r = train_population(data_dir, augment="perceptual", attack=atk, n_models=1, epochs=1, dro_rounds=1,
                         batch_size=16, out_dir=tmp_path / "perc", kmeans="torch")
    m = r.manifest
    assert m["method"] == "perceptual" and m["settings"]["attack"]["class"] == "PerceptualDRO"
    a2 = m["weighted_dataset"]["algorithm2"]
    assert m["weighted_dataset"]["size"] == 2 * 30 and a2["appended"] == 30
    assert a2["attacks_computed"] == a2["center_refreshes"] + a2["fresh_attacks"]


# --- result protocol, attack preset, random_state ------------------------------------------------
def test_results_are_frozen_and_summarised(tmp_path, tiny):
    import dataclasses

    from geoaudit.train import DEFAULT_ATTACK_PARAMS, DROResult, make_attack

    res = build_adversarial_dataset(tiny, attack=FGSM(eps=0.05), out_dir=tmp_path / "D", rounds=1, batch_size=6,
                                    reuse=False, random_state=1)
    assert isinstance(res, DROResult) and res.settings["seed"] == 1
    with pytest.raises(TypeError):
        res.stats["attacks_computed"] = 0          # read-only mapping
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.size = 0
    assert "Algorithm 2:" in res.summary() and json.dumps(res.to_dict())
    # the deprecated name still works, with a warning, and gives the same D
    with pytest.warns(DeprecationWarning, match="random_state"):
        old = build_adversarial_dataset(tiny, attack=FGSM(eps=0.05), out_dir=tmp_path / "D", rounds=1,
                                        batch_size=6, reuse=False, seed=1)
    assert old.stats == res.stats
    # the training preset goes through geoaudit.attacks.make_attack, preset values explicit
    atk = make_attack("pgd")
    assert atk.eps == DEFAULT_ATTACK_PARAMS["pgd"]["eps"] and atk.steps == DEFAULT_ATTACK_PARAMS["pgd"]["steps"]
    assert make_attack("pgd", eps=2.0, random_start=True).random_start is True   # any class parameter


def test_population_result_protocol(tmp_path, data_dir):
    r = train_population(data_dir, augment="plain", n_models=1, epochs=1, batch_size=16, out_dir=tmp_path / "p")
    with pytest.raises(TypeError):
        r.manifest["method"] = "pgd"
    assert r.to_dict()["manifest"]["method"] == "plain" and "1/1 models done" in r.summary()
    from geoaudit._io import to_json

    assert json.loads(to_json(r.manifest))["seeds"] == [0]


def test_damaged_checkpoint_is_retrained_not_counted(tmp_path, data_dir, capsys):
    out = tmp_path / "plain"
    base = ["train", "--data", str(data_dir), "--models", "2", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--out", str(out)]
    assert main(base) == 0
    capsys.readouterr()
    w = out / "model_001" / "weights.pt"
    good = w.read_bytes()
    cfg = json.loads((out / "model_001" / "config.json").read_text())
    import hashlib

    assert cfg["weights_sha256"] == hashlib.sha256(good).hexdigest()
    w.write_bytes(good[: len(good) // 2])                                  # truncated after it finished
    with pytest.raises(InputError, match=r"model_001.*weights\.pt.*sha256 does not match"):
        load_model(out / "model_001")
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "model_001: trained again" in text and "trained 1 this run" in text and "2/2 models" in text
    assert w.read_bytes() == good                                          # same seed, same weights
    m = json.loads((out / "manifest.json").read_text())
    assert [r["name"] for r in m["retrained_damaged"]] == ["model_001"]
    # a checkpoint written before hashes were recorded still loads; one that does not load is retrained
    cfg0 = json.loads((out / "model_000" / "config.json").read_text())
    del cfg0["weights_sha256"]
    (out / "model_000" / "config.json").write_text(json.dumps(cfg0))
    load_model(out / "model_000")
    assert main(base) == 0 and "trained 0 this run" in capsys.readouterr().out
    (out / "model_000" / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="Corrupt checkpoint weights"):
        load_model(out / "model_000")
    assert main(base) == 0 and "model_000: trained again" in capsys.readouterr().out


# --- D keeps what the attack did; work counted in gradient steps; reuse "auto" ------------------
class _Nudge:
    """A 'perceptual' attack that changes every pixel by 0.001 (below uint8's 1/255 step), 3 steps each."""

    def _params(self):
        return {"delta": 0.001}

    def __call__(self, model, images, labels):
        from geoaudit.attacks._base import AttackResult

        n = images.shape[0]
        return AttackResult(images=(images + 0.001).clamp(0, 1), success=torch.ones(n, dtype=torch.bool),
                            steps=torch.full((n,), 3), margins=torch.zeros(n), seconds=0.0, method="nudge")


@pytest.mark.parametrize("storage, survives", [("float16", True), ("uint8", False)])
def test_storage_keeps_sub_quantum_perturbations(tmp_path, tiny, storage, survives):
    res = build_adversarial_dataset(tiny, attack=_Nudge(), out_dir=tmp_path / "D", rounds=1, batch_size=6,
                                    reuse=False, storage=storage)
    d = WeightedDataset.open(res.folder)
    assert d.storage == storage and d.meta["settings"]["storage"] == storage
    assert d.bytes_per_image == 3 * 16 * 16 * (2 if storage == "float16" else 1)
    # every stored attack byte-identical to its input under uint8; none under float16
    assert res.stats["unchanged_rate"] == (0.0 if survives else 1.0)
    x, _, _ = d.batch(np.arange(tiny.n), "cpu")
    np.testing.assert_allclose(x.numpy(), tiny.images.float().numpy() / 255, atol=2.5e-4)   # clean rows
    assert res.stats["gradient_steps"] == 3 * tiny.n == res.stats["fresh_steps"]
    assert res.stats["mean_one_minus_ssim"] is not None and res.stats["mean_one_minus_ssim"] >= 0


def test_reuse_auto_decides_from_a_pilot(tmp_path, tiny):
    res = build_adversarial_dataset(tiny, attack=PGD(1.0, 0.5, 2), out_dir=tmp_path / "D", rounds=2, batch_size=3,
                                    reuse="auto", cluster_size=4)
    s = res.stats
    dec = s["reuse_decision"]
    assert dec["pilot_rows"] >= 3 and s["reuse_used"] == dec["use_reuse"]
    assert dec["use_reuse"] == (dec["projected_steps_per_round_with_reuse"]
                                < dec["projected_steps_per_round_without_reuse"])
    assert s["kmeans"]["backend"] == "torch" and s["kmeans"]["feature_size"] == 16
    assert s["gradient_steps"] == s["center_steps"] + s["fresh_steps"] and s["gradient_steps"] > 0
    assert s["attacks_computed"] == s["center_refreshes"] + s["fresh_attacks"]
    assert sum(s["steps_per_round"]) == s["gradient_steps"]
    # the same call on a finished D returns it; the decision is deterministic
    again = build_adversarial_dataset(tiny, attack=PGD(1.0, 0.5, 2), out_dir=tmp_path / "D2", rounds=2,
                                      batch_size=3, reuse="auto", cluster_size=4)
    assert again.stats["reuse_decision"]["use_reuse"] == dec["use_reuse"]
    with pytest.raises(InputError, match="'reuse' parameter"):
        build_adversarial_dataset(tiny, attack=FGSM(eps=0.1), out_dir=tmp_path / "x", reuse="yes")


def test_kmeans_reduced_features_in_chunks(monkeypatch):
    from geoaudit.train import _kmeans

    ims, labs = make_images(n_per_class=23, n_classes=2, size=16, seed=2)
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labs)
    f = _kmeans.features(x, feature_size=4, chunk=7)
    assert f.shape == (46, 3 * 4 * 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1))
    whole = cluster_by_label(x, y, cluster_size=5, backend="torch", feature_size=4)
    monkeypatch.setattr(_kmeans, "CHUNK_ROWS", 5)             # distances in chunks of 5 rows: same answer
    chunked = cluster_by_label(x, y, cluster_size=5, backend="torch", feature_size=4)
    assert torch.equal(whole.assignment, chunked.assignment) and torch.equal(whole.centers, chunked.centers)
    c = cluster_by_label(x, y, backend="auto")
    assert c.backend == "torch" and "clusters" in c.summary() and c.to_dict()["n_examples"] == 46


def test_kmeans_feature_chunk_bounded_by_bytes(monkeypatch):
    from geoaudit.train import _kmeans

    # the default chunk: 512 images of 3 x 224 x 224 float32 (294 MiB), more when smaller
    assert _kmeans.FEATURE_CHUNK_BYTES // (3 * 224 * 224 * 4) == 512
    x = torch.randint(0, 256, (23, 3, 16, 16), dtype=torch.uint8)
    whole = _kmeans.features(x, feature_size=4)
    pools = []
    real = torch.nn.functional.adaptive_avg_pool2d
    monkeypatch.setattr(torch.nn.functional, "adaptive_avg_pool2d", lambda t, s: pools.append(t.shape[0]) or real(t, s))
    monkeypatch.setattr(_kmeans, "FEATURE_CHUNK_BYTES", 5 * 3 * 16 * 16 * 4)  # 5 images' float copy
    chunked = _kmeans.features(x, feature_size=4)
    assert pools == [5, 5, 5, 5, 3] and torch.equal(whole, chunked)
    assert _kmeans.features(x[:0], feature_size=4).shape == (0, 48)


def test_cli_storage_and_reuse_recorded(tmp_path, data_dir, capsys):
    out = tmp_path / "pgd"
    assert main(["train", "--data", str(data_dir), "--augment", "pgd", "--models", "1", "--epochs", "1",
                 "--rounds", "1", "--attack-steps", "1", "--batch-size", "16", "--device", "cpu",
                 "--storage", "uint8", "--reuse", "off", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "uint8" in text and "gradient steps" in text and "reuse off" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["weighted_dataset"]["storage"] == "uint8" and m["weighted_dataset"]["bytes_per_image"] == 3 * 16 * 16
    assert m["settings"]["dro"]["storage"] == "uint8" and m["settings"]["dro"]["reuse"] is False
