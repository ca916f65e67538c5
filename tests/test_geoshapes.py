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

SMALL = dict(n_images=400, image_size=24, random_state=3)


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
    other = geoshapes(**{**SMALL, "random_state": 4})
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
    args = dict(n_images=2400, image_size=24, random_state=0, n_audit_countries=5)
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

    args = dict(n_images=300, image_size=32, random_state=5, spurious_strength=0.9)
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
        build_geoshapes(out, **{**SMALL, "random_state": 9})
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
    rc = main(["dataset", "build", "geoshapes", "--out", str(tmp_path / "cap"), "--n-images", "300",
               "--image-size", "24", "--random-state", "2", "--capture-strength", "0.7"])
    assert rc == 0 and "capture_strength=0.7" in capsys.readouterr().out
    assert '"capture_strength": 0.7' in (tmp_path / "cap" / "README.md").read_text()
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
    dd = geoshapes(n_images=4000, image_size=24, n_classes=k, random_state=seed, spurious_strength=strength)
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


# --- one configuration object ------------------------------------------------------------------
def test_config_is_the_single_source_of_parameters():
    from geoaudit.data import GeoShapesConfig

    cfg = GeoShapesConfig(n_images=400, image_size=24, random_state=3)
    # config=, keyword overrides, and both together give the same draw
    a = geoshapes_latents(cfg)
    b = geoshapes_latents(n_images=400, image_size=24, random_state=3)
    c = geoshapes_latents(GeoShapesConfig(n_images=400), image_size=24, random_state=3)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    # the deprecated 'seed' is random_state
    with pytest.warns(DeprecationWarning, match="'seed' parameter of geoshapes is deprecated"):
        d = geoshapes_latents(n_images=400, image_size=24, seed=3)
    pd.testing.assert_frame_equal(a, d)
    with pytest.warns(DeprecationWarning):
        assert cfg.seed == 3
    assert cfg.replace(capture_strength=0.5).capture_strength == 0.5 and cfg.capture_strength == 0.0
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_images = 5


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda C: C(capture_strength=1.5), r"'capture_strength' parameter of GeoShapesConfig must be a float in \[0.0, 1.0\]"),
        (lambda C: C(random_state="x"), r"'random_state' parameter of GeoShapesConfig must be an int in \[0, \d+\], a numpy"),
        (lambda C: C(random_state=-1), r"'random_state' parameter of GeoShapesConfig must be an int in \[0, "),
        (lambda C: C(year="2019"), r"'year' parameter of GeoShapesConfig must be 'latest' or an int"),
        (lambda C: C().replace(n_images=10), r"'n_images' parameter of GeoShapesConfig.replace must be an int"),
        (lambda C: geoshapes_country_plan(colour=1), r"unknown parameter\(s\) 'colour'; accepted: n_images, "
                                                     r"spurious_strength, capture_strength, image_size, random_state"),
        (lambda C: geoshapes_country_plan(capture_strength=-0.5), r"'capture_strength' parameter of geoshapes"),
        (lambda C: geoshapes_country_plan(seed=1, random_state=1), r"both 'seed' and its replacement 'random_state'"),
        (lambda C: geoshapes_country_plan(config=[1]), r"'config' parameter of geoshapes must be a GeoShapesConfig"),
    ],
)
def test_config_validation_messages(call, pattern):
    from geoaudit.data import GeoShapesConfig

    with pytest.raises(InputError, match=pattern):
        call(GeoShapesConfig)


def test_random_state_generators_are_drawn_once_and_recorded():
    from geoaudit.data import GeoShapesConfig

    a = GeoShapesConfig(random_state=np.random.default_rng(7)).random_state
    b = GeoShapesConfig(random_state=np.random.default_rng(7)).random_state
    assert isinstance(a, int) and a == b
    assert isinstance(GeoShapesConfig(random_state=None).random_state, int)


# --- the two mechanisms in the hidden truth ----------------------------------------------------
def test_null_has_no_country_dependence_in_the_latents():
    null = dict(n_images=3000, spurious_strength=0.0, capture_strength=0.0, image_size=32)
    lat = geoshapes_latents(**null)
    assert not lat["follows_cue"].any()
    assert (lat["capture_severity"] == 0).all() and (lat["jpeg_quality"] == 0).all()
    assert (lat["blur_sigma_px"] == 0).all() and (lat["exposure"] == 1).all()
    # moving the cue to other countries changes nothing but the cue flag: no variable depends on
    # which countries are favoured
    other = geoshapes_latents(**null, cue_countries=["IND", "NGA"])
    cols = [c for c in lat.columns if c != "cue_country"]
    pd.testing.assert_frame_equal(lat[cols], other[cols])
    assert not lat["cue_country"].equals(other["cue_country"])


def test_capture_severity_falls_with_gdp_and_leaves_the_rest_alone():
    from geoaudit.data._geoshapes import capture_deficit

    args = dict(n_images=4000, image_size=32, random_state=1)
    lat = geoshapes_latents(**args, capture_strength=0.8)
    plan = geoshapes_country_plan(**args, capture_strength=0.8)
    by = lat.groupby("iso3")["capture_severity"].mean()
    gdp = plan.loc[by.index, "gdp_per_capita_usd"]
    assert by.rank().corr(gdp.rank()) < -0.9  # Spearman: poorer, worse capture
    assert (lat.loc[lat["iso3"] == "USA", "capture_severity"] == 0).all()  # above US$50,000: clean
    # severity = capture_mean * (0.5 + U(0, 1)) when that stays below 1: its mean is capture_mean
    big = plan[(plan["n_images"] >= 200) & (plan["capture_mean"] > 0) & (1.5 * plan["capture_mean"] <= 1)]
    assert len(big) >= 3
    for iso, m in big["capture_mean"].items():
        assert by[iso] == pytest.approx(m, abs=0.05), iso  # 4 SE at 250 images
    assert lat["capture_severity"].between(0, 1).all()
    assert plan["capture_mean"].to_numpy() == pytest.approx(0.8 * capture_deficit(plan["gdp_per_capita_usd"]))
    # the capture knob has its own random stream: the colour mechanism and geometry are unchanged
    base = geoshapes_latents(**args, capture_strength=0.0)
    for col in ("label", "palette", "follows_cue", "split", "iso3", "scale", "rotation", "noise_sd"):
        assert lat[col].equals(base[col]), col
    # and the degradation parameters grow with the severity
    assert lat["blur_sigma_px"].corr(lat["capture_severity"]) == pytest.approx(1.0)
    assert (lat.loc[lat["capture_severity"] > 0, "jpeg_quality"].between(20, 90)).all()


def test_capture_strength_degrades_exactly_the_images_with_severity():
    import datasets

    args = dict(n_images=300, image_size=32, random_state=4)
    clean, poor = geoshapes(**args), geoshapes(**args, capture_strength=1.0)
    sev = geoshapes_latents(**args, capture_strength=1.0).set_index("image_id")["capture_severity"]
    raw = lambda ds: [im["bytes"] for im in ds.cast_column("image", datasets.Image(decode=False))["image"]]  # noqa: E731
    ids = clean["train"]["image_id"]
    same = np.array([a == b for a, b in zip(raw(clean["train"]), raw(poor["train"]))])
    assert ((sev.loc[ids] == 0).to_numpy() == same).all()
    assert 0 < same.sum() < len(same)
    # degraded images lose detail: less high-frequency energy than their clean versions
    x0 = np.asarray([np.asarray(im, np.float32) for im in clean["train"]["image"]])[~same]
    x1 = np.asarray([np.asarray(im, np.float32) for im in poor["train"]["image"]])[~same]
    assert x1.mean() < x0.mean()  # darker


# --- the corruption as a function --------------------------------------------------------------
def _batch(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_capture_corruption_shapes_dtypes_ranges():
    import torch

    from geoaudit.data import capture_corruption

    x = _batch()
    y = capture_corruption(x, 0.7, random_state=0)
    assert y.shape == x.shape and y.dtype == np.uint8 and not np.array_equal(x, y)
    xf = x.astype(np.float32) / 255
    yf = capture_corruption(xf, np.linspace(0.1, 1, 6), random_state=0)
    assert yf.dtype == np.float32 and yf.shape == xf.shape and yf.min() >= 0 and yf.max() <= 1
    one = capture_corruption(xf[0], 0.5, random_state=1)  # a single (H, W, C) image
    assert one.shape == (32, 32, 3)
    xt = torch.from_numpy(xf).permute(0, 3, 1, 2).contiguous()  # torch: (N, C, H, W)
    yt = capture_corruption(xt, torch.full((6,), 0.5).numpy(), random_state=torch.Generator().manual_seed(0))
    assert isinstance(yt, torch.Tensor) and yt.shape == xt.shape and yt.dtype == torch.float32
    assert float(yt.min()) >= 0 and float(yt.max()) <= 1
    yu = capture_corruption(torch.from_numpy(x).permute(0, 3, 1, 2), 0.3, random_state=0)
    assert yu.dtype == torch.uint8 and yu.shape == (6, 3, 32, 32)
    grey = capture_corruption(xf[..., :1], 0.5, random_state=0)
    assert grey.shape == (6, 32, 32, 1)
    # odd sizes (not a multiple of JPEG's 8x8 blocks) keep their shape
    assert capture_corruption(_batch(2, 27), 0.9, random_state=0).shape == (2, 27, 27, 3)


def test_capture_corruption_severity_zero_is_identity_and_randomness_is_reproducible():
    import torch

    from geoaudit.data import capture_corruption

    x = _batch()
    assert np.array_equal(capture_corruption(x, 0.0, random_state=0), x)
    xf = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(capture_corruption(xf, 0.0), xf)
    sev = np.array([0.0, 0.4, 0.0, 0.9, 1.0, 0.2])
    y = capture_corruption(x, sev, random_state=3)
    assert np.array_equal(y[sev == 0], x[sev == 0]) and not np.array_equal(y[sev > 0], x[sev > 0])
    assert np.array_equal(y, capture_corruption(x, sev, random_state=3))
    assert not np.array_equal(y, capture_corruption(x, sev, random_state=4))
    # stronger severity, larger change
    err = [np.abs(capture_corruption(x, s, random_state=0).astype(float) - x).mean() for s in (0.1, 0.5, 1.0)]
    assert err[0] < err[1] < err[2]


@pytest.mark.parametrize(
    "images, severity, pattern",
    [
        (np.zeros((2, 8, 8, 3), np.uint8), 1.5, r"'severity' parameter of capture_corruption must be in \[0, 1\]"),
        (np.zeros((2, 8, 8, 3), np.uint8), [0.1, 0.2, 0.3], r"'severity'.*one value per image \(2\)"),
        (np.full((2, 8, 8, 3), 2.0), 0.5, r"must hold floats in \[0, 1\]"),
        (np.zeros((2, 8, 8, 4), np.uint8), 0.5, r"must have 1 or 3 channels"),
        (np.zeros((8, 8), np.uint8), 0.5, r"must have 3 or 4 dimensions"),
        (np.zeros((2, 8, 8, 3), np.int32), 0.5, r"must be uint8 or float"),
        ([[0.0]], 0.5, r"must be a numpy array or a torch tensor"),
    ],
)
def test_capture_corruption_bad_input(images, severity, pattern):
    from geoaudit.data import capture_corruption

    with pytest.raises(InputError, match=pattern):
        capture_corruption(images, severity, random_state=0)


# --- the datasets builder and the build result ------------------------------------------------
def test_builder_loads_with_datasets_and_matches_geoshapes(tmp_path):
    import datasets

    from geoaudit.data import GeoShapes

    args = dict(n_images=300, image_size=24, random_state=2, capture_strength=0.6)
    b = GeoShapes(cache_dir=str(tmp_path / "hf"), **args)
    assert b.config.geoshapes_config().capture_strength == 0.6
    b.download_and_prepare()
    built = b.as_dataset(split="test")
    mem = geoshapes(**args)["test"]
    assert isinstance(built, datasets.Dataset) and built.features == mem.features
    order = {i: k for k, i in enumerate(built["image_id"])}
    assert sorted(order) == sorted(mem["image_id"])
    raw = built.cast_column("image", datasets.Image(decode=False))["image"]
    mraw = mem.cast_column("image", datasets.Image(decode=False))["image"]
    for i, im in zip(mem["image_id"], mraw):
        assert raw[order[i]]["bytes"] == im["bytes"]
    assert [c.name for c in GeoShapes.BUILDER_CONFIGS] == ["default", "capture", "both", "null"]
    with pytest.raises(InputError, match="'capture_strength' parameter of GeoShapes"):
        GeoShapes(cache_dir=str(tmp_path / "hf"), capture_strength=3.0)


def test_build_result_follows_the_result_protocol(tmp_path):
    import dataclasses

    r = build_geoshapes(tmp_path / "gs", n_images=300, image_size=24, random_state=1, capture_strength=0.4)
    assert r.config["capture_strength"] == 0.4 and r.config["random_state"] == 1
    with pytest.raises(TypeError):
        r.config["n_images"] = 3  # read-only mapping
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cue_share = 0.0
    d = r.to_dict()
    assert json.loads(json.dumps(d))["num_examples"] == dict(r.num_examples)
    assert "capture_strength=0.4" in r.summary() and "300 images" in r.summary()
    card = (tmp_path / "gs" / "README.md").read_text()
    assert "`capture_strength = 0.4`" in card and "capture severity (mean)" in card


def test_grid_mosaic_and_figure(tmp_path):
    from matplotlib.figure import Figure

    from geoaudit.report._geoshapes_figures import geoshapes_grid_figure

    dd = geoshapes(n_images=3000, image_size=24, capture_strength=1.0, random_state=0)
    m = geoshapes_grid(dd, per_group=3)
    assert m.row_labels == ("High income", "Upper middle income", "Lower middle income", "Low income")
    assert m.tiles.shape == (4, 3, 24, 24, 3) and m.present.all()
    assert m.image.shape == (4 * 24 + 3 * 3, 3 * 24 + 2 * 3, 3)
    lat = geoshapes_latents(n_images=3000, image_size=24, capture_strength=1.0, random_state=0)
    # every caption carries the tile's hidden truth; low-income captures are worse than high-income ones
    assert all(s > 0 for s in m.severity[3]) and np.mean(m.severity[0]) < np.mean(m.severity[3])
    assert all(h is not None for h in m.cue_held[0]) and set(m.iso3[3]) <= set(lat["iso3"])
    assert m.caption(3, 0).startswith(m.iso3[3][0] + "\nsev ")
    fig = geoshapes_grid_figure(m, tmp_path / "g.png")
    assert isinstance(fig, Figure) and (tmp_path / "g.png").stat().st_size > 10_000
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == list(m.iso3[0]) and all(ax.title.get_fontsize() >= 9 for ax in fig.axes if ax.get_title())
