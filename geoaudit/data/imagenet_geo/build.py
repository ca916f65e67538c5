"""Build the dataset folder: rows -> examples -> Parquet shards, the summary, the card."""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


from geoaudit._errors import InputError
from geoaudit._io import atomic_write_text, replace_dir, to_json
from geoaudit._progress import progress
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)
from geoaudit.data.imagenet_geo.inputs import (CONFIGS, SPLITS, _CALLER, _Inputs, _make_inputs,
                                               card_template_path)
from geoaudit._results import Result, frozen_mapping, json_safe
from geoaudit.data._export import check_output_dir
from geoaudit.data.imagenet_geo.stages import _prepare
from geoaudit.data.imagenet_geo.work import _open_work, _Work


_ROW_SQL = ("SELECT image_id, wnid, relpath, photo_id, latitude, longitude, iso3, country_name, accuracy, "
            "flickr_iso3 FROM images "
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
    iid, wnid, relpath, pid, lat, lon, iso3, ne_name, accuracy, flickr_iso3 = row
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
        "flickr_accuracy": accuracy,
        "flickr_country": flickr_iso3,
    }
    if image is not None:
        ex = {"image": {"bytes": image, "path": relpath}, **ex}
    return ex


def _iter_rows(w: _Work, split, offset=0, limit=-1):
    return w.db.execute(_ROW_SQL + " LIMIT ? OFFSET ?", (split, limit, offset))


def _iter_examples(w: _Work, inputs: _Inputs, split, with_image, gdp, *, offset=0, limit=-1, corrupt=None,
                   location_source=True):
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
        ex = _example(row, table, wnid_index, data if with_image else None)
        if not location_source:
            ex.pop("flickr_accuracy")
            ex.pop("flickr_country")
        yield row[0], ex



@dataclass(frozen=True)
class ImageNetGeoBuildResult(Result):
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

    def __post_init__(self):
        # truly immutable: read-only copies of every mapping
        for name in ("num_examples", "images_per_country", "status_counts", "geocode_counts", "extra"):
            object.__setattr__(self, name, frozen_mapping(getattr(self, name)))
        if self.flickr is not None:
            object.__setattr__(self, "flickr", frozen_mapping(self.flickr))

    @property
    def num_countries(self):
        """Countries with at least one image."""
        return len(self.images_per_country)

    def to_dict(self):
        """The result as JSON-safe data (what ``build_log.json`` holds)."""
        return json_safe({"out_dir": self.out_dir, "configs": list(self.configs),
                          "num_examples": dict(self.num_examples), "num_countries": self.num_countries,
                          "images_per_country": dict(self.images_per_country),
                          "countries_without_gdp": list(self.countries_without_gdp),
                          "status_counts": dict(self.status_counts), "geocode_counts": dict(self.geocode_counts),
                          "corrupt_images": [list(c) for c in self.corrupt_images], "gdp_source": self.gdp_source,
                          "gdp_year": self.gdp_year, "flickr": self.flickr, "elapsed_s": float(self.elapsed_s),
                          **self.extra})

    def summary(self):
        """Rows per split, countries, geocoding methods and GDP years, in a few lines."""
        n = self.num_examples
        lines = [f"ImageNet geo-location build in {self.out_dir}: {sum(n.values()):,} images from "
                 f"{self.num_countries} countries ({', '.join(f'{s} {k:,}' for s, k in n.items())})",
                 "geocoding: " + ", ".join(f"{m} {k:,}" for m, k in self.geocode_counts.items()),
                 f"GDP year {self.gdp_year}: " + format_year_spread(self.extra.get("gdp_years", {}))]
        if self.countries_without_gdp:
            lines.append("without GDP: " + ", ".join(self.countries_without_gdp))
        return "\n".join(lines)


def _chunk_dir(w: _Work, config, split, k):
    return w.dir / "chunks" / config / f"{split}-{k:05d}"


def _write_chunks(w: _Work, inputs: _Inputs, gdp, config, rows_per_shard, on_progress):
    """Write each split in chunks of ``rows_per_shard`` candidate rows; a finished chunk is
    recorded in the work database and never rewritten."""
    from geoaudit.data._export import ParquetShardWriter
    from geoaudit.data._schema import geo_features, imagenet_classes

    feats = geo_features(imagenet_classes()[1], with_image=config == "full", with_location_source=True)
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
    meta_feats = geo_features(names, with_image=False, with_location_source=True)
    for s, k, rows, nb, c in w.db.execute("SELECT split, k, rows, nbytes, corrupt FROM chunks WHERE config=? "
                                          "ORDER BY split, k", (config,)):
        num_examples[s] = num_examples.get(s, 0) + rows
        chunk_bytes[s] = chunk_bytes.get(s, 0) + nb
        corrupt.extend(tuple(x) for x in json.loads(c))
    num_examples = {s: num_examples.get(s, 0) for s in SPLITS}
    # datasets refuses a split with no rows: the card lists only the splits that have some
    present = [s for s in SPLITS if num_examples[s]]
    if not present:
        raise InputError(f"No image of {str(inputs.imagenet_dir)!r} could be located in a country; nothing to write.")
    chunk_files = {s: [next(_chunk_dir(w, config, s, k).glob("*.parquet")) for k in range(plan[s])] for s in SPLITS}
    if config == "full":
        (stage / "data" / "full").mkdir(parents=True)
        for s in present:
            n = len(chunk_files[s])
            for k, src in enumerate(chunk_files[s]):
                dst = stage / "data" / "full" / f"{s}-{k:05d}-of-{n:05d}.parquet"
                try:
                    os.link(src, dst)  # the chunk stays, so finalizing again after a kill still works
                except OSError:
                    shutil.copy2(src, dst)
        configs["full"] = {s: f"data/full/{s}-*.parquet" for s in present}
        infos["full"] = {"features": geo_features(names, with_image=True, with_location_source=True),
                         "num_examples": {s: num_examples[s] for s in present},
                         "num_bytes": {s: chunk_bytes.get(s, 0) for s in present}}
    # metadata: every config's rows without image bytes, consolidated into few shards
    meta_cols = list(meta_feats)
    for s in present:
        with ParquetShardWriter(stage, s, meta_feats, rows_per_shard=max(rows_per_shard, 200_000),
                                data_dir="data/metadata") as mw:
            for src in chunk_files[s]:
                for rb in pq.ParquetFile(src).iter_batches(batch_size=10_000, columns=meta_cols):
                    mw.write_table(rb)
        num_bytes[s] = mw.num_bytes
    configs["metadata"] = {s: f"data/metadata/{s}-*.parquet" for s in present}
    infos["metadata"] = {"features": meta_feats, "num_examples": {s: num_examples[s] for s in present},
                         "num_bytes": num_bytes}

    result = _summarize(w, inputs, gdp, config, out_dir, num_examples, corrupt, t0)
    write_build_log(stage, result)
    write_dataset_card(stage, template=card_template_path(), configs=configs, dataset_infos=infos,
                       num_examples={s: num_examples[s] for s in present}, values=_card_values(result),
                       default_config="full" if config == "full" else None)
    replace_dir(stage, out_dir)
    return result


def write_build_log(folder, result):
    atomic_write_text(Path(folder) / "build_log.json", to_json(result.to_dict()) + "\n")


def gdp_year_spread(images_per_country, gdp_table):
    """Images per GDP year: ``{"2023": n, "2011": m, "none": k}`` (most images first).

    Parameters
    ----------
    images_per_country : dict
        ISO3 -> images.
    gdp_table : dict
        ISO3 -> ``[name, usd, year]`` (the build's GDP table).

    Returns
    -------
    dict
    """
    out = {}
    for iso3, n in images_per_country.items():
        year = (gdp_table.get(iso3) or [None, None, None])[2]
        key = str(year) if year is not None else "none"
        out[key] = out.get(key, 0) + n
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def format_year_spread(spread):
    """``"2023: 1,234 images; 2022: 56 images"`` from :func:`gdp_year_spread` (one line).

    Parameters
    ----------
    spread : dict

    Returns
    -------
    str
    """
    return "; ".join(f"{y if y != 'none' else 'no GDP'}: {n:,} images" for y, n in spread.items()) or "none"


def _summarize(w, inputs, gdp, config, out_dir, num_examples, corrupt, t0):
    corrupt_ids = {c[0] for c in corrupt}
    per_country = {}
    for iso3, iid in w.db.execute("SELECT iso3, image_id FROM images WHERE iso3 IS NOT NULL"):
        if iid not in corrupt_ids:
            per_country[iso3] = per_country.get(iso3, 0) + 1
    per_country = dict(sorted(per_country.items(), key=lambda kv: (-kv[1], kv[0])))
    no_gdp = tuple(sorted(c for c in per_country if (gdp["table"].get(c) or [None, None])[1] is None))
    gdp_years = gdp_year_spread(per_country, gdp["table"])
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
        extra={"dataset": "imagenet-geo",
               "location_source": "geo_csv" if inputs.source == "geo_csv" else "flickr",
               "gdp_years": gdp_years,
               "min_accuracy": inputs.min_accuracy,
               "synsets": list(inputs.synsets) if inputs.synsets else None,
               "per_class": inputs.per_class,
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
        "splits_table": "| split | images |\n| --- | --- |\n" + "\n".join(
            f"| {s} | {n:,} |" for s, n in r.num_examples.items() if n),
        "gdp_years": format_year_spread(r.extra.get("gdp_years", {})),
        "n_place": f"{geo.get('place', 0):,}",
        "n_border": f"{geo.get('border', 0):,}",
        "n_hint": f"{geo.get('hint', 0):,}",
        "min_accuracy": (f"Flickr accuracy of at least {r.extra['min_accuracy']} (16 is street level)"
                         if r.extra.get("min_accuracy") else "every Flickr accuracy level (1 world to 16 street)"),
        "selection": (", ".join(x for x in (
            f"synsets {', '.join(r.extra['synsets'][:5])}{' ...' if len(r.extra['synsets']) > 5 else ''}"
            if r.extra.get("synsets") else "",
            f"at most {r.extra['per_class']:,} images per class" if r.extra.get("per_class") else "") if x)
            or "every class, every image"),
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


def build_imagenet_geo(out_dir, *, imagenet_dir, config="full", rows_per_shard=1000, max_failed_lookups=0,
                       flickr_options=None, work_dir=None, keep_work_dir=False, on_progress=None,
                       overwrite=False, **sources) -> ImageNetGeoBuildResult:
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
        World Bank year for every country (countries without a value that year get a null
        GDP), or the latest year with a value per country (years then differ; the card and
        ``build_log.json`` give the spread).
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
    min_accuracy : int
        Leave out Flickr photos whose accuracy level is below this (0 keeps all; 11 is
        about city level, 16 street level).  The level is exported as ``flickr_accuracy``
        (null for CSV locations, which this option does not filter).
    synsets : list of str, optional
        Build only these ILSVRC2012 classes (WordNet ids such as "n01440764").
    per_class : int, optional
        Look up at most this many images per class (a fixed pseudo-random sample by a hash
        of the image id): every Flickr-hosted image costs one API call, so a subset keeps a
        build within Flickr's 3,600 calls per hour.
    overwrite : bool
        Replace a non-empty ``out_dir`` that is not an ImageNet geo-location build (the
        current folder and its parents are refused whatever this says).

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
    out_dir = check_output_dir(out_dir, kind="imagenet-geo", overwrite=overwrite, caller=_CALLER)
    inputs = _make_inputs(imagenet_dir=imagenet_dir, max_failed_lookups=max_failed_lookups, caller=_CALLER,
                          flickr_options=flickr_options, **sources)
    card_template_path()  # fail before hours of work, not after
    work_path = Path(work_dir) if work_dir is not None else default_work_dir(out_dir)
    if work_path.is_dir() and any(work_path.iterdir()) and not (work_path / "work.sqlite").exists():
        raise InputError(f"The 'work_dir' folder {str(work_path)!r} is not empty and is not a build's work folder; "
                         "it is removed after a successful build, so name a new folder.")
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
