"""docs/reproduce.md: every `bash` command in it runs, with the stand-in values of its `text`
block (tiny GeoShapes, scikit-learn digits, a ResNet-18 state dict of random weights written
here in torchvision's format); plus the flags the guide relies on (--split all, --init-from,
--pretrained without a silent fallback, the perceptual-only flags under pgd, LPIPS weights from
an environment variable)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "reproduce.md"


def guide_blocks(kind):
    text = GUIDE.read_text(encoding="utf-8")
    return [b for b in re.findall(rf"```{kind}\n(.*?)```", text, flags=re.DOTALL)]


def guide_commands():
    cmds = []
    for block in guide_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                cmds.append(line.strip())
    return cmds


def standin_env():
    (block,) = guide_blocks("text")
    env = {}
    for token in shlex.split(block):
        key, _, value = token.partition("=")
        env[key] = value
    return env


def test_guide_lists_every_experiment():
    text = GUIDE.read_text(encoding="utf-8")
    for item in ("Table 1", "figure 8a", "figure 8b", "table 6", "Table 3", "table 4", "Figure 7",
                 "Figures 3 and 9", "Table 2", "Figure 13", "Figure 2 and tables 1-4", "Figure 3", "figure 4",
                 "figure 5", "Seed 003", "T1", "T2", "per-example step", "GEOAUDIT_LPIPS_WEIGHTS",
                 "GEOAUDIT_DISTS_WEIGHTS", "GEOAUDIT_PIEAPP_WEIGHTS", "EGNet", "IMAGENET1K_V1"):
        assert item in text, item
    env = standin_env()
    # every variable a command uses has a stand-in value
    used = set(re.findall(r"\$([A-Z_0-9]+)", " ".join(guide_commands())))
    assert used <= set(env), used - set(env)


@pytest.mark.slow
def test_every_guide_command_runs_on_the_standins(tmp_path, monkeypatch, capsys):
    import torchvision

    env = standin_env()
    monkeypatch.chdir(tmp_path)
    for name in ("docs", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    torch.manual_seed(0)
    # random weights in the format of torchvision's ResNet state dicts: formats and flags, not numbers
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / env["THETA0"])
    _digits_folder(tmp_path / env["MNIST_DIR"])
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    failed = []
    for cmd in guide_commands():
        argv = shlex.split(os.path.expandvars(cmd))
        if argv[0] == "geoaudit":
            rc = main(["--threads", "1", *argv[1:]]) if argv[1] != "dataset" else main(argv[1:])
            out = capsys.readouterr()
            if rc != 0:
                failed.append(f"{cmd}\n{out.err[-1000:]}")
        else:
            assert argv[0] == "python", cmd
            r = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, check=False,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=900)
            if r.returncode != 0 or "| 50% | geoaudit perceptual |" not in r.stdout:
                failed.append(f"{cmd}\n{r.stderr[-1000:]}")
    assert not failed, "\n\n".join(failed)
    # what the guide promises the runs record
    cfg = json.loads((tmp_path / "runs/perceptual/model_001/config.json").read_text())
    init = cfg["training"]["init"]
    assert init["kind"] == "pretrained" and init["source"].startswith("file:") and len(init["sha256"]) == 64
    assert "fc.weight" in init["drawn_per_seed"]  # 1000-class head redrawn for 4 classes
    ck = json.loads((tmp_path / "runs/plain_from_ckpt/model_000/config.json").read_text())
    assert ck["training"]["init"]["kind"] == "init_from" and ck["training"]["init"]["drawn_per_seed"] == []
    faithful = json.loads((tmp_path / "defend/mlp7_faithful/centroid_eval.json").read_text())
    assert faithful["defense"]["tie_break"] == "first" and len(faithful["defense"]["layers"]) == 7
    lenet = json.loads((tmp_path / "defend/lenet5_faithful/centroid_eval.json").read_text())
    assert len(lenet["defense"]["layers"]) == 5
    assert (tmp_path / "audit/theta0/report.json").exists()


def _digits_folder(path):
    """scikit-learn's digits as a dataset folder (save_to_disk, columns image and label): the
    stand-in for MNIST saved with ``datasets``."""
    import datasets
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = [Image.fromarray((x * 255 / 16).astype(np.uint8)) for x in d.images[:200]]
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    ds = datasets.Dataset.from_dict({"image": imgs, "label": d.target[:200].tolist()}, features=feats)
    datasets.DatasetDict({"test": ds}).save_to_disk(str(path))


# ---------------------------------------------------------------------------- the flags themselves
@pytest.fixture(scope="module")
def tiny_gs(tmp_path_factory):
    out = tmp_path_factory.mktemp("gs") / "gs"
    assert main(["dataset", "build", "geoshapes", "--out", str(out), "--n-images", "240", "--image-size", "24",
                 "--n-classes", "3", "--n-audit-countries", "3", "--min-test-images", "5"]) == 0
    return out


def test_audit_split_all_pools_splits(tmp_path, tiny_gs, capsys):
    import datasets

    from geoaudit.commands.audit import _load_splits

    dd = datasets.load_dataset(str(tiny_gs))
    total = sum(len(dd[s]) for s in dd)
    assert len(_load_splits(tiny_gs, "all", required=("image",))) == total
    assert len(_load_splits(tiny_gs, "train,test", required=("image",))) == len(dd["train"]) + len(dd["test"])
    assert len(_load_splits(tiny_gs, "test", required=("image",))) == len(dd["test"])
    with pytest.raises(InputError, match="no split 'nope'"):
        _load_splits(tiny_gs, "train,nope", required=("image",))


def test_init_from_gives_every_member_the_same_theta0(tmp_path, tiny_gs):
    from geoaudit.train import train_population
    from geoaudit.train._init import INIT_FILE
    from geoaudit.train._sample import make_model

    first = train_population(tiny_gs, n_models=1, epochs=1, out_dir=tmp_path / "theta")
    theta0 = first.checkpoints[0] if hasattr(first, "checkpoints") else tmp_path / "theta" / "model_000"
    pop = tmp_path / "pop"
    from geoaudit.train._init import resolve_initial_weights

    spec = resolve_initial_weights("small_cnn", init_from=tmp_path / "theta" / "model_000", num_classes=3,
                                   in_channels=3, image_size=24, out_dir=pop)
    spec = dict(spec, file=str(pop / INIT_FILE))
    a, _, _ = make_model("small_cnn", seed=1, num_classes=3, in_channels=3, image_size=24, pretrained=spec)
    b, _, _ = make_model("small_cnn", seed=2, num_classes=3, in_channels=3, image_size=24, pretrained=spec)
    c, _, _ = make_model("small_cnn", seed=1, num_classes=3, in_channels=3, image_size=24)
    c2, _, _ = make_model("small_cnn", seed=2, num_classes=3, in_channels=3, image_size=24)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # one theta0, whatever the seed
    assert not all(torch.equal(c.state_dict()[k], c2.state_dict()[k]) for k in c.state_dict())  # per seed
    del theta0
    with pytest.raises(InputError, match="does not fit"):
        resolve_initial_weights("lenet5", init_from=tmp_path / "theta" / "model_000", num_classes=3,
                                in_channels=3, image_size=24, out_dir=tmp_path / "x")


def test_missing_pretrained_weights_are_an_error(tmp_path, tiny_gs, monkeypatch, capsys):
    from geoaudit.train._init import resolve_initial_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    torch.hub.set_dir(str(tmp_path / "empty_hub" / "hub"))
    try:
        with pytest.raises(DependencyError, match="not in torch's cache"):
            resolve_initial_weights("resnet18", pretrained="IMAGENET1K_V1", num_classes=3, in_channels=3,
                                    image_size=32, out_dir=tmp_path / "o")
        with pytest.raises(InputError, match="no torchvision weights 'V3'"):
            resolve_initial_weights("resnet18", pretrained="V3", num_classes=3, in_channels=3, image_size=32,
                                    out_dir=tmp_path / "o")
        rc = main(["train", "--data", str(tiny_gs), "--arch", "resnet18", "--pretrained", "--models", "1",
                   "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "p")])
        assert rc == 2 and "not in torch's cache" in capsys.readouterr().err
        assert not (tmp_path / "p" / "model_000").exists()
    finally:
        torch.hub.set_dir(str(Path(os.environ.get("TORCH_HOME", "~/.cache/torch")).expanduser() / "hub"))
    with pytest.raises(InputError, match="Pretrained weights by name exist for resnet18 and resnet50"):
        resolve_initial_weights("small_cnn", pretrained=True, num_classes=3, in_channels=3, image_size=32,
                                out_dir=tmp_path / "o")
    with pytest.raises(InputError, match="not both"):
        resolve_initial_weights("small_cnn", pretrained=True, init_from="x", num_classes=3, in_channels=3,
                                image_size=32, out_dir=tmp_path / "o")


def test_perceptual_only_flags_are_noted_under_pgd(tmp_path, capsys):
    from argparse import Namespace

    from geoaudit.commands.train import _attack_params

    args = Namespace(augment="pgd", eps=None, norm=None, step_size=None, attack_steps=3, cost="pieapp", lam=None,
                     confidence=None, pieapp_weights="PieAPP.pth")
    assert _attack_params(args) == {"steps": 3}
    assert "--cost, --pieapp-weights apply to --augment perceptual only" in capsys.readouterr().out
    weights = tmp_path / "pieapp.pth"
    weights.write_bytes(b"x")
    args = Namespace(augment="perceptual", eps=None, norm=None, step_size=None, attack_steps=None, cost="pieapp",
                     lam=None, confidence=None, pieapp_weights=str(weights))
    assert _attack_params(args)["pieapp_weights"] == str(weights)
    args.pieapp_weights = str(tmp_path / "missing.pth")
    with pytest.raises(InputError, match="--pieapp-weights .* is not a file"):
        _attack_params(args)


def test_lpips_weights_from_the_environment(tmp_path, monkeypatch):
    import torchvision

    from geoaudit.attacks._evaluate import _build_metric
    from geoaudit.attacks._metric_weights import env_weight_files

    torch.manual_seed(0)
    f = tmp_path / "alexnet_random.pth"  # random AlexNet weights in torchvision's format
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), f)
    hub = torch.hub.get_dir()
    monkeypatch.setenv("GEOAUDIT_LPIPS_WEIGHTS", str(f))
    net, reason = _build_metric("lpips", "auto")
    assert reason is None and net is not None and torch.hub.get_dir() == hub
    w = net.net.slice1[0].weight  # the backbone's first conv came from the file
    assert torch.equal(w, torch.load(f)["features.0.weight"])
    x = torch.rand(2, 3, 32, 32)
    assert float(net(x * 2 - 1, x * 2 - 1).abs().max()) < 1e-6
    monkeypatch.setenv("GEOAUDIT_DISTS_WEIGHTS", str(tmp_path))
    assert set(env_weight_files("dists", ("vgg16-397923af.pth", "dists_weights.pt"))) == {
        "vgg16-397923af.pth", "dists_weights.pt"}
    net, reason = _build_metric("dists", "auto")
    assert net is None and "vgg16-397923af.pth" in reason
    monkeypatch.setenv("GEOAUDIT_DISTS_WEIGHTS", str(f))
    with pytest.raises(InputError, match="GEOAUDIT_DISTS_WEIGHTS"):
        env_weight_files("dists", ("vgg16-397923af.pth", "dists_weights.pt"))
