"""Bad inputs, one row per case: the input, what must happen, and that nothing was written or lost.

Each row of ``CASES`` is run by ``test_bad_input``.  A command-line case gives ``argv`` for
``geoaudit.cli.main`` and expects an exit code (2 for a user error: one line on stderr, no
traceback, no "internal error"); a Python case gives a call and expects an exception type.  The
message must contain ``fragment``.  Before the call the case's folder is snapshot (every file and
its bytes); after a refusal the folder must be exactly as it was: nothing written, nothing lost.
Cases that must succeed (``expect=0`` or ``expect=None``) run their own ``check`` instead.

The count of rows is reported in docs/bad_inputs.md; add a row for every new bad input found.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaudit._errors import DependencyError, InputError
from geoaudit.audit import audit_predictions, compare_populations, find_checkpoints, predict
from geoaudit.cli import main
from geoaudit.models import load_model

ROOT = Path(__file__).resolve().parents[1]
COLS = ["--group", "country_iso3", "--covariate", "gdp_per_capita_usd"]


# --- tiny inputs, made once per session ---------------------------------------------------------
def _make_predictions():
    spec = importlib.util.spec_from_file_location("make_predictions", ROOT / "examples" / "make_predictions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_predictions(n_countries=14, n_models=3, slope=0.3, seed=5)


def _geo_dataset(path, n=16, size=8):
    """Parquet shards data/{train,test}-00000-of-00001.parquet; each country leans to its own class,
    so even a constant classifier has accuracies that differ by country."""
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                               "image_id": datasets.Value("string"), "country_iso3": datasets.Value("string"),
                               "gdp_per_capita_usd": datasets.Value("float64")})
    rng = np.random.default_rng(0)
    (path / "data").mkdir(parents=True)
    for split in ("train", "test"):
        rows = {k: [] for k in feats}
        for k, (iso, gdp) in enumerate((("USA", 80000.0), ("BRA", 9000.0), ("IND", 2400.0), ("DEU", 52000.0))):
            for i in range(n):
                rows["image"].append(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
                rows["label"].append(k % 3 if i < n * (0.3 + 0.15 * k) else (k + 1) % 3)
                rows["image_id"].append(f"{split}_{iso}{i}")
                rows["country_iso3"].append(iso)
                rows["gdp_per_capita_usd"].append(gdp)
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(path / "data" / f"{split}-00000-of-00001.parquet"))
    return path


def _save_models(root, n=2):
    import torch

    from geoaudit.models import build_model, make_config, save_checkpoint

    for s in range(n):
        torch.manual_seed(s)
        m, _ = build_model("mlp7", num_classes=3, in_channels=3, image_size=8)
        save_checkpoint(root / f"model_{s:03d}", m, make_config(arch="mlp7", class_names=["a", "b", "c"],
                                                                in_channels=3, image_size=8,
                                                                training={"seed": s, "method": "plain"}))
    return root


def _jpeg_tree(root, n_per_class=3, wnids=("n01440764", "n01443537")):
    from PIL import Image

    ids = []
    for w in wnids:
        (root / w).mkdir(parents=True)
        for k in range(n_per_class):
            iid = f"{w}_{k + 1}"
            Image.fromarray(np.full((6, 6, 3), 20 * k + 5, np.uint8)).save(root / w / f"{iid}.JPEG", format="JPEG")
            ids.append(iid)
    return ids


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """Shared read-only inputs: predictions, a Parquet geo dataset, two checkpoints, an ImageNet tree."""
    root = tmp_path_factory.mktemp("bad_inputs")
    preds = _make_predictions()
    preds.to_csv(root / "preds.csv", index=False)
    _geo_dataset(root / "geo")
    _save_models(root / "models")
    ids = _jpeg_tree(root / "train")
    return {"root": root, "preds": preds, "csv": root / "preds.csv", "geo": root / "geo",
            "models": root / "models", "tree": root / "train", "ids": ids}


# --- the case table ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    problem: str                     # what went wrong before
    make: Callable                   # make(ctx) -> argv (list, CLI) or a zero-argument call (API)
    expect: object                   # exit code (int) or exception type; 0 / None: must succeed
    fragment: str                    # in the one error line (or in stdout when it succeeds)
    area: str                        # the part of geoaudit that refuses it, for docs/bad_inputs.md
    check: Callable | None = None  # check(ctx, result) for cases that succeed
    open_for: str = ""               # still wrong: runs as a strict xfail until its owner fixes it
    slow: bool = False               # over ~10 s on a loaded machine

    @property
    def interface(self):
        return "api" if isinstance(self.expect, type) or self.expect is None else "cli"


class Ctx:
    def __init__(self, tmp, fx, monkeypatch):
        self.tmp, self.fx, self.mp = tmp, fx, monkeypatch
        self.out = tmp / "out"

    def copy(self, key, name=None):
        import shutil

        dst = self.tmp / (name or key)
        shutil.copytree(self.fx[key], dst)
        return dst

    def unrelated(self, name="mine"):
        """A folder holding someone's work, which no command may delete."""
        d = self.tmp / name
        (d / "sub").mkdir(parents=True)
        (d / "thesis.txt").write_text("three years of work")
        (d / "sub" / "notes.txt").write_text("more")
        return d

    def geo_csv(self, rows, name="locations.csv"):
        p = self.tmp / name
        p.write_text("image_id,latitude,longitude\n" + "".join(f"{i},{a},{b}\n" for i, a, b in rows))
        return p


def _snapshot(folder):
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _shard(folder, split):
    return folder / "data" / f"{split}-00000-of-00001.parquet"


def _damage_image(shard, row=3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(shard)
    imgs = t.column("image").to_pylist()
    imgs[row] = {"bytes": b"not an image", "path": None}
    pq.write_table(t.set_column(t.schema.get_field_index("image"), "image",
                                pa.array(imgs, type=t.schema.field("image").type)), shard)


def _unlabel(shard, row=2):
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(shard)
    labels = t.column("label").to_pylist()
    labels[row] = -1
    pq.write_table(t.set_column(t.schema.get_field_index("label"), "label",
                                pa.array(labels, type=t.schema.field("label").type)), shard)


def _truncate(path, keep=300):
    path.write_bytes(path.read_bytes()[:keep])


def _audit_models(ctx, data, models=None, *extra):
    return ["audit", "--models", str(models or ctx.fx["models"]), "--data", str(data), "--split", "test", *COLS,
            "--min-group-size", "5", "--device", "cpu", "--out", str(ctx.out), *extra]


def _train_population(*args, **kwargs):
    from geoaudit.train import train_population

    return train_population(*args, **kwargs)


def _train(ctx, data, *extra):
    return ["train", "--data", str(data), "--models", "1", "--epochs", "1", "--arch", "mlp7", "--image-size", "8",
            "--batch-size", "16", "--device", "cpu", "--out", str(ctx.out), *extra]


def _report(ctx, name, betas):
    p = ctx.tmp / name / "report.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"format": "geoaudit-audit-report", "format_version": 2,
                             "settings": {"group": "country_iso3", "covariate": "gdp", "log_covariate": True},
                             "models": [{"model": m, "beta": b, "pvalue": 0.5, "fvalue": 1.0, "bse": 0.01,
                                         "tvalue": 1.0} for m, b in betas]}))
    return p


def _csv_of(ctx, frame, name="p.csv"):
    p = ctx.tmp / name
    frame.to_csv(p, index=False)
    return p


def _imagenet_geo(ctx, out, csv=None, *extra):
    csv = csv or ctx.geo_csv([(i, 48.8566, 2.3522) for i in ctx.fx["ids"]])
    return ["dataset", "build", "imagenet-geo", "--imagenet-dir", str(ctx.fx["tree"]), "--geo-csv", str(csv),
            "--offline", "--out", str(out), *extra]


def _build_imagenet_geo(ctx, csv):
    from geoaudit.data import build_imagenet_geo

    return lambda: build_imagenet_geo(ctx.out, imagenet_dir=ctx.fx["tree"], geo_csv=csv, offline=True)


def _geoshapes(out, *extra):
    return ["dataset", "build", "geoshapes", "--out", str(out), "--n-images", "300", "--image-size", "24",
            "--n-classes", "2", "--n-audit-countries", "2", "--min-test-images", "5", *extra]


def _chdir(ctx, sub="work"):
    d = ctx.tmp / sub
    d.mkdir(exist_ok=True)
    ctx.mp.chdir(d)
    return d


def _dup_rows(ctx):
    df = ctx.fx["preds"]
    return pd.concat([df, df.iloc[:5]], ignore_index=True)


def _same_name(ctx):
    df = ctx.fx["preds"]
    one = df[df["model"] == df["model"].iloc[0]]
    return pd.concat([one, one.assign(prediction=(one["prediction"] + 1) % 10)], ignore_index=True)


def _partly_missing(ctx):
    df = ctx.fx["preds"].copy()
    countries = sorted(df["country_iso3"].unique())
    df.loc[df["country_iso3"] == countries[0], "gdp_per_capita_usd"] = np.nan
    df.loc[df.index[df["country_iso3"] == countries[1]][:3], "gdp_per_capita_usd"] = np.nan
    return df


def _covariate_of_first(ctx, value):
    df = ctx.fx["preds"].copy()
    df.loc[df["country_iso3"] == df["country_iso3"].min(), "gdp_per_capita_usd"] = value
    return df


def _normalized_model():
    import torch

    from geoaudit.models import NormalizedModel

    torch.manual_seed(0)
    return NormalizedModel(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.AdaptiveAvgPool2d(1),
                                               torch.nn.Flatten()), [0.5] * 3, [0.25] * 3)


def _rand(*shape):
    import torch

    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def _predict_grey(ctx):
    import torch

    from geoaudit.audit import predict

    return lambda: predict(_normalized_model(), torch.rand(4, 1, 8, 8), device="cpu")


def _attack_grey(ctx):
    import torch

    from geoaudit.attacks import make_attack

    return lambda: make_attack("pgd", eps=0.1, step_size=0.05, steps=2)(_normalized_model(), torch.rand(4, 1, 8, 8),
                                                        torch.zeros(4, dtype=torch.long))


def _interrupt(ctx, module):
    import importlib

    def interrupted(args):
        raise KeyboardInterrupt

    ctx.mp.setattr(importlib.import_module(f"geoaudit.commands.{module}"), "run", interrupted)


def _ctrl_c(module, argv):
    def make(ctx):
        _interrupt(ctx, module)
        return argv(ctx)
    return make


def _mnist_offline(ctx):
    import torchvision

    from geoaudit.data import load_split

    class Offline:
        def __init__(self, root, train, download):
            (ctx.tmp / "root" / "sub" / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    ctx.mp.setattr(torchvision.datasets, "MNIST", Offline)
    return lambda: load_split("mnist", "test", data_root=ctx.tmp / "root" / "sub")


def _train_resume_damaged(ctx):
    assert main(_train(ctx, ctx.fx["geo"], "--models", "2")) == 0
    w = ctx.out / "model_001" / "weights.pt"
    ctx.good = w.read_bytes()
    w.write_bytes(ctx.good[: len(ctx.good) // 2])
    return _train(ctx, ctx.fx["geo"], "--models", "2")


def _check_retrained(ctx, result):
    assert (ctx.out / "model_001" / "weights.pt").read_bytes() == ctx.good
    assert "trained 1 this run" in result


def _check_split_audited(ctx, result):
    assert len(json.loads((ctx.out / "report.json").read_text())["models"]) == 2
    assert len(pd.read_parquet(ctx.out / "predictions.parquet")) == 2 * 64  # the whole test split, twice


def _check_namibia(ctx, result):
    assert "NA" in result.groups["group"].tolist()


def _check_text_labels(ctx, result):
    assert result["accuracy"].tolist() == [1.0, 1.0, 1.0]


def _check_mode(ctx, result):
    assert (ctx.tmp / "a.txt").stat().st_mode & 0o777 == 0o666 & ~ctx.umask


def _atomic_write(ctx):
    from geoaudit._io import atomic_write_text

    ctx.umask = os.umask(0o022)
    os.umask(ctx.umask)
    return lambda: atomic_write_text(ctx.tmp / "a.txt", "x")


def _assert(ok):
    assert ok


def _checkpoint_folder(ctx):
    ctx.umask = os.umask(0o022)
    os.umask(ctx.umask)
    return lambda: _save_models(ctx.tmp / "models", 1)


def _check_dir_mode(ctx, result):
    assert (ctx.tmp / "models" / "model_000").stat().st_mode & 0o777 == 0o777 & ~ctx.umask


def _two_d_betas(ctx):
    from geoaudit.audit import compare_populations

    return lambda: compare_populations(np.full((2, 3), 0.1) + np.arange(6).reshape(2, 3) * 0.01,
                                       [0.2, 0.21, 0.22])


def _gls(correct=None, n=None):
    from geoaudit.audit import gls_test

    d = {"accuracy": [0.5, 0.6, 0.55, 0.7, 0.72], "covariate": [1e3, 2e3, 5e3, 1e4, 3e4], "n": n or [60] * 5,
         "correct": correct or [30, 36, 33, 42, 10], "group": list("ABCDE")}
    return lambda ctx: (lambda: gls_test(d))


def _api(fn):
    """A case's ``make`` for a plain library call that needs no folder."""
    return lambda ctx: fn


def _group_accuracy(labels, preds):
    from geoaudit.audit import group_accuracy

    return lambda ctx: (lambda: group_accuracy(labels, preds, ["A", "B", "C"] * (len(labels) // 3)))


def _orphan_models(ctx):
    d = ctx.copy("models")
    (d / "model_001" / "config.json").unlink()
    return d


def _damaged(split, damage, argv):
    """make(ctx): a copy of the geo dataset with its ``split`` shard damaged, then ``argv(ctx, copy)``."""
    def make(ctx):
        d = ctx.copy("geo")
        damage(_shard(d, split))
        return argv(ctx, d)
    return make


def _info(*extra):
    return lambda ctx, d: ["dataset", "info", str(d), *extra]


def _load_truncated(ctx):
    d = ctx.copy("models")
    _truncate(d / "model_000" / "weights.pt", 1000)
    return lambda: load_model(d / "model_000")


def _audit_dup_rows(ctx):
    df = _dup_rows(ctx)
    return lambda: audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", min_group_size=20)


def _find_orphans(ctx):
    d = _orphan_models(ctx)
    return lambda: find_checkpoints(d)


def _namibia(ctx):
    df = ctx.fx["preds"].rename(columns={"country_iso3": "country", "gdp_per_capita_usd": "gdp"})
    df["country"] = df["country"].replace({df["country"].min(): "NA"})
    p = _csv_of(ctx, df)
    return lambda: audit_predictions(p, group="country", covariate="gdp", min_group_size=20)


def _flickr_on_command_line(ctx):
    urls = ctx.tmp / "urls.txt"
    urls.write_text(f"{ctx.fx['ids'][0]}\thttp://farm1.static.flickr.com/1/11_ab.jpg\n")
    return ["dataset", "build", "imagenet-geo", "--imagenet-dir", str(ctx.fx["tree"]), "--urls", str(urls),
            "--flickr-key", "k", "--flickr-secret", "s", "--offline", "--flickr-rest-url", "http://127.0.0.1:9/",
            "--flickr-cache", str(ctx.tmp / "cache.sqlite"), "--out", str(ctx.unrelated())]


def _imagenet_geo_work_dir_unrelated(ctx):
    from geoaudit.data import build_imagenet_geo

    csv, work = ctx.geo_csv([(i, 48.8566, 2.3522) for i in ctx.fx["ids"]]), ctx.unrelated("work")
    return lambda: build_imagenet_geo(ctx.out, imagenet_dir=ctx.fx["tree"], geo_csv=csv, offline=True, work_dir=work)


def _timm_on_bad_image(ctx):
    timm = pytest.importorskip("timm")
    import torch

    from geoaudit.audit import predict_topk
    from geoaudit.data import load_geo_dataset
    from geoaudit.models import load_external

    d = ctx.copy("geo")
    _damage_image(_shard(d, "test"))
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), ctx.tmp / "w.pth")
    model = load_external("timm:test_resnet", weights=ctx.tmp / "w.pth")
    ds = load_geo_dataset(d, "test")
    return lambda: predict_topk(model, ds, k=1, batch_size=8)


def _run_demo_into_unrelated_data(ctx):
    from geoaudit.demo import run_demo

    ctx.unrelated("out/data")
    return lambda: run_demo(ctx.out, quick=True, device="cpu")


def _build_geoshapes_into_unrelated(ctx):
    from geoaudit.data import build_geoshapes

    ctx.unrelated("out")
    return lambda: build_geoshapes(ctx.out, n_images=300, image_size=24, n_classes=2, n_audit_countries=2,
                                   min_test_images=5)


CASES = [
    # ---- data loss ----
    Case("geoshapes-out-unrelated-folder", "dataset build geoshapes --out DIR deletes an unrelated DIR",
         lambda c: _geoshapes(c.unrelated()), 2, "not empty and is not an output of geoaudit", "output folders"),
    Case("geoshapes-out-current-folder", "--out . fails only by luck",
         lambda c: (_chdir(c), _geoshapes("."))[1], 2, "is the current folder", "output folders"),
    Case("geoshapes-out-parent-folder", "--out .. fails only by luck",
         lambda c: (_chdir(c), _geoshapes(".."))[1], 2, "is the current folder, one of its parents", "output folders"),
    Case("geoshapes-out-file", "--out names a file", lambda c: (c.unrelated(), _geoshapes(c.tmp / "mine" /
                                                                                          "thesis.txt"))[1],
         2, "is a file", "output folders"),
    Case("imagenet-geo-out-unrelated-folder", "dataset build imagenet-geo --out DIR deletes an unrelated DIR",
         lambda c: _imagenet_geo(c, c.unrelated()), 2, "pass --overwrite", "dataset builds"),
    Case("imagenet-geo-out-current-folder", "--out . fails only by luck",
         lambda c: (_chdir(c), _imagenet_geo(c, "."))[1], 2, "is the current folder", "dataset builds"),
    Case("imagenet-geo-out-unrelated-folder-api", "build_imagenet_geo replaces an unrelated folder",
         lambda c: (c.unrelated("out"), _build_imagenet_geo(c, c.geo_csv([(i, 48.8566, 2.3522)
                                                                          for i in c.fx["ids"]])))[1],
         InputError, "not empty and is not an output of geoaudit", "dataset builds"),
    Case("train-resume-truncated-weights", "train resume counts a truncated weights.pt as done",
         _train_resume_damaged, 0, "model_001: trained again", "checkpoints", check=_check_retrained, slow=True),
    Case("load-model-truncated-weights", "a truncated weights.pt loads or fails later",
         _load_truncated,
         InputError, "sha256 does not match", "checkpoints"),
    # ---- silent wrong answers ----
    Case("audit-duplicate-rows", "duplicate prediction rows are counted again",
         lambda c: ["audit", str(_csv_of(c, _dup_rows(c))), *COLS, "--min-group-size", "20", "--out", str(c.out)],
         2, "5 row(s) repeat an 'image_id'", "audit"),
    Case("audit-duplicate-rows-api", "duplicate prediction rows are counted again",
         _audit_dup_rows,
         InputError, "repeat an 'image_id'", "audit"),
    Case("audit-two-models-one-name", "two models with one name are merged",
         lambda c: ["audit", str(_csv_of(c, _same_name(c))), *COLS, "--min-group-size", "20", "--out", str(c.out)],
         2, "check that two models do not share a name", "audit"),
    Case("compare-duplicate-model-names", "a report.json with two models of one name loses a beta",
         lambda c: ["compare", str(_report(c, "a", [("m", 0.1), ("m", 0.2), ("k", 0.3)])),
                    str(_report(c, "b", [("x", 0.1), ("y", 0.2)])), "--out", str(c.out / "c.json")],
         2, "more than once", "compare"),
    Case("compare-constant-betas-rounding", "constant betas up to rounding give t = -4.6e15",
         lambda c: ["compare", str(_report(c, "a", [("s0", 0.1), ("s1", 0.1), ("s2", 0.1 + 1e-17)])),
                    str(_report(c, "b", [("t0", 0.2), ("t1", 0.2), ("t2", 0.2)])), "--test", "welch",
                    "--out", str(c.out / "c.json")],
         2, "constant within each population", "compare"),
    Case("compare-populations-constant-api", "compare_populations([0.1]*3, [0.2]*3) rejects H0",
         _api(lambda: compare_populations([0.1] * 3, [0.2] * 3)),
         InputError, "constant within each population", "compare"),
    Case("compare-populations-2d-betas", "2-D betas are flattened", _two_d_betas, InputError, "must be one beta per model (1-D); got shape (2, 3)", "compare"),
    Case("drop-missing-covariate-message", "--drop-missing-covariate says a partly-missing group was left out",
         lambda c: ["audit", str(_csv_of(c, _partly_missing(c))), *COLS, "--min-group-size", "20",
                    "--drop-missing-covariate", "--out", str(c.out)],
         0, "groups kept with their other rows", "audit", slow=True),
    Case("audit-models-folder-without-config", "audit --models skips a checkpoint without config.json",
         lambda c: _audit_models(c, c.fx["geo"], _orphan_models(c)), 2, "hold weights.pt but no config.json",
         "models"),
    Case("find-checkpoints-without-config-api", "the population shrinks without a word",
         _find_orphans, InputError, "1 of 2 checkpoint folders", "models"),
    Case("demo-pieapp-weights-missing", "demo --pieapp-weights /nonexistent.pth exits 0 using SSIM",
         lambda c: ["demo", "--quick", "--out", str(c.out), "--device", "cpu", "--pieapp-weights",
                    str(c.tmp / "nonexistent.pth")], 2, "does not exist", "CLI and demo"),
    Case("demo-check-models-below-two", "demo --check-models 1: a paired t-test needs two pairs",
         lambda c: ["demo", "--check-models", "1", "--out", str(c.out), "--device", "cpu"], 2,
         "'check_models'", "CLI and demo"),
    Case("geo-csv-duplicate-id-two-places", "a geo CSV image_id at two places resolves last-wins",
         lambda c: _imagenet_geo(c, c.out, c.geo_csv([(i, 48.8566, 2.3522) for i in c.fx["ids"]]
                                                      + [(c.fx["ids"][0], 52.52, 13.405)])),
         2, "at two different places", "geo CSV"),
    Case("geo-csv-duplicate-id-two-places-api", "a geo CSV image_id at two places resolves last-wins",
         lambda c: _build_imagenet_geo(c, c.geo_csv([(c.fx["ids"][1], 48.8566, 2.3522),
                                                     (c.fx["ids"][1], 40.4, -3.7)])),
         InputError, "lists 1 image id(s) at two different places", "geo CSV"),
    Case("geo-csv-latitude-100", "latitude 100 is 'beyond the coastal tolerance'",
         lambda c: _imagenet_geo(c, c.out, c.geo_csv([(c.fx["ids"][0], 100, 2.35), (c.fx["ids"][1], 48.8, 2.35)])),
         2, "latitude outside [-90, 90]", "geo CSV"),
    Case("geo-csv-longitude-200-api", "longitude 200 is 'beyond the coastal tolerance'",
         lambda c: _build_imagenet_geo(c, c.geo_csv([(c.fx["ids"][0], 48.8, 200)])),
         InputError, "longitude outside [-180, 180]", "geo CSV"),
    Case("group-accuracy-text-vs-float", "string labels against float predictions give accuracy 0",
         _group_accuracy(["1", "2", "0"] * 100, [1.0, 2.0, 0.0] * 100), None, "", "audit",
         check=_check_text_labels),
    Case("group-accuracy-words-vs-numbers", "text labels against numeric predictions",
         _group_accuracy(["cat", "dog", "cow"], [0, 1, 2]), InputError, "are text", "audit"),
    Case("gls-correct-contradicts-accuracy", "gls_test uses a correct column that contradicts accuracy",
         _gls(), InputError, "disagree (accuracy != correct / n)", "audit"),
    Case("gls-negative-counts", "gls_test raises a raw LinAlgError on negative counts",
         _gls(n=[60, -60, 60, 60, 60], correct=[30, 36, 33, 42, 43]), InputError, "positive whole counts", "audit"),
    Case("predict-grey-batch-colour-model", "a 1-channel batch fed to a 3-channel model is broadcast",
         _predict_grey, InputError, "takes (N, 3, H, W) images", "models"),
    Case("predict-pixels-0-255", "float images in 0-255 are predicted on as if in [0, 1]",
         _api(lambda: predict(lambda x: x.mean(dim=(2, 3)), _rand(4, 3, 8, 8) * 255)), InputError,
         "got values in [0", "models"),
    Case("attack-grey-batch-colour-model", "a 1-channel batch fed to a 3-channel model is broadcast",
         _attack_grey, InputError, "takes (N, 3, H, W) images", "models"),
    # ---- unclear or internal errors ----
    Case("audit-models-truncated-test-shard", "a corrupted Parquet shard: internal error",
         _damaged("test", _truncate, _audit_models),
         2, "test-00000-of-00001.parquet", "data loading"),
    Case("audit-models-undecodable-image", "one undecodable image: internal error, no file or row",
         _damaged("test", _damage_image, _audit_models),
         2, "row 3 of the split (image_id 'test_USA3') cannot be decoded", "data loading"),
    Case("train-undecodable-image", "one undecodable image: internal error, no file or row",
         _damaged("train", lambda f: _damage_image(f, 5), _train),
         2, "row 5 of the split (image_id 'train_USA5') cannot be decoded", "data loading"),
    Case("audit-models-missing-label", "a ClassLabel -1 (no label) counted as a wrong prediction",
         _damaged("test", _unlabel, _audit_models), 2, "1 image(s) of the dataset split have no valid 'label'",
         "audit"),
    Case("train-missing-label", "a ClassLabel -1 (no label) in the training split",
         _damaged("train", _unlabel, _train), 2, "Labels must be in [0, 2], got [-1, 2]", "data loading"),
    Case("any-classifier-undecodable-image", "one undecodable image under a timm model: internal error",
         _timm_on_bad_image, InputError, "row 3 of the split (image_id 'test_USA3') cannot be decoded",
         "data loading"),
    Case("train-truncated-train-shard", "a corrupted Parquet shard: internal error",
         _damaged("train", _truncate, _train),
         2, "train-00000-of-00001.parquet", "data loading"),
    Case("audit-test-split-despite-truncated-train-shard", "a truncated train shard breaks the audit of test",
         _damaged("train", _truncate, _audit_models),
         0, "wrote", "data loading", check=_check_split_audited),
    Case("info-verify-undecodable-image", "dataset info calls a dataset with a broken image healthy",
         _damaged("test", _damage_image, _info("--verify")), 2, "Image test_USA3 (row 3 of", "dataset builds"),
    Case("info-verify-truncated-shard", "dataset info calls a dataset with a truncated shard healthy",
         _damaged("test", _truncate, _info("--verify")), 2, "test-00000-of-00001.parquet", "dataset builds"),
    Case("compare-out-overwrites-an-input-report", "compare --out a/report.json replaces the audit report it reads",
         lambda c: ["compare", str(_report(c, "a", [("s0", 0.1), ("s1", 0.12)])),
                    str(_report(c, "b", [("t0", 0.2), ("t1", 0.25)])), "--out", str(c.tmp / "a" / "report.json")],
         2, "would overwrite an audit report", "compare"),
    Case("compare-one-model-permutation", "compare of 1-model reports with --test permutation: internal error",
         lambda c: ["compare", str(_report(c, "a", [("a", 0.1)])), str(_report(c, "b", [("b", 0.2)])),
                    "--test", "permutation", "--out", str(c.out / "c.json")],
         2, "needs at least 2 per population", "compare"),
    Case("demo-out-is-a-file", "demo --quick --out A_FILE: internal error",
         lambda c: (c.unrelated(), ["demo", "--quick", "--device", "cpu", "--out",
                                    str(c.tmp / "mine" / "thesis.txt")])[1], 2, "is a file", "CLI and demo"),
    Case("group-code-na-is-namibia", "a group code NA (Namibia) is reported as missing values",
         _namibia,
         None, "", "audit", check=_check_namibia),
    Case("mnist-offline-leaves-no-empty-folders", "offline defend centroid --data mnist leaves empty folders",
         _mnist_offline, DependencyError, "could not be loaded", "CLI and demo"),
    Case("ctrl-c-audit-does-not-promise-resume", "Ctrl-C on audit says re-run to resume",
         _ctrl_c("audit", lambda c: ["audit", str(c.fx["csv"]), *COLS, "--out", str(c.out)]), 130,
         "does not resume", "CLI and demo"),
    Case("ctrl-c-geoshapes-does-not-promise-resume", "Ctrl-C on dataset build geoshapes says re-run to resume",
         _ctrl_c("dataset_geoshapes", lambda c: _geoshapes(c.out)), 130, "does not resume", "CLI and demo"),
    Case("atomic-files-get-umask-mode", "files written atomically are created 0600", _atomic_write, None, "",
         "CLI and demo", check=_check_mode),
    Case("checkpoint-folders-get-umask-mode", "checkpoint folders are created 0700 while others are 0755",
         _checkpoint_folder, None, "", "CLI and demo", check=_check_dir_mode),
    Case("flickr-key-on-command-line-warns", "--flickr-key on the command line is visible in ps",
         _flickr_on_command_line,
         2, "warning: --flickr-key and --flickr-secret on the command line", "dataset builds"),
    # ---- found while building this table ----
    Case("imagenet-geo-out-parent-folder", "--out .. fails only by luck",
         lambda c: (_chdir(c), _imagenet_geo(c, ".."))[1], 2, "one of its parents", "dataset builds"),
    Case("demo-out-with-unrelated-data-folder", "demo --out DIR replaces DIR/data, someone's folder",
         lambda c: (c.unrelated("mine/data"), ["demo", "--quick", "--device", "cpu", "--out", str(c.tmp / "mine")])[1],
         2, "is not empty and is not an output of geoaudit", "output folders"),
    Case("demo-out-with-unrelated-data-folder-api", "run_demo replaces out_dir/data, someone's folder",
         _run_demo_into_unrelated_data,
         InputError, "data' is not empty and is not an output of geoaudit", "output folders"),
    Case("train-out-unrelated-folder", "train --out DIR into someone's folder",
         lambda c: _train(c, c.fx["geo"])[:-1] + [str(c.unrelated())], 2, "holds no population manifest",
         "output folders"),
    Case("info-without-verify-says-images-not-decoded", "dataset info calls a dataset with a broken image healthy",
         _damaged("test", _damage_image, _info()),
         0, "Images not decoded: --verify", "data loading"),
    Case("audit-covariate-not-positive", "a zero or negative GDP cannot be logged; the flag must be named",
         lambda c: ["audit", str(_csv_of(c, _covariate_of_first(c, 0.0))), *COLS, "--min-group-size", "20",
                    "--out", str(c.out)], 2, "Pass --no-log-covariate", "audit"),
    Case("audit-covariate-infinite", "an infinite GDP", lambda c: ["audit", str(_csv_of(c, _covariate_of_first(
        c, float("inf")))), *COLS, "--min-group-size", "20", "--out", str(c.out)], 2, "missing (NaN) or infinite",
         "audit"),
    Case("imagenet-geo-work-dir-unrelated-api", "build_imagenet_geo(work_dir=DIR) removes DIR after the build",
         _imagenet_geo_work_dir_unrelated, InputError, "is not empty and is not a build's work folder",
         "dataset builds"),
    Case("geoshapes-out-earlier-build-is-replaced", "the refusal must not block rebuilding GeoShapes in place",
         lambda c: (main(_geoshapes(c.out)), _geoshapes(c.out, "--seed", "1"))[1],
         0, "Wrote", "output folders", check=lambda c, out: _assert((c.out / "README.md").exists())),
    Case("geoshapes-out-unrelated-with-overwrite", "--overwrite replaces a folder the user gave up",
         lambda c: _geoshapes(c.unrelated(), "--overwrite"), 0, "Wrote", "output folders",
         check=lambda c, out: _assert(not (c.tmp / "mine" / "thesis.txt").exists())),
    Case("geoshapes-api-out-unrelated-folder", "build_geoshapes(DIR) deletes an unrelated DIR",
         _build_geoshapes_into_unrelated,
         InputError, "not empty", "output folders", slow=True),
    Case("train-stack-not-a-group-size", "train --stack 0 (members trained together in groups of 0)",
         lambda c: _train(c, c.fx["geo"], "--stack", "0"), 2, "--stack must be off, auto or a group size",
         "training"),
    Case("train-population-stack-with-ray", "stack=2 with backend='ray' (each Ray task trains one model)",
         lambda c: lambda: _train_population(c.fx["geo"], out_dir=c.out, n_models=2, epochs=1, backend="ray", stack=2),
         InputError, "applies to backend='local'", "training"),
    Case("train-bn-samples-negative", "train --bn-samples -5 (draws for the BatchNorm statistics)",
         lambda c: _train(c, c.fx["geo"], "--bn-samples", "-5"), 2, "--bn-samples must be 0", "training"),
    Case("demo-jobs-zero", "demo --jobs 0 (populations trained at once, each in a process)",
         lambda c: ["demo", "--jobs", "0", "--out", str(c.out), "--device", "cpu"], 2,
         "--jobs must be at least 1", "CLI and demo"),
]


def _marks(c):
    return ([pytest.mark.xfail(strict=True, reason=c.open_for)] if c.open_for else []) + \
        ([pytest.mark.slow] if c.slow else [])


@pytest.mark.parametrize("case", [pytest.param(c, marks=_marks(c)) for c in CASES], ids=[c.id for c in CASES])
def test_bad_input(case, fx, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, fx, monkeypatch)
    shared = _snapshot(fx["root"])
    made = case.make(ctx)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    if case.interface == "cli":
        rc = main([str(a) for a in made])
        out, err = capsys.readouterr()
        assert rc == case.expect, (rc, err[-2000:])
        assert "Traceback" not in err and "internal error" not in err, err
        if case.expect == 0:
            assert case.fragment in out, out[-2000:]
            if case.check:
                case.check(ctx, out)
        else:
            lines = [x for x in err.strip().splitlines() if x.startswith("geoaudit")]
            assert len(lines) == 1, err
            assert case.fragment in (err if case.fragment.startswith("warning:") else lines[0]), err
    elif case.expect is None:
        result = made()
        case.check(ctx, result)
    else:
        with pytest.raises(case.expect) as e:
            made()
        assert case.fragment in str(e.value)
        assert "\n" not in str(e.value).strip()
    if case.expect not in (0, None):
        assert _snapshot(tmp_path) == before, "a refused input changed the files"
        assert not ctx.out.exists() or ctx.out in [tmp_path / p for p in before]
    assert _snapshot(fx["root"]) == shared, "the shared inputs changed"


def test_every_case_is_documented():
    """docs/bad_inputs.md lists every case and the current count."""
    doc = (ROOT / "docs" / "bad_inputs.md").read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"add to docs/bad_inputs.md: {missing}"
    assert f"**{len(CASES)} cases**" in doc


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


def markdown_table():
    """The case table for docs/bad_inputs.md."""
    rows = ["| # | case | interface | the problem | expected | message fragment | area |",
            "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(CASES, 1):
        expect = (f"exit {c.expect}" if c.interface == "cli" else
                  "returns" if c.expect is None else f"raises `{c.expect.__name__}`")
        frag = f"`{c.fragment}`" if c.fragment else "(checked value)"
        rows.append(f"| {i} | `{c.id}` | {c.interface.upper()} | {c.problem} | {expect} | {frag.replace('|', '/')} | "
                    f"{'OPEN: ' + c.open_for if c.open_for else c.area} |")
    return "\n".join(rows)


MARKER = "<!-- generated below by `python tests/test_bad_inputs.py --write` -->"

if __name__ == "__main__":  # print the table; with --write, replace it in docs/bad_inputs.md
    import sys

    table = f"**{len(CASES)} cases**, {sum(bool(c.open_for) for c in CASES)} still open.\n\n{markdown_table()}\n"
    if "--write" in sys.argv:
        doc = ROOT / "docs" / "bad_inputs.md"
        text = doc.read_text(encoding="utf-8")
        doc.write_text(text[:text.index(MARKER) + len(MARKER)] + "\n\n" + table, encoding="utf-8")
    else:
        print(table)
