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

Usage::

    python benchmarks/geocode.py                 # the full run (a few minutes on 2 cores)
    python benchmarks/geocode.py --quick         # smaller sizes, for a smoke test
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
    b = load_boundaries("50m")
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
    load_boundaries("50m")  # cached; loading is timed apart
    reverse_geocode(lat[:10], lon[:10])  # warm-up (imports)
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
    a = ap.parse_args(argv)
    if a.quick:
        a.points, a.loop_sample, a.flickr_calls, a.sizes = 10_000, 200, 20, [1_000, 4_000]
    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    g = bench_geocode(a.points, a.loop_sample)
    print(f"\n[1] reverse geocoding {g['points']:,} random land points")
    print(f"    vectorized sjoin       {g['vectorized_s']:8.2f} s   ({g['points_per_s']:,.0f} points/s)")
    print(f"    per-point polygon loop {g['loop_estimated_s']:8.1f} s   (estimated from {g['loop_sample']} points "
          f"in {g['loop_sample_s']:.2f} s)")
    print(f"    ratio loop / vectorized: {g['speedup']:.0f}x; agreement on the sample: {g['agreement_on_sample']:.3f}; "
          f"{g['countries']} countries")

    f = bench_flickr(a.flickr_calls, a.flickr_rate)
    print(f"\n[2] Flickr stage on a local stub, {f['throttled']['calls']} calls")
    print(f"    allowed rate           {f['allowed_per_hour']:10,.0f} calls/hour")
    print(f"    sustained (limiter on) {f['throttled']['sustained_per_hour']:10,.0f} calls/hour  "
          f"ratio to allowed {f['ratio_sustained_to_allowed']:.3f}")
    print(f"    stub without limiter   {f['unthrottled']['sustained_per_hour']:10,.0f} calls/hour  "
          f"(the limiter, not the server, sets the pace)")

    m = bench_memory(a.sizes)
    print("\n[3] peak memory of a synthetic build (config full, tiny 32x32 JPEGs, geo CSV, offline)")
    for r in m:
        print(f"    {r['images']:>7,} images: peak RSS {r['peak_rss_mib']:7.0f} MiB, build {r['elapsed_s']:6.1f} s "
              f"({r['images'] / r['elapsed_s']:,.0f} images/s), output {r['out_mib']:.1f} MiB")
    if len(m) > 1:
        print(f"    images x{m[-1]['images'] / m[0]['images']:.1f} -> peak RSS x{m[-1]['peak_rss_mib'] / m[0]['peak_rss_mib']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"geocode": g, "flickr": f, "memory": m}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
