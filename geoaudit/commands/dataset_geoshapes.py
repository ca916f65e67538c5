"""`geoaudit dataset build geoshapes --out DIR ...`: the GeoShapes demo dataset."""
from __future__ import annotations

import argparse

EPILOG = """\
examples:
  geoaudit dataset build geoshapes --out geoshapes
  geoaudit dataset build geoshapes --out geoshapes-null --spurious-strength 0
  geoaudit dataset build geoshapes --out gs-capture --spurious-strength 0 --capture-strength 1
  geoaudit dataset build geoshapes --out gs-small --n-images 5000 --image-size 32 --n-audit-countries 10

The folder holds Parquet shards and a dataset card: datasets.load_dataset(DIR) loads it
without geoaudit, and `geoaudit dataset info DIR` describes it.  The same arguments give
byte-identical data.
"""


def register(sub):
    p = sub.add_parser(
        "geoshapes", help="the GeoShapes demo: shapes with real countries, real GDP and a planted bias",
        description="Generate GeoShapes (procedural shape images placed in real countries with real World Bank "
                    "GDP, most from a few rich countries, with a colour shortcut that tracks the label only in "
                    "the well-represented countries and image capture quality that falls with income) and "
                    "write it as Parquet shards with a dataset card.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write (replaced if it exists)")
    p.add_argument("--n-images", type=int, default=20000, metavar="N", help="total images (default 20000)")
    p.add_argument("--spurious-strength", type=float, default=0.9, metavar="S",
                   help="strength of the planted colour cue in [0, 1]; 0 = no country effect (default 0.9)")
    p.add_argument("--capture-strength", type=float, default=0.0, metavar="C",
                   help="strength of the capture-quality bias in [0, 1] (blur, low light, sensor noise, JPEG "
                        "falling with GDP); 0 = none (default 0)")
    p.add_argument("--image-size", type=int, default=64, metavar="PX", help="image side in pixels, 24-512 (default 64)")
    p.add_argument("--random-state", "--seed", dest="random_state", type=int, default=0, metavar="K",
                   help="random seed; --seed is the older spelling (default 0)")
    p.add_argument("--n-classes", type=int, default=10, metavar="K", help="shape classes, 2-12 (default 10)")
    p.add_argument("--n-audit-countries", type=int, default=None, metavar="M",
                   help="countries guaranteed --min-test-images test images (default: as many as N allows, <= 30)")
    p.add_argument("--min-test-images", type=int, default=50, metavar="K",
                   help="test images per audit country (default 50)")
    p.add_argument("--cue-countries", default="high_income", metavar="high_income|ISO3,ISO3,...",
                   help="where the colour tracks the label (default: World Bank high-income economies)")
    p.add_argument("--image-format", choices=["png", "jpeg"], default="png", help="image encoding (default png)")
    p.add_argument("--rows-per-shard", type=int, default=5000, metavar="R", help="rows per Parquet shard (default 5000)")
    p.add_argument("--grid", metavar="PNG",
                   help="also save a picture of sample test images, one row per income group, captioned with "
                        "country, colour cue and capture severity")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from geoaudit.data import build_geoshapes

    cue = args.cue_countries
    if cue != "high_income":
        cue = [c.strip() for c in cue.split(",") if c.strip()]
    t0 = time.perf_counter()
    r = build_geoshapes(
        args.out, n_images=args.n_images, spurious_strength=args.spurious_strength,
        capture_strength=args.capture_strength, image_size=args.image_size, random_state=args.random_state,
        n_classes=args.n_classes, n_audit_countries=args.n_audit_countries,
        min_test_images=args.min_test_images, cue_countries=cue, image_format=args.image_format,
        rows_per_shard=args.rows_per_shard,
    )
    dt = time.perf_counter() - t0
    n = r.num_examples
    top = ", ".join(f"{iso} {c:,}" for iso, c in r.top_countries.items())
    print(f"Wrote {r.out_dir}: {sum(n.values()):,} GeoShapes images (train {n['train']:,}, validation "
          f"{n['validation']:,}, test {n['test']:,}) from {r.num_countries} countries, "
          f"{r.n_audit_countries} with >= {args.min_test_images} test images; "
          f"spurious_strength={args.spurious_strength:g}, capture_strength={args.capture_strength:g}, "
          f"cue countries hold {100 * r.cue_share:.1f}% of images; "
          f"in {dt:.1f}s.")
    print(f"Largest: {top}.")
    if args.grid:
        from geoaudit.data import load_geo_dataset
        from geoaudit.report._geoshapes_figures import geoshapes_grid_figure

        geoshapes_grid_figure(load_geo_dataset(r.out_dir, "test"), args.grid, config=r.config)
        print(f"Sample grid: {args.grid}")
    return 0
