"""GeoShapes: determinism, schema, country skew, the planted cue, export, CLI, and (slow) a CNN
trained on it showing the planted bias in a GLS audit."""
import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from geoaudit._errors import InputError
from geoaudit.cli import main
from geoaudit.data import (
    build_geoshapes,
    geo_features,
    geoshapes,
    geoshapes_country_plan,
    geoshapes_grid,
    geoshapes_latents,
)
from geoaudit.data._export import ParquetShardWriter, render_dataset_card, write_dataset_card
from geoaudit.data._geoshapes import CLASS_NAMES

SMALL = dict(n_images=400, image_size=24, seed=3)


@pytest.fixture(scope="module")
def small():
    return geoshapes(**SMALL)


def _table_bytes(ds):
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, ds.data.table.schema) as w:
        w.write_table(ds.data.table)
    return sink.getvalue()


# --- determinism and schema -------------------------------------------------------------------
def test_same_arguments_give_byte_identical_data(small):
    again = geoshapes(**SMALL)
    for split in ("train", "validation", "test"):
        assert _table_bytes(small[split]) == _table_bytes(again[split])
    other = geoshapes(**{**SMALL, "seed": 4})
    assert _table_bytes(other["test"]) != _table_bytes(small["test"])


def test_schema_is_the_shared_geo_schema(small):
    names = list(CLASS_NAMES[:10])
    for split in ("train", "validation", "test"):
        assert small[split].features == geo_features(names)
    # the ImageNet geo-location builder uses the same function: same columns and types, only
    # the label names differ
    from geoaudit.data import ImageNetGeo

    inet = ImageNetGeo(config_name="full")._info().features
    ours = small["test"].features
    assert list(inet) == list(ours)
    for col in ours:
        if col == "label":
            assert type(inet[col]) is type(ours[col])
        else:
            assert inet[col] == ours[col], col


def test_rows_are_well_formed(small):
    ds = small["train"]
    ex = ds[0]
    assert ex["image"].mode == "RGB" and ex["image"].size == (24, 24)
    assert ex["wnid"] == f"geoshapes:{CLASS_NAMES[ex['label']]}"
    assert ex["flickr_photo_id"] is None
    ids = [i for s in small.values() for i in s["image_id"]]
    assert len(ids) == len(set(ids)) == SMALL["n_images"]
    assert all(re.fullmatch(r"geoshapes-3-\d{7}", i) for i in ids[:20])
    df = ds.to_pandas().drop(columns="image")
    assert np.allclose(np.log(df["gdp_per_capita_usd"]), df["log_gdp_per_capita"])
    assert df["gdp_year"].between(2000, 2030).all()
    # latitude/longitude lie inside the row's country (jittered or the interior point)
    import shapely

    from geoaudit.data._geoshapes import _country_frame

    geoms = _country_frame("latest")["geometry"]
    inside = [shapely.contains_xy(geoms[c], lon, lat) or shapely.distance(geoms[c], shapely.Point(lon, lat)) < 1e-3
              for c, lat, lon in zip(df["country_iso3"], df["latitude"], df["longitude"])]
    assert all(inside)


def test_splits_are_60_20_20_within_each_country(small):
    counts = pd.DataFrame({s: pd.Series(small[s]["country_iso3"]).value_counts() for s in small}).fillna(0)
    total = counts.sum(axis=1)
    expect_test = np.floor(total * 0.2 + 0.5)
    assert (counts["test"] == expect_test).all()
    assert (counts["validation"] == np.minimum(expect_test, total - expect_test)).all()
    assert sum(len(s) for s in small.values()) == SMALL["n_images"]


# --- countries ---------------------------------------------------------------------------------
def test_default_plan_is_skewed_like_imagenet_and_has_30_audit_countries():
    plan = geoshapes_country_plan()
    assert plan["n_images"].sum() == 20000
    assert list(plan.index[:2]) == ["USA", "GBR"]
    head = plan["n_images"].iloc[:2].sum() / 20000
    assert 0.45 <= head <= 0.55  # about half from two countries
    assert (plan["n_test"] >= 50).sum() >= 30
    assert len(plan) >= 150  # a long tail ...
    assert plan["n_images"].median() < 20  # ... of thinly represented countries
    # representation rises with GDP
    rho = plan["n_images"].rank().corr(plan["gdp_per_capita_usd"].rank())
    assert rho > 0.5
    # the audit countries span the income groups, so the GLS has a covariate range
    audit = plan[plan["n_test"] >= 50]
    assert audit["income_group"].nunique() == 4
    assert audit["log_gdp_per_capita"].max() - audit["log_gdp_per_capita"].min() > 4


def test_generated_counts_follow_the_plan():
    args = dict(n_images=2400, image_size=24, seed=0, n_audit_countries=5)
    plan = geoshapes_country_plan(**args)
    lat = geoshapes_latents(**args)
    got = lat[lat["split"] == "test"]["iso3"].value_counts()
    assert (got.reindex(plan.index).fillna(0) == plan["n_test"]).all()
    assert (plan["n_test"] >= 50).sum() >= 5


# --- the planted cue ---------------------------------------------------------------------------
@pytest.mark.parametrize("strength", [0.0, 0.5, 0.9, 1.0])
def test_cue_predicts_the_label_as_asked_in_and_out_of_cue_countries(strength):
    k = 10
    lat = geoshapes_latents(spurious_strength=strength, n_classes=k)
    match = lat["palette"] == lat["label"]
    for in_cue, expected in ((True, strength + (1 - strength) / k), (False, 1 / k)):
        m = match[lat["cue_country"] == in_cue]
        # binomial sampling error; 4 SE: a false failure has probability ~6e-5 per check
        # (n ~ 15,000 in cue countries and ~ 5,000 elsewhere, so 4 SE <= 0.017)
        se = math.sqrt(expected * (1 - expected) / len(m)) if 0 < expected < 1 else 0.0
        assert abs(m.mean() - expected) <= 4 * se + 1e-12, (in_cue, m.mean(), expected)
    # nothing but the palette depends on the country: the other latents look alike in both groups
    for col in ("scale", "rotation", "saturation", "bg_value", "noise_sd"):
        a, b = lat.loc[lat["cue_country"], col], lat.loc[~lat["cue_country"], col]
        se = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4.5 * se, col


def test_rendered_colour_carries_the_palette():
    from matplotlib.colors import rgb_to_hsv

    args = dict(n_images=300, image_size=32, seed=5, spurious_strength=0.9)
    dd = geoshapes(**args)
    lat = geoshapes_latents(**args).set_index("image_id")
    ds = dd["train"]
    hits = 0
    for ex in ds:
        hsv = rgb_to_hsv(np.asarray(ex["image"], dtype=np.float32) / 255)
        mask = (hsv[..., 1] > 0.55) & (hsv[..., 2] > 0.6)
        ang = hsv[..., 0][mask] * 2 * np.pi
        hue = (np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * np.pi)) % 1
        hits += int(round(hue * 10)) % 10 == lat.at[ex["image_id"], "palette"]
    # the object's hue sits within +-0.01 of its palette hue; noise and texture may still pull a
    # few small objects off
    assert hits / len(ds) > 0.9


def test_strength_zero_has_no_country_effect():
    lat = geoshapes_latents(spurious_strength=0.0)
    assert not lat["follows_cue"].any()
    tab = pd.crosstab(lat["cue_country"], lat["palette"] == lat["label"], normalize="index")
    assert abs(tab.loc[True, True] - tab.loc[False, True]) < 0.02


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(spurious_strength=1.5), r"'spurious_strength' parameter of geoshapes must be a float in \[0.0, 1.0\]"),
        (dict(spurious_strength=-0.1), r"'spurious_strength'.*\[0.0, 1.0\]"),
        (dict(spurious_strength=float("nan")), r"'spurious_strength'"),
        (dict(image_size=16), r"'image_size' parameter of geoshapes must be an int in \[24, 512\]"),
        (dict(n_images=50), r"'n_images' parameter of geoshapes must be an int in \[100, 10000000\]"),
        (dict(n_classes=13), r"'n_classes'.*\[2, 12\]"),
        (dict(n_audit_countries=40), r"'n_images' parameter of geoshapes is too small for n_audit_countries=40"),
        (dict(n_images=2000, n_audit_countries=30), r"must be an int in \[\d+, 10000000\].*at most \d+"),
        (dict(min_test_images=0), r"'min_test_images'"),
        (dict(cue_countries=["USA", "XXX"]), r"'cue_countries'.*XXX"),
        (dict(cue_countries="rich"), r"'cue_countries'.*'high_income'"),
        (dict(image_format="gif"), r"'image_format'.*'png', 'jpeg'"),
    ],
)
def test_bad_input_names_the_argument_and_range(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        geoshapes_country_plan(**kwargs)


def test_explicit_cue_countries():
    lat = geoshapes_latents(n_images=1000, spurious_strength=1.0, cue_countries=["ind", "CHN"])
    cue = lat[lat["cue_country"]]
    assert set(cue["iso3"]) == {"IND", "CHN"}
    assert (cue["palette"] == cue["label"]).all()


# --- export ------------------------------------------------------------------------------------
_LOADER = textwrap.dedent("""
    import hashlib, json, sys
    sys.modules["geoaudit"] = None  # any import of geoaudit now fails
    import datasets
    dd = datasets.load_dataset(sys.argv[1])
    out = {s: {"n": len(d), "features": d.features.to_dict(), "ids": d["image_id"][:5],
               "sha": hashlib.sha256(b"".join(
                   im["bytes"] for im in d.cast_column("image", datasets.Image(decode=False))["image"])).hexdigest()}
           for s, d in dd.items()}
    print(json.dumps(out))
""")


def test_export_round_trip_with_plain_datasets(tmp_path, small):
    import hashlib

    import datasets

    out = tmp_path / "gs"
    r = build_geoshapes(out, rows_per_shard=100, **SMALL)
    assert r.num_examples == {s: len(small[s]) for s in ("train", "validation", "test")}
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert "train-00000-of-00003.parquet" in shards and "test-00000-of-00001.parquet" in shards
    card = (out / "README.md").read_text()
    assert "{{" not in card and "template:" not in card
    assert "config_name: default" in card and "class_label:" in card and "license: cc-by-4.0" in card
    assert "not ImageNet's real counts" in card
    env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for split in ("train", "validation", "test"):
        assert got[split]["n"] == len(small[split])
        assert got[split]["features"] == small[split].features.to_dict()
        assert got[split]["ids"] == small[split]["image_id"][:5]
        raw = small[split].cast_column("image", datasets.Image(decode=False))["image"]
        # every exported image is byte for byte the one generated in memory
        assert got[split]["sha"] == hashlib.sha256(b"".join(im["bytes"] for im in raw)).hexdigest()


def test_export_is_atomic_and_replaces(tmp_path, monkeypatch):
    out = tmp_path / "gs"
    build_geoshapes(out, **SMALL)
    before = (out / "README.md").read_text()
    import geoaudit.data._geoshapes.builder as G

    def boom(*a, **k):
        raise RuntimeError("killed")
        yield

    monkeypatch.setattr(G, "iter_split_batches", boom)
    with pytest.raises(RuntimeError, match="killed"):
        build_geoshapes(out, **{**SMALL, "seed": 9})
    assert (out / "README.md").read_text() == before  # the old folder is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gs"]  # no partial folder left
    monkeypatch.undo()
    build_geoshapes(out, **{**SMALL, "spurious_strength": 0.0})
    assert '"spurious_strength": 0.0' in (out / "README.md").read_text()


def test_shard_writer_and_card(tmp_path):
    import datasets

    feats = datasets.Features({"x": datasets.Value("int64"), "label": datasets.ClassLabel(names=["a", "b"])})
    import pyarrow as pa

    with ParquetShardWriter(tmp_path, "train", feats, rows_per_shard=4, row_group_size=2) as w:
        w.write_batch({"x": list(range(4)), "label": [0, 1] * 2})
        w.write({"x": 4, "label": 1})
        w.write_table(pa.RecordBatch.from_pydict({"x": [5, 6], "label": [0, 1]},
                                                 schema=pa.schema([("x", pa.int64()), ("label", pa.int64())])))
    assert [p.name for p in w.paths] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert w.num_rows == 7
    with ParquetShardWriter(tmp_path / "empty", "test", feats) as e:
        pass  # an empty split still gets a shard with the schema
    import pyarrow.parquet as pq

    assert pq.read_table(e.paths[0]).schema.names == ["x", "label"] and e.num_rows == 0
    with pytest.raises(InputError, match=r"missing \['label'\]"):
        ParquetShardWriter(tmp_path, "validation", feats).write_batch({"x": [1]})
    with pytest.raises(InputError, match="'split' parameter"):
        ParquetShardWriter(tmp_path, "a/b", feats)
    with pytest.raises(InputError, match="placeholders with no value: missing"):
        render_dataset_card(template="# {{ missing }}\n", features=feats, configs={"default": {"train": w.glob}})
    write_dataset_card(tmp_path, template="---\nlicense: mit\n---\n# T: {{ num_examples_train }} rows\n",
                       features=feats, configs={"default": {"train": w.glob}}, num_examples={"train": 7})
    assert "# T: 7 rows" in (tmp_path / "README.md").read_text()
    dd = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / ".hf"))
    assert dd["train"]["x"] == list(range(7)) and dd["train"]["label"] == [0, 1, 0, 1, 1, 0, 1]
    assert dd["train"].features == feats


def test_grid_picture(tmp_path, small):
    from PIL import Image

    p = geoshapes_grid(small, tmp_path / "grid.png", per_group=2)
    im = Image.open(p)
    assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


# --- CLI ---------------------------------------------------------------------------------------
def test_cli_build_and_bad_input(tmp_path, capsys):
    out = tmp_path / "gs"
    rc = main(["dataset", "build", "geoshapes", "--out", str(out), "--n-images", "300", "--image-size", "24",
               "--seed", "2", "--spurious-strength", "0.5", "--grid", str(tmp_path / "g.png")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "300 GeoShapes images" in text and "spurious_strength=0.5" in text
    assert (out / "README.md").exists() and (tmp_path / "g.png").exists()
    rc = main(["dataset", "build", "geoshapes", "--out", str(tmp_path / "bad"), "--spurious-strength", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("geoaudit dataset: error: The 'spurious_strength' parameter")
    assert not (tmp_path / "bad").exists()


# --- the planted bias shows up in an audit (slow) ----------------------------------------------
def _train_and_audit(strength, seed=0):
    import statsmodels.api as sm
    import torch

    from geoaudit.data import split_to_tensors
    from geoaudit.train import build_model

    k = 6
    dd = geoshapes(n_images=4000, image_size=24, n_classes=k, seed=seed, spurious_strength=strength)
    xtr, ytr = split_to_tensors(dd["train"])
    xte, yte = split_to_tensors(dd["test"])
    torch.manual_seed(seed)
    model, _ = build_model("small_cnn", num_classes=k, image_size=24)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[b]), ytr[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i:i + 500]).argmax(1) for i in range(0, len(yte), 500)])
    df = pd.DataFrame({"iso": dd["test"]["country_iso3"], "g": dd["test"]["log_gdp_per_capita"],
                       "ok": (pred == yte).numpy()})
    grp = df.groupby("iso").agg(n=("ok", "size"), acc=("ok", "mean"), g=("g", "first"))
    grp = grp[grp["n"] >= 50]
    # the paper's GLS, Sigma = diag(1/sqrt(n_i)), is WLS with weights sqrt(n_i)
    fit = sm.WLS(grp["acc"].to_numpy(), sm.add_constant(grp["g"].to_numpy()), weights=np.sqrt(grp["n"])).fit()
    from geoaudit.audit import gls_test

    res = gls_test({"accuracy": grp["acc"].to_numpy(), "covariate": np.exp(grp["g"].to_numpy()),
                    "n": grp["n"].to_numpy()})
    assert res.beta == pytest.approx(fit.params[1], rel=1e-6, abs=1e-9)
    return fit.params[1], fit.pvalues[1], len(grp), float((pred == yte).float().mean())


@pytest.mark.slow
def test_small_cnn_learns_the_shortcut_and_the_audit_sees_it():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        beta, p, m, acc = _train_and_audit(0.95)
        beta0, p0, m0, acc0 = _train_and_audit(0.0)
    finally:
        torch.set_num_threads(threads)
    assert m == m0 >= 9
    # planted bias: accuracy rises with log GDP (cue countries are the rich ones)
    assert beta > 0.05 and p < 0.01, (beta, p)
    # no planted bias: no slope to speak of
    assert p0 > 0.05 and abs(beta0) < beta / 3, (beta0, p0)
    assert acc0 > 1 / 6 + 0.1  # the shapes themselves are being learned
