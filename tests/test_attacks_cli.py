"""`geoaudit attack` end to end on a tiny dataset folder and checkpoint made in the test."""
import json

import numpy as np
import pytest
import torch

from _attack_models import striped_images
from geoaudit.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import datasets

    from geoaudit.train import build_model, make_config, save_checkpoint

    root = tmp_path_factory.mktemp("attack_cli")
    x, y = striped_images(6, size=32)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["h", "v", "d"])})
    imgs = [(a.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for a in x]
    ds = datasets.Dataset.from_dict({"image": imgs, "label": y.tolist()}, features=feats)
    datasets.DatasetDict({"test": ds}).save_to_disk(str(root / "data"))
    torch.manual_seed(0)
    model, _ = build_model("small_cnn", num_classes=3, in_channels=3, image_size=32)
    save_checkpoint(root / "ckpt", model, make_config(arch="small_cnn", class_names=["h", "v", "d"], in_channels=3,
                                                      image_size=32))
    return root


@pytest.mark.parametrize("method, extra", [
    ("pgd", ["--eps", "0.5", "--steps", "3"]),
    ("perceptual", ["--cost", "ssim", "--steps", "5", "--step-size", "0.5"]),
    ("fgsm", []),
])
def test_attack_cli_writes_outputs(setup, tmp_path, method, extra, capsys):
    out = tmp_path / "out"
    rc = main(["attack", "--model", str(setup / "ckpt"), "--data", str(setup / "data"), "--method", method,
               "--limit", "4", "--device", "cpu", "--out", str(out), "--save-images", *extra])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["n"] == 4 and m["attack"]["method"] == method
    ev = m["evaluation"]
    assert set(ev["distances"]) >= {"l1", "l2", "linf", "ssim"}
    assert "ms_ssim" in ev["unavailable"] and ev["distances"].get("lpips") is None
    assert set(ev["defenses"]) == {"JPEG(quality=75)", "BitDepth(bits=4)"}
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
    saved = torch.load(out / "adversarial.pt")
    assert saved["images"].shape == (4, 3, 32, 32)
    assert len(list((out / "adversarial").glob("*.png"))) == 4


@pytest.mark.parametrize("method, extra", [
    ("pgd", ["--eps", "0.5", "--steps", "3", "--restarts", "2", "--loss", "margin"]),
    ("ddn", ["--steps", "5"]),
])
def test_attack_cli_adaptive(setup, tmp_path, method, extra, capsys):
    out = tmp_path / "out"
    rc = main(["attack", "--model", str(setup / "ckpt"), "--data", str(setup / "data"), "--method", method,
               "--limit", "4", "--device", "cpu", "--out", str(out), "--adaptive", "--lpips", "no", "--dists", "no",
               *extra])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["attack"]["method"] == method
    for d in m["evaluation"]["defenses"].values():
        assert {"oblivious_success_rate", "oblivious_success_rate_undefended_base", "adaptive_success_rate",
                "adaptive_success_rate_undefended_base", "adaptive_robust_accuracy"} <= set(d)
        assert d["eot_samples"] == 1
    assert "adaptive (BPDA)" in capsys.readouterr().out


def test_attack_cli_arch_and_state_dict(setup, tmp_path, capsys):
    import torchvision

    net = torchvision.models.get_model("resnet18", weights=None, num_classes=3)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    rc = main(["attack", "--arch", "resnet18", "--weights", str(tmp_path / "w.pt"), "--data", str(setup / "data"),
               "--image-size", "32", "--method", "fgsm", "--limit", "2", "--device", "cpu", "--out",
               str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["model"]["arch"] == "resnet18"


@pytest.mark.parametrize("args, msg", [
    (["--method", "cw"], "The '--method' parameter of geoaudit attack must be one of"),
    (["--method", "pgd", "--eps", "-1"], "The 'eps' parameter of PGD must be a float in (0, inf)"),
    (["--method", "perceptual", "--steps", "0", "--cost", "ssim"], "The 'steps' parameter of PerceptualDRO"),
    (["--method", "perceptual", "--cost", "pieapp", "--steps", "1"], "at least 64x64 pixels, got 32x32"),
    (["--method", "perceptual", "--cost", "pieapp", "--steps", "1"], "Use --cost ssim for smaller images"),
    (["--method", "perceptual", "--cost", "ssim", "--cost-scale", "loss"], "The 'cost_scale' parameter"),
])
def test_attack_cli_bad_input(setup, tmp_path, capsys, args, msg):
    rc = main(["attack", "--model", str(setup / "ckpt"), "--data", str(setup / "data"), "--limit", "2",
               "--device", "cpu", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and "Traceback" not in err
