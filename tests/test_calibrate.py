"""Attack-budget calibration: distance matrices, the eps rule, the same-class reach check, CLI."""
import json

import numpy as np
import pytest
import torch

from geoaudit._errors import InputError
from geoaudit.calibrate import (
    calibrate_epsilon,
    lpips_available,
    pairwise_lp,
    pairwise_lpips,
    pairwise_ssim_distance,
    sample_per_class,
)


def toy(n_per=5, k=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    # class c: a bright block at a class-specific place, plus noise
    x = torch.rand(n_per * k, 1, size, size, generator=g) * 0.3
    y = torch.arange(k).repeat_interleave(n_per)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 3 * c:3 * c + 4, 2:8] += 0.6
    return x.clamp(0, 1), y


def test_pairwise_norms_match_direct_formulas():
    x, _ = toy()
    f = x.flatten(1)
    torch.testing.assert_close(pairwise_lp(x), (f[:, None] - f[None]).norm(dim=2).fill_diagonal_(0), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(pairwise_lp(x, p=float("inf")), (f[:, None] - f[None]).abs().amax(2))


def test_pairwise_ssim_matches_piq():
    import piq

    x, _ = toy(n_per=3)
    d = pairwise_ssim_distance(x)
    i, j = torch.triu_indices(len(x), len(x), 1)
    ref = 1 - piq.ssim(x[i], x[j], data_range=1.0, reduction="none")
    torch.testing.assert_close(d[i, j], ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(d, d.T) and float(d.diagonal().abs().max()) == 0
    with pytest.raises(InputError, match="at least 11x11"):
        pairwise_ssim_distance(torch.rand(3, 1, 8, 8))


def test_matrices_eps_rule_and_reach_check():
    x, y = toy(n_per=6)
    res = calibrate_epsilon(x, y, norms=["l2", "linf", "ssim"], per_class=None, fraction=0.5)
    assert set(res.norms) == {"l2", "linf", "ssim"} and res.counts == (6, 6, 6)
    for name, nc in res.norms.items():
        m = nc.mean_distance
        d = res.distances[name].double()
        assert m.shape == (3, 3) and np.allclose(m, m.T) and (m >= 0).all()
        for c in range(3):
            idx = torch.nonzero(y == c).flatten()
            sub = d[idx][:, idx]
            # diagonal = mean over distinct same-class pairs
            assert m[c, c] == pytest.approx(float(sub.sum() / (len(idx) * (len(idx) - 1))), rel=1e-6)
            other = torch.nonzero(y != c).flatten()
            nearest = float(d[idx][:, other].min())
            assert nc.nearest_other[c] == pytest.approx(nearest, rel=1e-6)
            assert nc.eps[c] == pytest.approx(0.5 * nearest, rel=1e-6)
            assert nc.eps[c] < nearest  # below the nearest other-class image
            off = ~torch.eye(len(idx), dtype=torch.bool)
            assert nc.same_class_reach[c] == pytest.approx(float(((sub <= nc.eps[c]) & off).sum()) / off.sum().item())
        assert nc.global_eps == pytest.approx(nc.eps.min())
    # the toy classes are well separated under L2: within-class means under between-class means
    l2 = res.norms["l2"].mean_distance
    assert all(l2[c, c] < l2[c, b] for c in range(3) for b in range(3) if b != c)
    mean_ref = calibrate_epsilon(x, y, norms="l2", per_class=None, fraction=0.25, reference="mean")
    nc = mean_ref.norms["l2"]
    assert np.allclose(nc.eps, 0.25 * nc.mean_other)
    # reach_fraction at a huge eps: every same-class pair is reachable
    assert np.allclose(res.reach_fraction("linf", 1.0), 1.0)
    d = res.to_dict()
    json.dumps(d)
    assert d["norms"]["l2"]["per_class"][0]["eps"] == pytest.approx(float(res.norms["l2"].eps[0]))


def test_sampling_and_bad_inputs():
    x, y = toy(n_per=6)
    idx = sample_per_class(y, 4, random_state=1)
    assert torch.bincount(y[idx]).tolist() == [4, 4, 4]
    assert torch.equal(idx, sample_per_class(y, 4, random_state=1))
    with pytest.raises(InputError, match="norms"):
        calibrate_epsilon(x, y, norms=["l3"])
    with pytest.raises(InputError, match="fraction"):
        calibrate_epsilon(x, y, fraction=0.0)
    with pytest.raises(InputError, match="at least 2 images"):
        calibrate_epsilon(x[:13], y[:13], norms="l2", per_class=None)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # from lpips' torchvision call
def test_lpips_marked_unavailable_without_weights_and_pairwise_matches_direct_calls():
    x, y = toy(n_per=2, size=32)
    ok, why = lpips_available()
    res = calibrate_epsilon(x, y, norms="l2,lpips", per_class=None)
    if not ok:
        assert "lpips" in res.unavailable and "lpips" not in res.norms and why
    import lpips

    # a randomly initialised backbone needs no download; the vectorised loop must match pair calls
    model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    d = pairwise_lpips(x, model=model, batch_pairs=4)
    with torch.no_grad():
        direct = model(x[0:1].repeat(1, 3, 1, 1) * 2 - 1, x[3:4].repeat(1, 3, 1, 1) * 2 - 1).flatten()
    assert float(d[0, 3]) == pytest.approx(float(direct), rel=1e-4, abs=1e-6)
    assert torch.equal(d, d.T)


def _folder(tmp_path, n_per=4, size=12):
    import datasets
    from PIL import Image

    x, y = toy(n_per=n_per, size=size)
    imgs = [Image.fromarray((im[0].numpy() * 255).astype("uint8"), mode="L") for im in x]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"image": imgs, "label": y.tolist()}, features=feats)
    path = tmp_path / "data"
    datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
    return path


def test_cli_calibrate(tmp_path, capsys):
    from geoaudit.cli import main

    data = _folder(tmp_path)
    out = tmp_path / "cal"
    rc = main(["calibrate", "--data", str(data), "--per-class", "3", "--norms", "l2,linf,ssim",
               "--fraction", "0.4", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "calibration.json").read_text())
    assert res["class_names"] == ["a", "b", "c"] and res["per_class_counts"] == [3, 3, 3]
    assert set(res["norms"]) == {"l2", "linf", "ssim"} and res["fraction"] == 0.4
    for n in ("l2", "linf", "ssim"):
        assert (out / f"heatmap_{n}.png").stat().st_size > 1000
    assert "suggested" not in capsys.readouterr().err


def test_cli_calibrate_bad_inputs(tmp_path, capsys):
    from geoaudit.cli import main

    data = _folder(tmp_path)
    out = str(tmp_path / "o")
    assert main(["calibrate", "--data", str(data), "--norms", "l2,cosine", "--out", out]) == 2
    assert "'norms' parameter" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(data), "--fraction", "0", "--out", out]) == 2
    assert main(["calibrate", "--data", str(data), "--per-class", "1", "--out", out]) == 2
    assert main(["calibrate", "--data", str(data), "--split", "test", "--out", out]) == 2
    assert "no split 'test'" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(tmp_path / "nope"), "--out", out]) == 2
    assert main(["calibrate", "--data", str(data), "--norms", "ssim", "--image-size", "8", "--out", out]) == 2
    assert "at least 11x11" in capsys.readouterr().err
