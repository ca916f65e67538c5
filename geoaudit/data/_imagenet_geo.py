"""The ImageNet geo-location dataset (appendix E of the paper), rebuilt from raw sources.

The ILSVRC2012 train images that came from Flickr, located with ``flickr.photos.geo.getLocation``
(or a CSV of known locations), reverse-geocoded to a country against the Natural Earth
boundaries shipped in geoaudit, and joined with World Bank GDP per capita (NY.GDP.PCAP.CD).

Two ways to build it:

``build_imagenet_geo(out_dir, imagenet_dir=..., ...)``
    Streams Parquet shards plus a Hugging Face dataset card (``README.md``) into ``out_dir``,
    so plain ``datasets.load_dataset(out_dir)`` loads it and the folder can be pushed to the
    Hub as it is.  Resumable: every stage keeps its state in a work folder beside ``out_dir``
    (see :func:`build_imagenet_geo`).

``ImageNetGeo`` (a ``datasets.GeneratorBasedBuilder``)
    The same rows through ``datasets``' own machinery:
    ``ImageNetGeo(config_name="metadata", data_dir=IMAGENET_TRAIN, geo_csv=CSV).download_and_prepare()``
    then ``.as_dataset(split="train")``.

Split: an image goes to train, validation or test from the first 8 bytes of SHA-256 of its
image id read as a fraction ``u`` in [0, 1): ``u < 0.6`` train, ``u < 0.8`` validation,
otherwise test.  It depends on nothing but the id, so it never changes when images are added
or removed, and the three splits are 60/20/20 in expectation.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import datasets

from geoaudit._errors import DependencyError, GeoauditError, InputError
from geoaudit._io import atomic_write_text, replace_dir, to_json
from geoaudit._progress import progress
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

__all__ = ["ImageNetGeo", "ImageNetGeoConfig", "ImageNetGeoBuildResult", "build_imagenet_geo", "split_of",
           "card_template_path"]

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}
CONFIGS = ("full", "metadata")
FORMAT_VERSION = 1  # of the work folder's layout: a resumed build with another version starts over
_WNID_RE = re.compile(r"^n\d{8}$")
_IMAGE_RE = re.compile(r"^(n\d{8}_\d+)\.(?:JPEG|jpeg|jpg|JPG|png|PNG)$")
_CALLER = "build_imagenet_geo"

CITATION = """\
@inproceedings{hua2022human,
  title  = {Human Imperceptible Attacks and Applications to Improve Fairness},
  author = {Hua, Xinru and Xu, Huanzhong and Blanchet, Jose and Nguyen, Viet Anh},
  note   = {The ImageNet with geo-location dataset is described in its appendix E},
  year   = {2022}
}"""
DESCRIPTION = ("ILSVRC2012 train images that came from Flickr, located with the Flickr API, reverse-geocoded "
               "to a country (Natural Earth 1:50m boundaries) and joined with World Bank GDP per capita "
               "(NY.GDP.PCAP.CD); split 60/20/20 by a hash of the image id.")


def split_of(image_id: str) -> str:
    """The split of an image: SHA-256 of its id -> u in [0, 1); train < 0.6 <= validation < 0.8 <= test.

    Examples
    --------
    >>> split_of("n01440764_10026") in ("train", "validation", "test")
    True
    """
    u = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return "train" if u < 0.6 else "validation" if u < 0.8 else "test"


def card_template_path() -> Path:
    """The dataset card's source, ``dataset_cards/imagenet_geo.md``."""
    here = Path(__file__).resolve()
    for p in (here.parent / "cards" / "imagenet_geo.md", here.parents[2] / "dataset_cards" / "imagenet_geo.md"):
        if p.is_file():
            return p
    raise DependencyError("The dataset card source dataset_cards/imagenet_geo.md is missing from this "
                          "installation of geoaudit.")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Inputs:
    imagenet_dir: Path
    urls: Optional[Path]
    geo_csv: Optional[Path]
    flickr_key: Optional[str]
    flickr_secret: Optional[str]
    flickr_cache: Optional[Path]
    flickr_rate: float
    flickr_rest_url: Optional[str]
    gdp_year: Union[str, int]
    offline: bool
    tolerance_km: float
    max_failed_lookups: int
    flickr_options: Optional[dict] = None

    @property
    def source(self):
        return "geo_csv" if self.geo_csv is not None else "flickr"

    def fingerprint(self, config, rows_per_shard):
        def stamp(p):
            if p is None:
                return None
            st = p.stat()
            return [str(p.resolve()), st.st_size, int(st.st_mtime)]

        key = {"v": FORMAT_VERSION, "imagenet_dir": str(self.imagenet_dir.resolve()), "urls": stamp(self.urls),
               "geo_csv": stamp(self.geo_csv), "gdp_year": str(self.gdp_year), "offline": self.offline,
               "tolerance_km": self.tolerance_km, "config": config, "rows_per_shard": rows_per_shard}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _check_file(name, value, what):
    p = Path(value)
    if not p.exists():
        raise InputError(f"The {name!r} file {str(p)!r} does not exist ({what}).")
    if not p.is_file():
        raise InputError(f"The {name!r} parameter must be a file ({what}). Got the folder {str(p)!r} instead.")
    return p


def _wnid_dirs(root: Path):
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and _WNID_RE.match(e.name))
    except OSError as e:
        raise InputError(f"Cannot read the ImageNet folder {str(root)!r}: {e.strerror or e}.") from e


def _check_imagenet_dir(value):
    if value is None:
        raise InputError("The 'imagenet_dir' parameter is required: the ILSVRC2012 train folder "
                         "(<wnid>/<wnid>_<n>.JPEG, e.g. n01440764/n01440764_10026.JPEG).")
    root = Path(value)
    if not root.exists():
        raise InputError(f"The ImageNet folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise InputError(f"The 'imagenet_dir' parameter must be a folder. Got the file {str(root)!r} instead.")
    wnids = _wnid_dirs(root)
    if not wnids:
        hint = ""
        for sub in ("train", "ILSVRC2012_img_train", "Data/CLS-LOC/train", "ILSVRC/Data/CLS-LOC/train"):
            if (root / sub).is_dir() and _wnid_dirs(root / sub):
                hint = f" It has {str(root / sub)!r}, which does: pass that folder instead."
                break
        raise InputError(
            f"The ImageNet folder {str(root)!r} does not have the ILSVRC2012 train layout: expected one "
            f"sub-folder per class named by its WordNet id, holding <wnid>_<n>.JPEG files "
            f"(e.g. n01440764/n01440764_10026.JPEG).{hint}"
        )
    from geoaudit.data._schema import imagenet_classes

    known = set(imagenet_classes()[0])
    if not any(w in known for w in wnids):
        raise InputError(f"None of the {len(wnids)} class folders in {str(root)!r} is one of the 1000 ILSVRC2012 "
                         f"classes (e.g. n01440764); found {', '.join(wnids[:3])}...")
    return root


def _make_inputs(*, imagenet_dir, urls, flickr_key, flickr_secret, geo_csv, flickr_cache, flickr_rate,
                 flickr_rest_url, gdp_year, offline, tolerance_km, max_failed_lookups, caller, flickr_options=None):
    from geoaudit.data._gdp import parse_gdp_year

    root = _check_imagenet_dir(imagenet_dir)
    if geo_csv is not None and urls is not None:
        raise InputError("Pass either 'geo_csv' (known locations) or 'urls' with the Flickr key and secret, not both.")
    if geo_csv is None and urls is None:
        raise InputError("A location source is required: 'urls' (the ImageNet URL list) with 'flickr_key' and "
                         "'flickr_secret', or 'geo_csv' (a CSV with image_id, latitude, longitude).")
    if urls is not None:
        missing = [n for n, v in (("flickr_key", flickr_key), ("flickr_secret", flickr_secret))
                   if not (isinstance(v, str) and v.strip())]
        if missing:
            raise InputError(f"Flickr look-ups need {' and '.join(repr(m) for m in missing)} (a Flickr API key and "
                             "its secret); or pass 'geo_csv' with known locations instead of 'urls'.")
    bad = sorted(set(flickr_options or {}) - {"max_retries", "backoff_s", "max_backoff_s", "timeout_s",
                                                    "max_consecutive_failures"})
    if bad:
        raise InputError(f"The 'flickr_options' parameter of {caller} accepts max_retries, backoff_s, max_backoff_s, "
                         f"timeout_s and max_consecutive_failures. Got {', '.join(map(repr, bad))} instead.")
    return _Inputs(
        imagenet_dir=root,
        urls=_check_file("urls", urls, "the ImageNet URL list: <image_id><TAB><url> per line") if urls is not None else None,
        geo_csv=_check_file("geo_csv", geo_csv, "a CSV with columns image_id, latitude, longitude") if geo_csv is not None else None,
        flickr_key=flickr_key, flickr_secret=flickr_secret,
        flickr_cache=Path(flickr_cache) if flickr_cache is not None else None,
        flickr_rate=check_interval("flickr_rate", flickr_rate, 0, None, caller=caller, closed="neither"),
        flickr_rest_url=flickr_rest_url,
        gdp_year=parse_gdp_year(gdp_year),
        offline=bool(offline),
        tolerance_km=check_interval("tolerance_km", tolerance_km, 0, 1000, caller=caller),
        max_failed_lookups=check_interval("max_failed_lookups", max_failed_lookups, 0, None, caller=caller,
                                          integer=True),
        flickr_options=dict(flickr_options or {}),
    )


# --------------------------------------------------------------------------------------------
# the work database: every stage's state, so a killed build resumes where it stopped
# --------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY, wnid TEXT NOT NULL, relpath TEXT NOT NULL, split TEXT NOT NULL,
    photo_id TEXT, status TEXT, latitude REAL, longitude REAL,
    iso3 TEXT, country_name TEXT, method TEXT);
CREATE INDEX IF NOT EXISTS images_split ON images (split, iso3, image_id);
CREATE TABLE IF NOT EXISTS chunks (
    config TEXT, split TEXT, k INTEGER, rows INTEGER, nbytes INTEGER, corrupt TEXT,
    PRIMARY KEY (config, split, k));
"""

# statuses of an image in the work database
#   not_listed: not in the URL list / geo CSV; not_flickr: its URL is not a Flickr photo;
#   pending: awaiting a Flickr answer; ok / no_location / not_found: Flickr's answer
#   (or the CSV's); invalid: the CSV's coordinates are missing; lookup_failed: transient
#   failures outlasted the retries (only with max_failed_lookups > 0)


class _Work:
    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.dir = path
        self.db = sqlite3.connect(str(path / "work.sqlite"))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.db.commit()

    def get(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key, value):
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        self.db.commit()

    def close(self):
        self.db.close()


def _open_work(work_dir: Path, fingerprint: str) -> _Work:
    if (work_dir / "work.sqlite").exists():
        w = _Work(work_dir)
        try:
            old = w.get("fingerprint")
        except sqlite3.DatabaseError:
            old = None
        if old == fingerprint:
            log.info("Reusing the work folder %s: finished stages and shards are skipped.", work_dir)
            return w
        w.close()
        log.warning("The inputs or options differ from the interrupted build in %s; starting over "
                    "(cached Flickr answers are kept).", work_dir)
        shutil.rmtree(work_dir)
    w = _Work(work_dir)
    w.set("fingerprint", fingerprint)
    return w


def _stage_index(w: _Work, inputs: _Inputs):
    """Scan ``<wnid>/<wnid>_<n>.JPEG`` into the images table."""
    if w.get("stage_index"):
        return
    from geoaudit.data._schema import imagenet_classes

    known = set(imagenet_classes()[0])
    root = inputs.imagenet_dir
    wnids = _wnid_dirs(root)
    unknown = [x for x in wnids if x not in known]
    if unknown:
        log.warning("Ignoring %d class folders that are not ILSVRC2012 classes (e.g. %s).", len(unknown), unknown[0])
    w.db.execute("DELETE FROM images")
    n = ignored = 0
    for wnid in progress([x for x in wnids if x in known], desc="Indexing ImageNet", unit="class"):
        batch = []
        for e in os.scandir(root / wnid):
            m = _IMAGE_RE.match(e.name)
            if m and m.group(1).startswith(wnid + "_") and e.is_file():
                iid = m.group(1)
                batch.append((iid, wnid, f"{wnid}/{e.name}", split_of(iid)))
            else:
                ignored += 1
        w.db.executemany("INSERT OR IGNORE INTO images (image_id, wnid, relpath, split) VALUES (?, ?, ?, ?)", batch)
        n += len(batch)
    if n == 0:
        raise InputError(f"The ImageNet folder {str(root)!r} has class folders but no <wnid>_<n>.JPEG images in them.")
    if ignored:
        log.info("Ignored %d files whose names are not <wnid>_<n>.JPEG.", ignored)
    w.db.commit()
    w.set("n_tree_images", n)
    w.set("stage_index", True)
    log.info("Indexed %d images in %d classes.", n, len([x for x in wnids if x in known]))


def _stage_source_urls(w: _Work, inputs: _Inputs):
    """Stream the URL list; keep the photo ids of the images in the tree."""
    from geoaudit.data._flickr import photo_id_from_url

    if w.get("stage_source"):
        return
    path = inputs.urls
    good = bad = 0
    batch_pid, batch_other = [], []

    def flush():
        w.db.executemany("UPDATE images SET photo_id=?, status='pending' WHERE image_id=?", batch_pid)
        w.db.executemany("UPDATE images SET status='not_flickr' WHERE image_id=?", batch_other)
        batch_pid.clear()
        batch_other.clear()

    size = path.stat().st_size
    with open(path, "rb") as f, progress(total=size, desc="Reading the URL list", unit="B", unit_scale=True) as bar:
        for raw in f:
            bar.update(len(raw))
            # the real list has a few lines in odd encodings: decode leniently, count what fails
            line = raw.decode("utf-8", errors="replace").strip()
            if not line or line.startswith("#"):
                continue
            parts = re.split(r"\s+", line, maxsplit=1)
            if len(parts) != 2 or not parts[1].lower().startswith(("http://", "https://")):
                bad += 1
                continue
            good += 1
            iid, url = parts
            pid = photo_id_from_url(url)
            if pid is not None:
                batch_pid.append((pid, iid))
            else:
                batch_other.append((iid,))
            if len(batch_pid) + len(batch_other) >= 20000:
                flush()
    flush()
    if good == 0:
        raise InputError(f"The URL list {str(path)!r} has no '<image_id> <url>' lines (e.g. "
                         "'n01440764_10026<TAB>http://farm1.static.flickr.com/123/4567890_abcdef.jpg').")
    if bad:
        log.warning("Skipped %d malformed lines of the URL list %s.", bad, path)
    w.db.execute("UPDATE images SET status='not_listed' WHERE status IS NULL")
    w.db.commit()
    listed = w.db.execute("SELECT COUNT(*) FROM images WHERE status IN ('pending', 'not_flickr')").fetchone()[0]
    if listed == 0:
        raise InputError(f"None of the images in {str(inputs.imagenet_dir)!r} is in the URL list {str(path)!r}; "
                         "is it the list for ILSVRC2012 (image ids like n01440764_10026)?")
    w.set("url_lines", good)
    w.set("url_bad_lines", bad)
    w.set("stage_source", True)


def _stage_source_csv(w: _Work, inputs: _Inputs):
    """Read known locations from the geo CSV (in chunks)."""
    import numpy as np
    import pandas as pd

    from geoaudit._validation import check_columns

    if w.get("stage_source"):
        return
    path = inputs.geo_csv
    n = 0
    try:
        reader = pd.read_csv(path, dtype={"image_id": str, "flickr_photo_id": str}, chunksize=100_000)
        for chunk in reader:
            check_columns(chunk.columns, ("image_id", "latitude", "longitude"), source=f"The geo CSV {str(path)!r}")
            lat = pd.to_numeric(chunk["latitude"], errors="coerce").to_numpy(dtype=float)
            lon = pd.to_numeric(chunk["longitude"], errors="coerce").to_numpy(dtype=float)
            pid = chunk["flickr_photo_id"] if "flickr_photo_id" in chunk else pd.Series([None] * len(chunk))
            ok = np.isfinite(lat) & np.isfinite(lon)
            rows = [(None if pd.isna(p) else str(p), "ok" if o else "invalid",
                     float(a) if o else None, float(b) if o else None, str(i).strip())
                    for i, p, o, a, b in zip(chunk["image_id"], pid, ok, lat, lon)]
            w.db.executemany("UPDATE images SET photo_id=?, status=?, latitude=?, longitude=? WHERE image_id=?", rows)
            n += len(chunk)
    except pd.errors.EmptyDataError:
        raise InputError(f"The geo CSV {str(path)!r} is empty; expected columns image_id, latitude, longitude.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"The geo CSV {str(path)!r} is not a readable CSV ({e}); expected columns "
                         "image_id, latitude, longitude.") from None
    w.db.execute("UPDATE images SET status='not_listed' WHERE status IS NULL")
    w.db.commit()
    listed = w.db.execute("SELECT COUNT(*) FROM images WHERE status != 'not_listed'").fetchone()[0]
    if n and listed == 0:
        raise InputError(f"None of the images in {str(inputs.imagenet_dir)!r} is in the geo CSV {str(path)!r}; "
                         "its image_id column should hold ids like n01440764_10026.")
    w.set("csv_rows", n)
    w.set("stage_source", True)


def _stage_flickr(w: _Work, inputs: _Inputs, on_progress):
    from geoaudit.data._flickr import FlickrGeoLocator

    if w.get("stage_flickr"):
        return
    locator = FlickrGeoLocator(inputs.flickr_key, inputs.flickr_secret, cache=inputs.flickr_cache,
                               rate_per_hour=inputs.flickr_rate, rest_url=inputs.flickr_rest_url,
                               **(inputs.flickr_options or {}))
    try:
        total = w.db.execute("SELECT COUNT(DISTINCT photo_id) FROM images WHERE status='pending'").fetchone()[0]
        # a lazy cursor: millions of ids never sit in memory at once
        ids = (r[0] for r in w.db.execute(
            "SELECT DISTINCT photo_id FROM images WHERE status='pending' ORDER BY photo_id"))
        done = [0]

        def answered(pid, status):
            done[0] += 1
            if on_progress is not None:
                on_progress("flickr", done[0])

        rate_note = f" at most {inputs.flickr_rate:g} calls/hour"
        log.info("Flickr: locating %d photos (%s);%s.", total, locator.cache.path, rate_note)
        stats = locator.locate(ids, total=total, on_answer=answered)
        log.info("Flickr: %d calls, %d retries, answers %s.", stats.calls, stats.retries, stats.statuses)
        w.set("flickr_stats", stats.to_dict())
        # copy the answers into the work database
        w.db.execute("ATTACH DATABASE ? AS fc", (str(locator.cache.path),))
        w.db.execute("UPDATE images SET status=a.status, latitude=a.latitude, longitude=a.longitude "
                     "FROM fc.answers AS a WHERE a.photo_id = images.photo_id AND images.status='pending'")
        w.db.commit()
        w.db.execute("DETACH DATABASE fc")
    finally:
        locator.close()
    failed = len(stats.failed)
    if failed > inputs.max_failed_lookups:
        raise GeoauditError(
            f"{failed} Flickr look-ups still failed after retries (e.g. photo {stats.failed[0]}); the "
            f"{stats.calls - failed} answers obtained are cached. Re-run the same command to retry them "
            "(or allow some with max_failed_lookups / --max-failed-lookups)."
        )
    w.db.execute("UPDATE images SET status='lookup_failed' WHERE status='pending'")
    w.db.commit()
    w.set("stage_flickr", True)


def _stage_geocode(w: _Work, inputs: _Inputs, chunk=50_000):
    from geoaudit.data._geocode import reverse_geocode

    if w.get("stage_geocode"):
        return
    total = w.db.execute("SELECT COUNT(*) FROM images WHERE status='ok' AND method IS NULL").fetchone()[0]
    with progress(total=total, desc="Reverse geocoding", unit="image") as bar:
        while True:
            rows = w.db.execute("SELECT rowid, latitude, longitude FROM images WHERE status='ok' AND method IS NULL "
                                "LIMIT ?", (chunk,)).fetchall()
            if not rows:
                break
            rid, lat, lon = zip(*rows)
            g = reverse_geocode(lat, lon, tolerance_km=inputs.tolerance_km)
            w.db.executemany("UPDATE images SET iso3=?, country_name=?, method=? WHERE rowid=?",
                             list(zip(g["country_iso3"], g["country_name"], g["method"], rid)))
            w.db.commit()
            bar.update(len(rows))
    w.set("stage_geocode", True)


def _stage_gdp(w: _Work, inputs: _Inputs):
    """Resolve GDP once and keep it, so a resumed build uses the same numbers throughout."""
    from geoaudit.data._gdp import resolve_gdp

    got = w.get("gdp")
    if got is not None:
        return got
    table, provenance = resolve_gdp(inputs.gdp_year, source="auto", offline=inputs.offline)
    gdp = {}
    for iso3, r in table.iterrows():
        usd = float(r["gdp_per_capita_usd"]) if r["gdp_per_capita_usd"] == r["gdp_per_capita_usd"] else None
        year = int(r["gdp_year"]) if usd is not None else None
        gdp[iso3] = [r["country_name"], usd, year]
    got = {"table": gdp, "provenance": provenance}
    w.set("gdp", got)
    return got


# --------------------------------------------------------------------------------------------
# rows -> examples
# --------------------------------------------------------------------------------------------
_ROW_SQL = ("SELECT image_id, wnid, relpath, photo_id, latitude, longitude, iso3, country_name FROM images "
            "WHERE split=? AND iso3 IS NOT NULL ORDER BY image_id")


def _read_image(path: Path):
    """(bytes, None) for a decodable image, (None, reason) otherwise."""
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (64, 64))  # JPEG DCT scaling: decodes every block, 10x faster
            im.load()
    except Exception as e:  # PIL raises many types for broken files
        msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
        return None, f"corrupt: {type(e).__name__}: {msg}"
    return data, None


def _example(row, gdp_table, wnid_index, image=None):
    iid, wnid, relpath, pid, lat, lon, iso3, ne_name = row
    name, usd, year = gdp_table.get(iso3, [None, None, None])
    ex = {
        "label": wnid_index[wnid],
        "wnid": wnid,
        "image_id": iid,
        "flickr_photo_id": pid,
        "latitude": lat,
        "longitude": lon,
        "country_iso3": iso3,
        "country_name": name or ne_name,
        "gdp_per_capita_usd": usd,
        "gdp_year": year,
        "log_gdp_per_capita": math.log(usd) if usd and usd > 0 else None,
    }
    if image is not None:
        ex = {"image": {"bytes": image, "path": relpath}, **ex}
    return ex


def _iter_rows(w: _Work, split, offset=0, limit=-1):
    return w.db.execute(_ROW_SQL + " LIMIT ? OFFSET ?", (split, limit, offset))


def _iter_examples(w: _Work, inputs: _Inputs, split, with_image, gdp, *, offset=0, limit=-1, corrupt=None):
    """Yield ``(image_id, example)`` for a split (or a slice of it); corrupt images are skipped
    and appended to ``corrupt`` as ``(image_id, reason)``."""
    from geoaudit.data._schema import imagenet_classes

    wnid_index = {x: i for i, x in enumerate(imagenet_classes()[0])}
    table = gdp["table"]
    for row in _iter_rows(w, split, offset, limit).fetchall() if limit >= 0 else _iter_rows(w, split):
        data, err = _read_image(inputs.imagenet_dir / row[2])
        if err is not None:
            log.warning("Skipping image %s (%s): %s", row[0], row[2], err)
            if corrupt is not None:
                corrupt.append((row[0], err))
            continue
        yield row[0], _example(row, table, wnid_index, data if with_image else None)


def _prepare(w: _Work, inputs: _Inputs, on_progress=None):
    """Stages 1-4 (index, locations, Flickr, geocoding) and GDP; each is skipped once done."""
    _stage_index(w, inputs)
    if inputs.source == "flickr":
        _stage_source_urls(w, inputs)
        _stage_flickr(w, inputs, on_progress)
    else:
        _stage_source_csv(w, inputs)
    _stage_geocode(w, inputs)
    return _stage_gdp(w, inputs)


# --------------------------------------------------------------------------------------------
# build: Parquet shards + card
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageNetGeoBuildResult:
    """What a build wrote and counted.

    Attributes
    ----------
    out_dir : str
        The dataset folder.
    configs : tuple of str
        Configurations written (``full`` and ``metadata``, or ``metadata`` alone).
    num_examples : dict
        Rows per split.
    images_per_country : dict
        ISO3 -> rows, all splits, descending.
    countries_without_gdp : tuple of str
        Countries kept in the dataset whose GDP per capita the World Bank does not have.
    status_counts : dict
        Images of the ImageNet tree by location status (ok, no_location, not_found, ...).
    geocode_counts : dict
        Located images by geocoding method (within, nearest, unassigned, invalid).
    corrupt_images : tuple
        ``(image_id, reason)`` of images skipped because they could not be read.
    gdp_source : str
        Where GDP came from.
    flickr : dict or None
        Flickr stage statistics.
    elapsed_s : float
    """

    out_dir: str
    configs: tuple
    num_examples: dict
    images_per_country: dict
    countries_without_gdp: tuple
    status_counts: dict
    geocode_counts: dict
    corrupt_images: tuple
    gdp_source: str
    gdp_year: str
    flickr: Optional[dict] = None
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def num_countries(self):
        return len(self.images_per_country)

    def to_dict(self):
        return {"out_dir": self.out_dir, "configs": list(self.configs), "num_examples": dict(self.num_examples),
                "num_countries": self.num_countries, "images_per_country": dict(self.images_per_country),
                "countries_without_gdp": list(self.countries_without_gdp),
                "status_counts": dict(self.status_counts), "geocode_counts": dict(self.geocode_counts),
                "corrupt_images": [list(c) for c in self.corrupt_images], "gdp_source": self.gdp_source,
                "gdp_year": self.gdp_year, "flickr": self.flickr, "elapsed_s": float(self.elapsed_s),
                **self.extra}


def _chunk_dir(w: _Work, config, split, k):
    return w.dir / "chunks" / config / f"{split}-{k:05d}"


def _write_chunks(w: _Work, inputs: _Inputs, gdp, config, rows_per_shard, on_progress):
    """Write each split in chunks of ``rows_per_shard`` candidate rows; a finished chunk is
    recorded in the work database and never rewritten."""
    from geoaudit.data._export import ParquetShardWriter
    from geoaudit.data._schema import geo_features, imagenet_classes

    feats = geo_features(imagenet_classes()[1], with_image=config == "full")
    plan = {}
    for split in SPLITS:
        n = w.db.execute("SELECT COUNT(*) FROM images WHERE split=? AND iso3 IS NOT NULL", (split,)).fetchone()[0]
        plan[split] = max(1, math.ceil(n / rows_per_shard))
    done = {(s, k) for s, k in w.db.execute("SELECT split, k FROM chunks WHERE config=?", (config,))}
    total = sum(plan.values())
    n_done = len(done)
    if done:
        log.info("%d of %d shards were already written.", len(done), total)
    with progress(total=total, initial=len(done), desc=f"Writing shards ({config})", unit="shard") as bar:
        for split in SPLITS:
            for k in range(plan[split]):
                if (split, k) in done:
                    continue
                cdir = _chunk_dir(w, config, split, k)
                if cdir.exists():  # a chunk interrupted mid-way: redo it whole
                    shutil.rmtree(cdir)
                corrupt = []
                writer = ParquetShardWriter(w.dir, split, feats, rows_per_shard=10 ** 9,
                                            data_dir=str(cdir.relative_to(w.dir)))
                with writer:
                    batch = []
                    for _, ex in _iter_examples(w, inputs, split, config == "full", gdp,
                                                offset=k * rows_per_shard, limit=rows_per_shard, corrupt=corrupt):
                        batch.append(ex)
                        if len(batch) >= 64:  # bounded memory: 64 images in flight
                            writer.write_batch({c: [e[c] for e in batch] for c in feats})
                            batch.clear()
                    if batch:
                        writer.write_batch({c: [e[c] for e in batch] for c in feats})
                w.db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                             (config, split, k, writer.num_rows, writer.num_bytes, json.dumps(corrupt)))
                w.db.commit()
                n_done += 1
                bar.update(1)
                if on_progress is not None:
                    on_progress("shards", n_done)
    return plan


def _finalize(w: _Work, inputs: _Inputs, gdp, config, plan, out_dir: Path, t0, rows_per_shard):
    """Assemble the output in a staging folder, write the card last, move it into place."""
    import pyarrow.parquet as pq

    from geoaudit.data._export import ParquetShardWriter, write_dataset_card
    from geoaudit.data._schema import geo_features, imagenet_classes

    names = imagenet_classes()[1]
    stage = w.dir / "staging"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    num_examples, num_bytes, chunk_bytes, corrupt = {}, {}, {}, []
    configs, infos = {}, {}
    meta_feats = geo_features(names, with_image=False)
    for s, k, rows, nb, c in w.db.execute("SELECT split, k, rows, nbytes, corrupt FROM chunks WHERE config=? "
                                          "ORDER BY split, k", (config,)):
        num_examples[s] = num_examples.get(s, 0) + rows
        chunk_bytes[s] = chunk_bytes.get(s, 0) + nb
        corrupt.extend(tuple(x) for x in json.loads(c))
    num_examples = {s: num_examples.get(s, 0) for s in SPLITS}
    chunk_files = {s: [next(_chunk_dir(w, config, s, k).glob("*.parquet")) for k in range(plan[s])] for s in SPLITS}
    if config == "full":
        (stage / "data" / "full").mkdir(parents=True)
        for s in SPLITS:
            n = len(chunk_files[s])
            for k, src in enumerate(chunk_files[s]):
                dst = stage / "data" / "full" / f"{s}-{k:05d}-of-{n:05d}.parquet"
                try:
                    os.link(src, dst)  # the chunk stays, so finalizing again after a kill still works
                except OSError:
                    shutil.copy2(src, dst)
        configs["full"] = {s: f"data/full/{s}-*.parquet" for s in SPLITS}
        infos["full"] = {"features": geo_features(names, with_image=True), "num_examples": num_examples,
                         "num_bytes": {s: chunk_bytes.get(s, 0) for s in SPLITS}}
    # metadata: every config's rows without image bytes, consolidated into few shards
    meta_cols = list(meta_feats)
    for s in SPLITS:
        with ParquetShardWriter(stage, s, meta_feats, rows_per_shard=max(rows_per_shard, 200_000),
                                data_dir="data/metadata") as mw:
            for src in chunk_files[s]:
                for rb in pq.ParquetFile(src).iter_batches(batch_size=10_000, columns=meta_cols):
                    mw.write_table(rb)
        num_bytes[s] = mw.num_bytes
    configs["metadata"] = {s: f"data/metadata/{s}-*.parquet" for s in SPLITS}
    infos["metadata"] = {"features": meta_feats, "num_examples": num_examples, "num_bytes": num_bytes}

    result = _summarize(w, inputs, gdp, config, out_dir, num_examples, corrupt, t0)
    write_build_log(stage, result)
    write_dataset_card(stage, template=card_template_path(), configs=configs, dataset_infos=infos,
                       num_examples=num_examples, values=_card_values(result),
                       default_config="full" if config == "full" else None)
    replace_dir(stage, out_dir)
    return result


def write_build_log(folder, result):
    atomic_write_text(Path(folder) / "build_log.json", to_json(result.to_dict()) + "\n")


def _summarize(w, inputs, gdp, config, out_dir, num_examples, corrupt, t0):
    corrupt_ids = {c[0] for c in corrupt}
    per_country = {}
    for iso3, iid in w.db.execute("SELECT iso3, image_id FROM images WHERE iso3 IS NOT NULL"):
        if iid not in corrupt_ids:
            per_country[iso3] = per_country.get(iso3, 0) + 1
    per_country = dict(sorted(per_country.items(), key=lambda kv: (-kv[1], kv[0])))
    no_gdp = tuple(sorted(c for c in per_country if (gdp["table"].get(c) or [None, None])[1] is None))
    status = dict(w.db.execute("SELECT COALESCE(status, 'none'), COUNT(*) FROM images GROUP BY status "
                               "ORDER BY COUNT(*) DESC").fetchall())
    methods = dict(w.db.execute("SELECT method, COUNT(*) FROM images WHERE method IS NOT NULL GROUP BY method "
                                "ORDER BY COUNT(*) DESC").fetchall())
    return ImageNetGeoBuildResult(
        out_dir=str(out_dir), configs=("full", "metadata") if config == "full" else ("metadata",),
        num_examples=num_examples, images_per_country=per_country, countries_without_gdp=no_gdp,
        status_counts=status, geocode_counts=methods, corrupt_images=tuple(sorted(corrupt)),
        gdp_source=gdp["provenance"], gdp_year=str(inputs.gdp_year), flickr=w.get("flickr_stats"),
        elapsed_s=time.monotonic() - t0,
        extra={"location_source": "geo_csv" if inputs.source == "geo_csv" else "flickr",
               "n_tree_images": w.get("n_tree_images"),
               "tolerance_km": inputs.tolerance_km,
               "split_rule": "sha256(image_id)[:8] as u in [0,1): train u<0.6, validation u<0.8, test otherwise",
               "built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())},
    )


def _card_values(r: ImageNetGeoBuildResult):
    total = sum(r.num_examples.values())
    rows = "\n".join(f"| {i + 1} | {c} | {n:,} | {100.0 * n / total:.1f}% |"
                     for i, (c, n) in enumerate(list(r.images_per_country.items())[:15])) if total else ""
    top = list(r.images_per_country.values())
    share3 = 100.0 * sum(top[:3]) / total if total else 0.0
    geo = r.geocode_counts
    return {
        "num_images": f"{total:,}",
        "num_countries": str(r.num_countries),
        "num_train": f"{r.num_examples['train']:,}",
        "num_validation": f"{r.num_examples['validation']:,}",
        "num_test": f"{r.num_examples['test']:,}",
        "top_countries_table": ("| rank | country | images | share |\n| --- | --- | --- | --- |\n" + rows) if rows
        else "(no images)",
        "top3_share": f"{share3:.1f}%",
        "countries_without_gdp": ", ".join(r.countries_without_gdp) or "none",
        "gdp_source": r.gdp_source,
        "gdp_year": r.gdp_year,
        "location_source": ("the Flickr API (flickr.photos.geo.getLocation)" if r.extra["location_source"] == "flickr"
                            else "a CSV of known locations (image_id, latitude, longitude)"),
        "n_within": f"{geo.get('within', 0):,}",
        "n_nearest": f"{geo.get('nearest', 0):,}",
        "n_unassigned": f"{geo.get('unassigned', 0) + geo.get('invalid', 0):,}",
        "tolerance_km": f"{r.extra['tolerance_km']:g}",
        "n_corrupt": str(len(r.corrupt_images)),
        "built_at": r.extra["built_at"],
        "configs_written": ("`full` (default) and `metadata`" if "full" in r.configs
                            else "`metadata` only (no image bytes)"),
    }


def default_work_dir(out_dir) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.building"


def build_imagenet_geo(out_dir, *, imagenet_dir, urls=None, flickr_key=None, flickr_secret=None, geo_csv=None,
                       config="full", gdp_year="latest", offline=False, flickr_rate=3600.0, flickr_cache=None,
                       flickr_rest_url=None, tolerance_km=25.0, rows_per_shard=1000, max_failed_lookups=0,
                       flickr_options=None, work_dir=None, keep_work_dir=False,
                       on_progress=None) -> ImageNetGeoBuildResult:
    """Build the ImageNet geo-location dataset into ``out_dir`` (Parquet shards + dataset card).

    The folder loads with plain ``datasets.load_dataset(out_dir)`` (config ``full``, the
    default, or ``datasets.load_dataset(out_dir, "metadata")``) and can be pushed to the Hub
    as it is.

    Parameters
    ----------
    out_dir : str or Path
        The dataset folder to write (replaced atomically when the build finishes).
    imagenet_dir : str or Path
        The ILSVRC2012 train folder: ``<wnid>/<wnid>_<n>.JPEG``.
    urls : str or Path, optional
        The ImageNet URL list (``<image_id><TAB><url>`` per line); needs ``flickr_key`` and
        ``flickr_secret``.  Flickr URLs carry the photo id that is looked up.
    flickr_key, flickr_secret : str, optional
        Flickr API credentials.
    geo_csv : str or Path, optional
        Instead of ``urls``: a CSV with columns image_id, latitude, longitude (and optionally
        flickr_photo_id); skips Flickr.
    config : {"full", "metadata"}
        "full" writes images and metadata (configs ``full`` and ``metadata``); "metadata"
        writes no image bytes (ImageNet images may not be redistributed; metadata can be).
    gdp_year : "latest" or int
        World Bank year, or the latest year with a value per country.
    offline : bool
        Do not call the World Bank API: GDP comes from the snapshot shipped with geoaudit
        (a message says so).  Otherwise the API is tried first, with the snapshot as fallback.
    flickr_rate : float
        Flickr calls per hour (Flickr allows 3,600 per key).
    flickr_cache : str or Path, optional
        SQLite cache of Flickr answers (default ``~/.cache/geoaudit/flickr_geo.sqlite``).
    flickr_rest_url : str, optional
        Flickr's REST endpoint (tests point it at a local server).
    tolerance_km : float
        Coastal tolerance of the reverse geocoding (see ``reverse_geocode``).
    rows_per_shard : int
        Images per Parquet shard of the ``full`` config (~110 MB at ImageNet's size).
    max_failed_lookups : int
        Flickr look-ups allowed to fail for good (after retries) before the build stops
        and asks for a re-run; those photos are then counted as ``lookup_failed``.
    flickr_options : dict, optional
        More keyword arguments of :class:`~geoaudit.data._flickr.FlickrGeoLocator`
        (``max_retries``, ``backoff_s``, ``max_backoff_s``, ``timeout_s``).
    work_dir : str or Path, optional
        Where the resumable state lives (default ``.<out_dir name>.building`` beside
        ``out_dir``); removed after a successful build unless ``keep_work_dir``.
    on_progress : callable, optional
        ``on_progress(stage, n_done)`` after each Flickr answer ("flickr") and each finished
        shard ("shards").

    Returns
    -------
    ImageNetGeoBuildResult

    Notes
    -----
    Resumable: the work folder holds a SQLite database with each stage's state (the tree
    index, the locations, the Flickr answers copied from the Flickr cache, the countries,
    the GDP table used and each finished shard).  A killed build re-run with the same
    arguments skips finished stages and shards, repeats no Flickr call, and writes the
    card last before moving the finished folder into place, so ``out_dir`` is either the
    old complete dataset or the new complete one.  Memory is bounded by one batch of 64
    images plus the 50,000-point geocoding chunk, whatever the number of images.
    """
    t0 = time.monotonic()
    check_options("config", config, CONFIGS, caller=_CALLER)
    rows_per_shard = check_interval("rows_per_shard", rows_per_shard, 1, None, caller=_CALLER, integer=True)
    if out_dir is None:
        raise InputError("The 'out_dir' parameter of build_imagenet_geo is required.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The output {str(out_dir)!r} exists and is a file; expected a folder.")
    inputs = _make_inputs(imagenet_dir=imagenet_dir, urls=urls, flickr_key=flickr_key, flickr_secret=flickr_secret,
                          geo_csv=geo_csv, flickr_cache=flickr_cache, flickr_rate=flickr_rate,
                          flickr_rest_url=flickr_rest_url, gdp_year=gdp_year, offline=offline,
                          tolerance_km=tolerance_km, max_failed_lookups=max_failed_lookups, caller=_CALLER,
                          flickr_options=flickr_options)
    card_template_path()  # fail before hours of work, not after
    work_path = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    w = _open_work(work_path, inputs.fingerprint(config, rows_per_shard))
    try:
        gdp = _prepare(w, inputs, on_progress)
        plan = _write_chunks(w, inputs, gdp, config, rows_per_shard, on_progress)
        result = _finalize(w, inputs, gdp, config, plan, out_dir, t0, rows_per_shard)
    finally:
        w.close()
    if not keep_work_dir:
        shutil.rmtree(work_path, ignore_errors=True)
    _log_summary(result)
    return result


def _log_summary(r: ImageNetGeoBuildResult):
    log.info("Wrote %s: %s images (%s) from %d countries.", r.out_dir, f"{sum(r.num_examples.values()):,}",
             ", ".join(f"{s} {n:,}" for s, n in r.num_examples.items()), r.num_countries)
    un = r.geocode_counts.get("unassigned", 0) + r.geocode_counts.get("invalid", 0)
    if un:
        log.info("%d located images fell in no country (beyond the coastal tolerance) and were left out.", un)
    if r.countries_without_gdp:
        log.warning("Kept %d countries without World Bank GDP (GDP is null for their images): %s.",
                    len(r.countries_without_gdp), ", ".join(r.countries_without_gdp))
    if r.corrupt_images:
        log.warning("Skipped %d corrupt or unreadable images: %s.", len(r.corrupt_images),
                    ", ".join(c[0] for c in r.corrupt_images[:20]) + (" ..." if len(r.corrupt_images) > 20 else ""))


# --------------------------------------------------------------------------------------------
# the datasets builder
# --------------------------------------------------------------------------------------------
@dataclass
class ImageNetGeoConfig(datasets.BuilderConfig):
    """Configuration of :class:`ImageNetGeo`.

    The ImageNet train folder is the builder's ``data_dir``.

    Attributes
    ----------
    with_image : bool
        True for ``full`` (image bytes), False for ``metadata``.
    urls : str, optional
        ImageNet URL list (``<image_id><TAB><url>``); needs ``flickr_key`` and ``flickr_secret``.
    flickr_key, flickr_secret : str, optional
        Flickr API credentials.
    geo_csv : str, optional
        CSV of known locations (image_id, latitude, longitude) instead of Flickr.
    flickr_cache : str, optional
        SQLite cache of Flickr answers.
    flickr_rate : float
        Flickr calls per hour (default 3,600, Flickr's limit).
    flickr_rest_url : str, optional
        Flickr REST endpoint (tests).
    gdp_year : "latest" or int
        World Bank year.
    offline : bool
        GDP from the shipped snapshot instead of the World Bank API.
    tolerance_km : float
        Coastal tolerance of the reverse geocoding.
    """

    with_image: bool = True
    urls: Optional[str] = None
    flickr_key: Optional[str] = None
    flickr_secret: Optional[str] = None
    geo_csv: Optional[str] = None
    flickr_cache: Optional[str] = None
    flickr_rate: float = 3600.0
    flickr_rest_url: Optional[str] = None
    gdp_year: Union[str, int] = "latest"
    offline: bool = False
    tolerance_km: float = 25.0

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self):
        """Validate the values that do not need the files (called again after overrides)."""
        from geoaudit.data._gdp import parse_gdp_year

        caller = "ImageNetGeoConfig"
        if not isinstance(self.with_image, bool):
            raise InputError(f"The 'with_image' parameter of {caller} must be a bool. Got {self.with_image!r} instead.")
        check_interval("flickr_rate", self.flickr_rate, 0, None, caller=caller, closed="neither")
        check_interval("tolerance_km", self.tolerance_km, 0, 1000, caller=caller)
        parse_gdp_year(self.gdp_year)
        if self.urls is not None and self.geo_csv is not None:
            raise InputError(f"{caller}: pass either 'geo_csv' or 'urls' (with the Flickr key and secret), not both.")


class ImageNetGeo(datasets.GeneratorBasedBuilder):
    """The ImageNet geo-location dataset as a ``datasets`` builder (configs ``full`` and ``metadata``).

    Examples
    --------
    >>> b = ImageNetGeo(config_name="metadata", data_dir="ILSVRC2012/train",
    ...                 geo_csv="locations.csv", offline=True)          # doctest: +SKIP
    >>> b.download_and_prepare()                                       # doctest: +SKIP
    >>> train = b.as_dataset(split="train")                            # doctest: +SKIP

    Keys are image ids; the split rule is :func:`split_of`.  Corrupt images are skipped and
    logged.  For a folder that loads with no geoaudit code use :func:`build_imagenet_geo`.
    """

    BUILDER_CONFIG_CLASS = ImageNetGeoConfig
    BUILDER_CONFIGS = [
        ImageNetGeoConfig(name="full", with_image=True, description="Images and metadata."),
        ImageNetGeoConfig(name="metadata", with_image=False,
                          description="Metadata only (no image bytes): redistributable."),
    ]
    DEFAULT_CONFIG_NAME = "full"
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.check()  # overrides passed as keyword arguments skip __post_init__

    def _info(self):
        from geoaudit.data._schema import geo_features, imagenet_classes

        return datasets.DatasetInfo(
            description=DESCRIPTION,
            features=geo_features(imagenet_classes()[1], with_image=self.config.with_image),
            citation=CITATION,
            license="ImageNet terms of access (images); metadata CC BY 4.0 (World Bank) and public domain "
                    "(Natural Earth)",
        )

    def _inputs(self):
        c = self.config
        return _make_inputs(imagenet_dir=c.data_dir, urls=c.urls, flickr_key=c.flickr_key,
                            flickr_secret=c.flickr_secret, geo_csv=c.geo_csv, flickr_cache=c.flickr_cache,
                            flickr_rate=c.flickr_rate, flickr_rest_url=c.flickr_rest_url, gdp_year=c.gdp_year,
                            offline=c.offline, tolerance_km=c.tolerance_km, max_failed_lookups=0,
                            caller="ImageNetGeo")

    def _split_generators(self, dl_manager):
        inputs = self._inputs()
        fp = inputs.fingerprint("builder", 0)
        work_dir = Path(self._cache_dir_root) / "imagenet_geo_work" / fp
        w = _open_work(work_dir, fp)
        try:
            _prepare(w, inputs)
            counts = {s: w.db.execute("SELECT COUNT(*) FROM images WHERE split=? AND iso3 IS NOT NULL",
                                      (s,)).fetchone()[0] for s in SPLITS}
        finally:
            w.close()
        empty = [s for s in SPLITS if counts[s] == 0]
        if len(empty) == len(SPLITS):
            raise InputError(f"No image of {str(inputs.imagenet_dir)!r} could be located in a country.")
        if empty:  # datasets cannot hold an empty split; say so rather than fail later
            log.warning("Split(s) %s would be empty and are left out.", ", ".join(empty))
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s, "work_dir": str(work_dir)})
                for s in SPLITS if counts[s]]

    def _generate_examples(self, split, work_dir):
        inputs = self._inputs()
        w = _Work(Path(work_dir))
        try:
            gdp = w.get("gdp")
            corrupt = []
            yield from _iter_examples(w, inputs, split, self.config.with_image, gdp, corrupt=corrupt)
            if corrupt:
                log.warning("Split %s: skipped %d corrupt images: %s", split, len(corrupt),
                            ", ".join(c[0] for c in corrupt))
        finally:
            w.close()
