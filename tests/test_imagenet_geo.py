"""End-to-end tests of the ImageNet geo-location build: a tiny ImageNet tree made here, a URL
list, a local Flickr stub on loopback, the shipped boundaries and GDP snapshot."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from flickr_server import FlickrStub  # noqa: E402

import datasets  # noqa: E402

from geoaudit._errors import GeoauditError, InputError  # noqa: E402
from geoaudit.data import ImageNetGeo, build_imagenet_geo, gdp_per_capita, geo_features, imagenet_classes  # noqa: E402
from geoaudit.data._imagenet_geo import card_template_path, split_of  # noqa: E402

CITIES = {  # name: (lat, lon, expected iso3)
    "Paris": (48.8566, 2.3522, "FRA"),
    "Oslo": (59.9139, 10.7522, "NOR"),
    "Pristina": (42.6629, 21.1655, "XKX"),
    "Phnom Penh": (11.5564, 104.9282, "KHM"),
    "Sao Paulo": (-23.5505, -46.6333, "BRA"),
    "Pyongyang": (39.0392, 125.7625, "PRK"),  # the World Bank has no GDP for PRK
}
WNIDS = ["n01440764", "n01443537"]
ODD = "n03126707"


def _jpeg(path, value):
    from PIL import Image

    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path, format="JPEG")


def make_inputs(root: Path):
    """ImageNet tree + URL list + Flickr behaviours.  Returns (tree, urls, photos, expected)."""
    tree = root / "train"
    photos, lines, expected = {}, [], {}
    i = 0
    for city, (lat, lon, iso3) in CITIES.items():
        for w in WNIDS:
            i += 1
            iid = f"{w}_{100 + i}"
            (tree / w).mkdir(parents=True, exist_ok=True)
            _jpeg(tree / w / f"{iid}.JPEG", 10 * i)
            pid = str(5000 + i)
            photos[pid] = (lat, lon)
            lines.append(f"{iid}\thttp://farm1.static.flickr.com/12/{pid}_abcdef.jpg")
            expected[iid] = iso3
    d = tree / ODD
    d.mkdir()
    (d / f"{ODD}_1.JPEG").write_bytes(b"\xff\xd8 this is not a JPEG")  # corrupt, located in Paris
    photos["7001"] = CITIES["Paris"][:2]
    lines.append(f"{ODD}_1\thttp://farm3.static.flickr.com/12/7001_abc.jpg")
    for n, (url, behaviour) in enumerate([
        ("http://farm1.static.flickr.com/1/7002_abc.jpg", "no_location"),
        ("http://farm1.static.flickr.com/1/7003_abc.jpg", "not_found"),     # deleted or private
        ("http://example.com/some/dog.jpg", None),                         # not a Flickr URL
        ("http://farm1.static.flickr.com/1/7005_abc.jpg", (30.0, -40.0)),  # mid-Atlantic: no country
        ("http://farm1.static.flickr.com/1/7006_abc.jpg", (43.62, 7.30)),  # 9 km off Nice: FRA
        ("http://farm1.static.flickr.com/1/7007_abc.jpg", ("http", 500, 2)),  # transient, then (0,0)... see below
    ], start=2):
        iid = f"{ODD}_{n}"
        _jpeg(d / f"{iid}.JPEG", 200)
        lines.append(f"{iid}\t{url}")
        m = re.search(r"/(\d+)_", url)
        if m and behaviour is not None:
            photos[m.group(1)] = behaviour
    expected[f"{ODD}_6"] = "FRA"
    expected[f"{ODD}_7"] = "ESP"  # the transient photo finally answers Madrid (fallback)
    _jpeg(d / f"{ODD}_99.JPEG", 50)  # in the tree, not in the URL list
    (d / "README.txt").write_text("not an image")  # ignored
    urls = root / "urls.txt"
    urls.write_text("# ImageNet URL list\n" + "\n".join(lines) + "\nthis line is malformed\n")
    return tree, urls, photos, expected


MADRID = (40.4168, -3.7038)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ig")
    tree, urls, photos, expected = make_inputs(root)
    with FlickrStub(photos, fallback=MADRID) as stub:
        result = build_imagenet_geo(
            root / "out", imagenet_dir=tree, urls=urls, flickr_key="testkey", flickr_secret="s3cret",
            flickr_cache=root / "flickr.sqlite", flickr_rest_url=stub.url, flickr_rate=1e6, offline=True,
            rows_per_shard=3, flickr_options={"backoff_s": 0.01})
        calls = dict(stub.calls)
    return {"root": root, "tree": tree, "urls": urls, "photos": photos, "expected": expected,
            "result": result, "calls": calls, "out": root / "out"}


def _all_rows(dd):
    rows = []
    for split, ds in dd.items():
        for r in ds:
            rows.append((split, r))
    return rows


def test_build_loads_with_plain_datasets(built):
    dd = datasets.load_dataset(str(built["out"]))
    assert set(dd) == {"train", "validation", "test"}
    feats = geo_features(imagenet_classes()[1], with_image=True, with_location_source=True)
    for ds in dd.values():
        assert ds.features == feats
    rows = _all_rows(dd)
    ids = [r["image_id"] for _, r in rows]
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert set(ids) == set(built["expected"])  # corrupt, unlocated and ocean images are left out
    for split, r in rows:
        assert split == split_of(r["image_id"])
        assert r["country_iso3"] == built["expected"][r["image_id"]], r["image_id"]
        assert r["wnid"] == r["image_id"].split("_")[0]
        assert imagenet_classes()[0][r["label"]] == r["wnid"]
        assert r["image"].size == (6, 6)
    by_id = {r["image_id"]: r for _, r in rows}
    assert by_id["n01440764_101"]["flickr_photo_id"] == "5001"
    assert by_id["n01440764_101"]["latitude"] == pytest.approx(48.8566)


def test_gdp_matches_snapshot_and_missing_gdp_is_kept_and_flagged(built):
    snap = gdp_per_capita("latest", source="snapshot")
    dd = datasets.load_dataset(str(built["out"]), "metadata")
    seen = set()
    for _, r in _all_rows(dd):
        iso3 = r["country_iso3"]
        seen.add(iso3)
        want = snap.loc[iso3, "gdp_per_capita_usd"]
        if iso3 == "PRK":
            assert math.isnan(want)
            assert r["gdp_per_capita_usd"] is None and r["gdp_year"] is None and r["log_gdp_per_capita"] is None
            continue
        assert r["gdp_per_capita_usd"] == pytest.approx(float(want))
        assert r["gdp_year"] == int(snap.loc[iso3, "gdp_year"])
        assert r["log_gdp_per_capita"] == pytest.approx(math.log(float(want)))
        assert r["country_name"] == snap.loc[iso3, "country_name"]
    assert "PRK" in seen
    res = built["result"]
    assert res.countries_without_gdp == ("PRK",)
    assert "World Bank" in res.gdp_source and "snapshot" in res.gdp_source


def test_metadata_config_has_no_image_column(built):
    dd = datasets.load_dataset(str(built["out"]), "metadata")
    for ds in dd.values():
        assert "image" not in ds.column_names
        assert ds.features == geo_features(imagenet_classes()[1], with_image=False, with_location_source=True)
    full = datasets.load_dataset(str(built["out"]))
    assert {s: len(d) for s, d in dd.items()} == {s: len(d) for s, d in full.items()}


def test_statuses_counts_and_build_log(built):
    res = built["result"]
    assert res.status_counts["no_location"] == 1
    assert res.status_counts["not_found"] == 1
    assert res.status_counts["not_flickr"] == 1
    assert res.status_counts["not_listed"] == 1
    assert res.geocode_counts["unassigned"] == 1
    assert res.geocode_counts["nearest"] == 1
    assert [c[0] for c in res.corrupt_images] == [f"{ODD}_1"]
    assert sum(res.num_examples.values()) == len(built["expected"])
    log = json.loads((built["out"] / "build_log.json").read_text())
    assert log["corrupt_images"][0][0] == f"{ODD}_1"
    assert log["countries_without_gdp"] == ["PRK"]
    # one call per photo, except the transient one (2 failures + 1 success); no call for the non-Flickr URL
    assert built["calls"]["7007"] == 3
    assert all(n == 1 for pid, n in built["calls"].items() if pid != "7007")
    assert res.flickr["retries"] == 2
    # the work folder is gone, the output is complete
    assert not (built["root"] / ".out.building").exists()


def test_card_features_match_builder_and_output(built, tmp_path):
    from geoaudit.data._export import split_front_matter

    meta, body = split_front_matter(card_template_path().read_text(encoding="utf-8"))
    infos = {d["config_name"]: d for d in meta["dataset_info"]}
    for name in ("full", "metadata"):
        b = ImageNetGeo(config_name=name, cache_dir=str(tmp_path), with_location_source=True)
        assert datasets.Features._from_yaml_list(infos[name]["features"]) == b.info.features
    for section in ("Bias, risks, and limitations", "Licensing information", "Citation"):
        assert f"## {section}" in body
    out_meta, out_body = split_front_matter((built["out"] / "README.md").read_text(encoding="utf-8"))
    assert "{{" not in out_body
    assert [c["config_name"] for c in out_meta["configs"]] == ["full", "metadata"]
    assert out_meta["configs"][0].get("default") is True
    out_infos = {d["config_name"]: d for d in out_meta["dataset_info"]}
    assert datasets.Features._from_yaml_list(out_infos["full"]["features"]) == ImageNetGeo(
        config_name="full", cache_dir=str(tmp_path), with_location_source=True).info.features
    assert "PRK" in out_body  # flagged in the card


def test_resume_after_kill_repeats_no_call_and_duplicates_nothing(built, tmp_path):
    tree, urls, photos = built["tree"], built["urls"], built["photos"]
    out = tmp_path / "out"
    cache = tmp_path / "flickr.sqlite"

    class Kill(Exception):
        pass

    def kill_after(stage, n_max):
        def hook(stage_now, n):
            if stage_now == stage and n >= n_max:
                raise Kill(f"{stage} {n}")
        return hook

    kw = dict(imagenet_dir=tree, urls=urls, flickr_key="testkey", flickr_secret="s", flickr_cache=cache,
              flickr_rate=1e6, offline=True, rows_per_shard=2, flickr_options={"backoff_s": 0.01},
              keep_work_dir=True)
    with FlickrStub(photos, fallback=MADRID) as stub:
        kw["flickr_rest_url"] = stub.url
        with pytest.raises(Kill):  # killed in the Flickr stage, after 5 answers
            build_imagenet_geo(out, on_progress=kill_after("flickr", 5), **kw)
        assert not out.exists()
        assert stub.total_calls >= 5
        with pytest.raises(Kill):  # killed again in the shard stage, after 2 shards
            build_imagenet_geo(out, on_progress=kill_after("shards", 2), **kw)
        assert not out.exists()
        work = tmp_path / ".out.building"
        first = sorted((work / "chunks" / "full").glob("*/*.parquet"))
        assert len(first) == 2
        stamps = {p: p.stat().st_mtime_ns for p in first}
        result = build_imagenet_geo(out, **kw)
        calls = dict(stub.calls)
    assert calls["7007"] == 3 and all(n == 1 for p, n in calls.items() if p != "7007"), calls
    for p, t in stamps.items():  # finished shards were not rewritten
        assert p.stat().st_mtime_ns == t
    dd = datasets.load_dataset(str(out))
    ids = [r["image_id"] for _, r in _all_rows(dd)]
    assert len(ids) == len(set(ids)) == len(built["expected"])
    assert result.num_examples == built["result"].num_examples


def test_geo_csv_path_skips_flickr(built, tmp_path):
    csv = tmp_path / "geo.csv"
    lines = ["image_id,latitude,longitude"]
    for w in WNIDS:
        for k, (lat, lon, _) in enumerate(CITIES.values()):
            lines.append(f"{w}_{101 + 2 * k + WNIDS.index(w)},{lat},{lon}")
    lines.append(f"{ODD}_2,,")  # no coordinates: invalid, counted
    csv.write_text("\n".join(lines) + "\n")
    res = build_imagenet_geo(tmp_path / "out", imagenet_dir=built["tree"], geo_csv=csv, config="metadata",
                             offline=True)
    assert res.configs == ("metadata",)
    assert res.flickr is None
    dd = datasets.load_dataset(str(tmp_path / "out"))
    rows = _all_rows(dd)
    assert len(rows) == 2 * len(CITIES)
    for _, r in rows:
        assert "image" not in r
        assert r["country_iso3"] == built["expected"][r["image_id"]]
        assert r["flickr_photo_id"] is None
    assert res.status_counts["invalid"] == 1


def test_builder_class_metadata(built, tmp_path):
    csv = tmp_path / "geo.csv"
    csv.write_text("image_id,latitude,longitude\n" + "\n".join(
        f"{iid},{CITIES['Oslo'][0]},{CITIES['Oslo'][1]}" for iid in built["expected"]) + "\n")
    b = ImageNetGeo(config_name="metadata", data_dir=str(built["tree"]), geo_csv=str(csv), offline=True,
                    cache_dir=str(tmp_path / "hf"))
    b.download_and_prepare()
    n = 0
    for split in b.info.splits:
        ds = b.as_dataset(split=split)
        assert "image" not in ds.column_names
        assert set(ds["country_iso3"]) == {"NOR"}
        assert all(split_of(i) == split for i in ds["image_id"])
        n += len(ds)
    assert n == len(built["expected"])


def test_cli_build_and_info(built, tmp_path, capsys):
    from geoaudit.cli import main

    photos = {k: v for k, v in built["photos"].items() if k != "7007"}  # no slow retries here
    with FlickrStub(photos) as stub:
        rc = main(["dataset", "build", "imagenet-geo", "--imagenet-dir", str(built["tree"]), "--urls",
                   str(built["urls"]), "--flickr-key", "testkey", "--flickr-secret", "s", "--out",
                   str(tmp_path / "out"), "--config", "metadata", "--offline", "--flickr-rate", "1000000",
                   "--flickr-cache", str(tmp_path / "c.sqlite"), "--flickr-rest-url", stub.url])
    assert rc == 0
    assert "Wrote" in capsys.readouterr().out
    rc = main(["dataset", "info", str(tmp_path / "out"), "--out", str(tmp_path / "info")])
    out = capsys.readouterr().out
    assert rc == 0
    assert re.search(r"Rows per split: train \d+, validation \d+, test \d+", out)
    assert "Countries without GDP: PRK" in out
    assert (tmp_path / "info" / "images_per_country.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "info" / "summary.json").read_text())
    assert summary["num_countries"] == 6  # FRA NOR XKX KHM BRA PRK (7007 is "not found" here, not ESP)
    # info works on the full build too
    assert main(["dataset", "info", str(built["out"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == len(built["expected"])


def test_bad_credentials_one_clear_message(built, tmp_path, capsys):
    from geoaudit.cli import main

    with FlickrStub(built["photos"]) as stub:
        with pytest.raises(GeoauditError, match="Flickr rejected the API key or secret"):
            build_imagenet_geo(tmp_path / "out", imagenet_dir=built["tree"], urls=built["urls"], flickr_key="wrong",
                               flickr_secret="s", flickr_cache=tmp_path / "c.sqlite", flickr_rest_url=stub.url,
                               flickr_rate=1e6, offline=True)
        assert stub.http_calls == 1  # stops at the first answer
        rc = main(["dataset", "build", "imagenet-geo", "--imagenet-dir", str(built["tree"]), "--urls",
                   str(built["urls"]), "--flickr-key", "wrong", "--flickr-secret", "s", "--out",
                   str(tmp_path / "out"), "--offline", "--flickr-cache", str(tmp_path / "c.sqlite"),
                   "--flickr-rest-url", stub.url])
    lines = capsys.readouterr().err.strip().splitlines()
    # credentials given on the command line draw one warning (ps shows them), then one error line
    assert any(x.startswith("warning:") and "FLICKR_API_KEY" in x for x in lines)
    err = [x for x in lines if not x.startswith("warning:")]
    assert rc == 2
    assert len(err) == 1 and "Flickr rejected the API key" in err[0] and "--flickr-key" in err[0]


@pytest.mark.parametrize("case, pattern", [
    ("missing_tree", "does not exist"),
    ("parent_of_tree", "pass that folder instead"),
    ("not_imagenet", "ILSVRC2012 train layout"),
    ("missing_urls", "'urls' file .* does not exist"),
    ("malformed_urls", "has no '<image_id> <url>' lines"),
    ("no_key", "need 'flickr_key' and 'flickr_secret'"),
    ("both_sources", "either 'geo_csv'"),
    ("no_source", "A location source is required"),
    ("csv_columns", "has no column 'latitude'"),
    ("csv_empty", "is empty"),
    ("csv_unrelated", "None of the images"),
    ("bad_year", "'gdp_year' parameter must be 'latest'"),
    ("bad_config", "'config' parameter of build_imagenet_geo must be one of 'full', 'metadata'"),
    ("bad_rate", "'flickr_rate' parameter of build_imagenet_geo must be a float in \\(0, inf\\)"),
])
def test_bad_input_one_clear_message(built, tmp_path, case, pattern):
    tree, urls = built["tree"], built["urls"]
    kw = dict(imagenet_dir=tree, geo_csv=None, urls=urls, flickr_key="k", flickr_secret="s", offline=True,
              flickr_cache=tmp_path / "c.sqlite", flickr_rest_url="http://127.0.0.1:9/")
    if case == "missing_tree":
        kw["imagenet_dir"] = tmp_path / "nope"
    elif case == "parent_of_tree":
        kw["imagenet_dir"] = tree.parent
    elif case == "not_imagenet":
        (tmp_path / "cats").mkdir()
        kw["imagenet_dir"] = tmp_path
    elif case == "missing_urls":
        kw["urls"] = tmp_path / "urls.txt"
    elif case == "malformed_urls":
        (tmp_path / "u.txt").write_text("hello world\nfoo\n")
        kw["urls"] = tmp_path / "u.txt"
    elif case == "no_key":
        kw.update(flickr_key=None, flickr_secret="")
    elif case == "both_sources":
        kw["geo_csv"] = urls
    elif case == "no_source":
        kw["urls"] = None
    elif case.startswith("csv_"):
        p = tmp_path / "g.csv"
        p.write_text({"csv_columns": "image_id,lat,lon\nx,1,2\n", "csv_empty": "",
                      "csv_unrelated": "image_id,latitude,longitude\nfoo_1,1,2\n"}[case])
        kw.update(urls=None, geo_csv=p)
    elif case == "bad_year":
        kw["gdp_year"] = "last year"
    elif case == "bad_config":
        kw["config"] = "images"
    elif case == "bad_rate":
        kw["flickr_rate"] = 0
    with pytest.raises(InputError, match=pattern):
        build_imagenet_geo(tmp_path / "out", **kw)


# --- location accuracy, Flickr's country, subsets, tiny builds, output folders -----------------
def _small_tree(root, n_per_class=4, wnids=("n01440764", "n01443537")):
    ids = []
    for w in wnids:
        (root / "train" / w).mkdir(parents=True, exist_ok=True)
        for k in range(n_per_class):
            iid = f"{w}_{k + 1}"
            _jpeg(root / "train" / w / f"{iid}.JPEG", (20 * k + 5) % 250)
            ids.append(iid)
    return root / "train", ids


def test_accuracy_and_flickr_country_exported_and_min_accuracy(tmp_path):
    tree, ids = _small_tree(tmp_path, 2, wnids=("n01440764",))
    # photo 1: street level in Goerlitz, Flickr says Germany; photo 2: country level only
    photos = {"11": (51.15518, 14.98853, 16, "Germany"), "12": (48.8566, 2.3522, 3, "France")}
    urls = tmp_path / "urls.txt"
    urls.write_bytes("\ufeff".encode() + f"{ids[0]}\thttp://farm1.static.flickr.com/1/11_ab.jpg%20\n"
                     f"{ids[1]}\twww.flickr.com/photos/someone/12/\n".encode())
    with FlickrStub(photos) as stub:
        kw = dict(imagenet_dir=tree, urls=urls, flickr_key="testkey", flickr_secret="s", offline=True,
                  flickr_cache=tmp_path / "c.sqlite", flickr_rate=1e6, config="metadata", flickr_rest_url=stub.url,
                  flickr_options={"max_retries": 0})
        r = build_imagenet_geo(tmp_path / "all", **kw)
        r11 = build_imagenet_geo(tmp_path / "acc11", min_accuracy=11, **kw)
        assert stub.total_calls == 2  # the second build reads the cache
    rows = [x for ds in datasets.load_dataset(str(tmp_path / "all"), "metadata").values() for x in ds]
    by_id = {x["image_id"]: x for x in rows}
    assert by_id[ids[0]]["flickr_accuracy"] == 16 and by_id[ids[0]]["flickr_country"] == "DEU"
    assert by_id[ids[0]]["country_iso3"] == "DEU"  # on the Neisse: 1:10m says Poland
    assert by_id[ids[1]]["flickr_accuracy"] == 3 and by_id[ids[1]]["flickr_country"] == "FRA"
    assert sum(r.num_examples.values()) == 2 and sum(r11.num_examples.values()) == 1
    assert r11.status_counts.get("low_accuracy") == 1


def test_per_class_and_synsets_limit_the_lookups(tmp_path):
    tree, ids = _small_tree(tmp_path, 6)
    photos, lines = {}, []
    for k, iid in enumerate(ids):
        photos[str(100 + k)] = (48.8566, 2.3522)
        lines.append(f"{iid}\thttp://farm1.static.flickr.com/1/{100 + k}_ab.jpg")
    urls = tmp_path / "urls.txt"
    urls.write_text("\n".join(lines) + "\n")
    with FlickrStub(photos) as stub:
        r = build_imagenet_geo(tmp_path / "out", imagenet_dir=tree, urls=urls, flickr_key="testkey",
                               flickr_secret="s", offline=True, flickr_cache=tmp_path / "c.sqlite",
                               flickr_rate=1e6, config="metadata", synsets=["n01443537"], per_class=4,
                               flickr_rest_url=stub.url, flickr_options={"max_retries": 0})
        assert stub.total_calls == 4
    assert sum(r.num_examples.values()) == 4
    assert r.extra["per_class"] == 4 and list(r.extra["synsets"]) == ["n01443537"]
    with pytest.raises(InputError, match="'synsets' parameter of build_imagenet_geo must be WordNet ids"):
        build_imagenet_geo(tmp_path / "o2", imagenet_dir=tree, urls=urls, flickr_key="k", flickr_secret="s",
                           synsets=["dog"])


def _csv_build(tmp_path, name, ids, **kw):
    csv = tmp_path / f"{name}.csv"
    csv.write_text("image_id,latitude,longitude\n" + "".join(f"{i},48.8566,2.3522\n" for i in ids))
    return build_imagenet_geo(tmp_path / name, imagenet_dir=tmp_path / "train", geo_csv=csv, offline=True, **kw)


def test_tiny_build_lists_only_present_splits(tmp_path):
    from geoaudit.data._export import split_front_matter

    tree, ids = _small_tree(tmp_path, 40, wnids=("n01440764",))
    keep = [i for i in ids if split_of(i) != "validation"][:6]
    r = _csv_build(tmp_path, "tiny", keep, gdp_year=2019)
    assert r.num_examples["validation"] == 0 and sum(r.num_examples.values()) == 6
    meta, body = split_front_matter((tmp_path / "tiny" / "README.md").read_text(encoding="utf-8"))
    for cfg in meta["configs"]:
        assert [f["split"] for f in cfg["data_files"]] == ["train", "test"]
    assert "license_link" in meta and "license_details" not in meta
    assert "| validation |" not in body and "2019: 6 images" in body
    dd = datasets.load_dataset(str(tmp_path / "tiny"))
    assert set(dd) == {"train", "test"}
    assert {x["gdp_year"] for ds in dd.values() for x in ds} == {2019}


def test_output_folder_is_never_an_unrelated_one(tmp_path, capsys, monkeypatch):
    from geoaudit.cli import main

    tree, ids = _small_tree(tmp_path, 3)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match="not empty and is not an output of geoaudit"):
        _csv_build(tmp_path, "photos", ids)
    assert (other / "holiday.jpg").read_bytes() == b"precious"
    _csv_build(tmp_path, "ok", ids)
    _csv_build(tmp_path, "ok", ids)  # an earlier build of the same kind is replaced
    csv = tmp_path / "ok.csv"
    monkeypatch.chdir(tmp_path / "ok")
    for out in (".", ".."):
        rc = main(["dataset", "build", "imagenet-geo", "--imagenet-dir", str(tree), "--geo-csv", str(csv),
                   "--offline", "--out", out])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "is the current folder, one of its parents" in err[0]
    rc = main(["dataset", "build", "imagenet-geo", "--imagenet-dir", str(tree), "--geo-csv", str(csv),
               "--offline", "--out", str(other)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0]
    assert (other / "holiday.jpg").exists()


def test_info_verify_names_damaged_shard_and_image(tmp_path, capsys):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from geoaudit.cli import main

    tree, ids = _small_tree(tmp_path, 3)
    _csv_build(tmp_path, "good", ids, gdp_year=2019)
    assert main(["dataset", "info", str(tmp_path / "good"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "images decoded" in out and "GDP years: 2019: 6 images" in out
    # an image whose bytes are not an image
    bad = tmp_path / "badimg"
    shutil.copytree(tmp_path / "good", bad)
    shard = sorted((bad / "data" / "full").glob("train-*.parquet"))[0]
    t = pq.read_table(shard)
    imgs = t.column("image").to_pylist()
    imgs[0] = {"bytes": b"not a jpeg", "path": imgs[0]["path"]}
    pq.write_table(t.set_column(t.schema.get_field_index("image"), "image",
                                pa.array(imgs, type=t.schema.field("image").type)), shard)
    assert main(["dataset", "info", str(bad), "--verify"]) == 2
    err = capsys.readouterr().err
    assert f"Image {t.column('image_id')[0].as_py()} (row 0 of" in err and shard.name in err
    # a truncated shard
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "good", cut)
    shard = sorted((cut / "data" / "metadata").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(["dataset", "info", str(cut), "--verify"]) == 2
    assert shard.name in capsys.readouterr().err


def test_build_result_is_immutable_and_summarised(built):
    import dataclasses

    r = built["result"]
    with pytest.raises(TypeError):
        r.num_examples["train"] = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.out_dir = "elsewhere"
    assert "images from" in r.summary() and "GDP year latest" in r.summary()
    assert json.loads(json.dumps(r.to_dict()))["num_examples"] == dict(r.num_examples)
