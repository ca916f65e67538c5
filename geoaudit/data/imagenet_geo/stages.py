"""The build's stages: index the tree, read the locations (URL list + Flickr, or a CSV),
reverse-geocode, resolve GDP.  Each records that it finished and is skipped on a re-run."""
from __future__ import annotations

import hashlib
import logging
import os


from geoaudit._errors import GeoauditError, InputError
from geoaudit._progress import progress

log = logging.getLogger(__name__)
from geoaudit.data.imagenet_geo.inputs import _IMAGE_RE, _Inputs, _wnid_dirs, parse_url_line, split_of
from geoaudit.data.imagenet_geo.work import _Work


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
    classes = [x for x in wnids if x in known]
    if inputs.synsets is not None:
        missing = [x for x in inputs.synsets if x not in classes]
        if missing:
            log.warning("%d of the synsets asked for have no folder in %s (e.g. %s).", len(missing), root, missing[0])
        classes = [x for x in classes if x in set(inputs.synsets)]
        if not classes:
            raise InputError(f"None of the synsets asked for ({', '.join(inputs.synsets[:3])}...) has a class folder "
                             f"in {str(root)!r}.")
    for wnid in progress(classes, desc="Indexing ImageNet", unit="class"):
        batch = []
        for e in os.scandir(root / wnid):
            m = _IMAGE_RE.match(e.name)
            if m and m.group(1).startswith(wnid + "_") and e.is_file():
                iid = m.group(1)
                batch.append((iid, wnid, f"{wnid}/{e.name}", split_of(iid)))
            else:
                ignored += 1
        if inputs.per_class is not None and len(batch) > inputs.per_class:
            # a fixed pseudo-random sample: the images with the smallest hash of their id
            batch = sorted(batch, key=lambda r: hashlib.sha256(r[0].encode()).digest())[:inputs.per_class]
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
            parsed = parse_url_line(raw)
            if parsed is None:
                if raw.strip() and not raw.lstrip(b"\xef\xbb\xbf").startswith(b"#"):
                    bad += 1
                continue
            good += 1
            iid, url = parsed
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
        w.db.execute("UPDATE images SET status=a.status, latitude=a.latitude, longitude=a.longitude, "
                     "accuracy=a.accuracy, flickr_country=a.country "
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
            "(or allow some with max_failed_lookups)."
        )
    w.db.execute("UPDATE images SET status='lookup_failed' WHERE status='pending'")
    if inputs.min_accuracy > 0:
        # Flickr's levels: 1 world, ~3 country, ~6 region, ~11 city, 16 street
        n_low = w.db.execute("UPDATE images SET status='low_accuracy' WHERE status='ok' AND "
                             "(accuracy IS NULL OR accuracy < ?)", (inputs.min_accuracy,)).rowcount
        log.info("Left out %d located images whose Flickr accuracy is below %d.", n_low, inputs.min_accuracy)
    w.db.commit()
    w.set("stage_flickr", True)


def _stage_geocode(w: _Work, inputs: _Inputs, chunk=50_000):
    from geoaudit.data._geocode import reverse_geocode

    if w.get("stage_geocode"):
        return
    from geoaudit.data._countries import country_code_from_name

    total = w.db.execute("SELECT COUNT(*) FROM images WHERE status='ok' AND method IS NULL").fetchone()[0]
    with progress(total=total, desc="Reverse geocoding", unit="image") as bar:
        while True:
            rows = w.db.execute("SELECT rowid, latitude, longitude, flickr_country FROM images "
                                "WHERE status='ok' AND method IS NULL LIMIT ?", (chunk,)).fetchall()
            if not rows:
                break
            rid, lat, lon, fname = zip(*rows)
            # Flickr's own country decides where the polygon is unsure (a photo on a border)
            hint = [country_code_from_name(x) for x in fname]
            g = reverse_geocode(lat, lon, tolerance_km=inputs.tolerance_km, hint_iso3=hint)
            w.db.executemany("UPDATE images SET iso3=?, country_name=?, method=?, flickr_iso3=? WHERE rowid=?",
                             list(zip(g["country_iso3"], g["country_name"], g["method"], hint, rid)))
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
