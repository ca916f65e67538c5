"""Every example of docs/any_classifier.md runs as written, on tiny fixtures made here.

The examples are files under docs/examples/any_classifier/ that the page includes verbatim
(checked below).  Models are random-initialised (timm resnet18 and a 1-layer transformers ViT
saved to local files; a geoaudit SmallCNN checkpoint), nothing is downloaded; the labels of
each fixture are set from the model's own predictions so that accuracy differs by country.
"""
import runpy
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests._geo_fixtures import ACCURACY, COUNTRIES, dollar_street, geode, save_parquet_folder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples" / "any_classifier"
PAGE = ROOT / "docs" / "any_classifier.md"


def _right(n_per, random_state=0):
    rng = np.random.default_rng(random_state)
    return np.concatenate([rng.random(n_per) < a for a in ACCURACY])


def _predictions_csv(folder):
    rng = np.random.default_rng(0)
    names = ["India", "Nigeria", "Brazil", "France", "United States", "Germany"]
    n = 20
    right = _right(n)
    label = rng.integers(0, 5, n * len(names))
    pd.DataFrame({"image_id": [f"im{i}" for i in range(len(label))], "label": label,
                  "prediction": np.where(right, label, (label + 1) % 5),
                  "country": np.repeat(names, n)}).to_csv(folder / "predictions.csv", index=False)


def _dollar_street(folder):
    import timm

    from geoaudit.audit import predict_topk
    from geoaudit.data import imagenet_classes
    from geoaudit.models import load_external

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), folder / "resnet18.pth")
    n = 6
    ds = dollar_street(n_per_country=n, size=16)
    top5 = predict_topk(load_external("timm:resnet18", weights=folder / "resnet18.pth"), ds, k=5)
    wnids, _ = imagenet_classes()
    right = _right(n)
    labels = [[wnids[t[0]]] if r else [wnids[min(set(range(10)) - set(t.tolist()))]] for t, r in zip(top5, right)]
    ds = ds.remove_columns("imagenet_sysnet_id").add_column("imagenet_sysnet_id", labels)
    save_parquet_folder(ds, folder / "dollar_street")


def _geode(folder):
    import transformers as tr

    from geoaudit.audit import predict_topk
    from geoaudit.models import load_external

    objects = ["bag", "car", "stove", "tree", "house"]
    cfg = tr.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=5, id2label=dict(enumerate(objects)),
                       label2id={o: i for i, o in enumerate(objects)})
    torch.manual_seed(0)
    tr.ViTForImageClassification(cfg).save_pretrained(folder / "my-geode-vit")
    tr.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder / "my-geode-vit")
    ds = geode(n_per_country=12, size=16)
    rng = np.random.default_rng(2)
    ds = ds.map(lambda r: {"image": (np.asarray(r["image"]) * 0 + rng.integers(0, 255, (16, 16, 3))).astype("uint8")})
    pred = predict_topk(load_external(f"hf:{folder / 'my-geode-vit'}"), ds, k=1)[:, 0]
    right = _right(12)
    ds = ds.remove_columns("object").add_column(
        "object", [objects[p] if r else objects[(p + 1) % 5] for p, r in zip(pred, right)])
    save_parquet_folder(ds, folder / "geode", split="train")


def _checkpoint_and_data(folder):
    import datasets
    from PIL import Image

    from geoaudit.audit import predict
    from geoaudit.models import build_model, load_model, make_config, save_checkpoint

    torch.manual_seed(0)
    model, _ = build_model("small_cnn", num_classes=3, image_size=32)
    cfg = make_config(arch="small_cnn", class_names=["a", "b", "c"], in_channels=3, image_size=32)
    path = save_checkpoint(folder / "runs" / "plain" / "model_000", model, cfg)
    rng = np.random.default_rng(0)
    n = 10
    images = [Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")) for _ in range(n * len(COUNTRIES))]
    from geoaudit.data import add_geo_columns

    iso = add_geo_columns(pd.DataFrame({"c": np.repeat([c for c, _, _ in COUNTRIES], n)}), country_col="c")
    ds = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    pred = predict(load_model(path)[0], ds, image_size=32)
    right = _right(n)
    ds = ds.add_column("label", [int(p) if r else int(p + 1) % 3 for p, r in zip(pred, right)])
    ds = ds.cast_column("label", datasets.ClassLabel(names=["a", "b", "c"]))
    ds = ds.add_column("country_iso3", list(iso["country_iso3"]))
    ds = ds.add_column("gdp_per_capita_usd", [float(v) for v in iso["gdp_per_capita_usd"]])
    datasets.DatasetDict({"test": ds}).save_to_disk(str(folder / "geo_data"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("any_classifier")
    _predictions_csv(folder)
    _dollar_street(folder)
    _geode(folder)
    _checkpoint_and_data(folder)
    return folder


def test_page_includes_every_example_verbatim():
    page = PAGE.read_text(encoding="utf-8")
    files = sorted(EXAMPLES.iterdir())
    assert len(files) == 5
    for f in files:
        assert f.read_text(encoding="utf-8").strip() in page, f"{f.name} differs from docs/any_classifier.md"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["predictions_by_country.py", "dollar_street.py", "geode_hf.py", "checkpoint.py"])
def test_python_example_runs(workdir, name, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    assert "Audit of 1 model(s)" in out


@pytest.mark.slow
def test_cli_examples_run(workdir, monkeypatch, capsys):
    from geoaudit.cli import main

    monkeypatch.chdir(workdir)
    lines = [ln for ln in (EXAMPLES / "cli.txt").read_text().splitlines() if ln.strip()]
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "geoaudit"
        assert main(argv[1:]) == 0, line
        out_dir = Path(argv[argv.index("--out") + 1])
        assert (out_dir / "report.json").exists()
    assert "Audit of 1 model(s)" in capsys.readouterr().out


def test_cli_unmatched_country_and_unknown_prefix_are_one_line(workdir, tmp_path, monkeypatch, capsys):
    from geoaudit.cli import main

    pd.DataFrame({"label": [1, 2], "prediction": [1, 1], "country": ["France", "Untied States"]}).to_csv(
        tmp_path / "p.csv", index=False)
    assert main(["audit", str(tmp_path / "p.csv"), "--country-col", "country", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'Untied States' (closest: United States (USA)" in err
    assert main(["audit", "--model", "keras:resnet50", "--dataset", str(workdir / "geode"), "--preset", "geode",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "accepted prefixes: timm:, torchvision:, hf:" in err
