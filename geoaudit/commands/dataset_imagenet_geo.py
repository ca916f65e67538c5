"""`geoaudit dataset build imagenet-geo ...` and `geoaudit dataset info DIR`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geoaudit._errors import InputError

BUILD_EPILOG = """\
examples:
  export FLICKR_API_KEY=... FLICKR_API_SECRET=...
  geoaudit dataset build imagenet-geo --imagenet-dir ILSVRC2012/train --urls fall11_urls.txt \\
      --per-class 100 --out imagenet-geo
  geoaudit dataset build imagenet-geo --imagenet-dir ILSVRC2012/train --geo-csv locations.csv \\
      --config metadata --offline --out imagenet-geo-metadata

Give the Flickr key and secret through FLICKR_API_KEY and FLICKR_API_SECRET: on the command
line, any user of the machine sees them in `ps`.  Every Flickr-hosted image costs one API
call, and a key gets at most 3,600 per hour: all 1.28M train images take up to about 356 h, so
--synsets and --per-class build a subset.  An interrupted build resumes when re-run with the
same arguments: finished stages and shards are kept and no Flickr call is repeated.
"""


def register(sub):
    p = sub.add_parser(
        "imagenet-geo", help="the ImageNet geo-location dataset (ILSVRC2012 + Flickr + Natural Earth + World Bank)",
        description="Build the ImageNet geo-location dataset (appendix E of the paper) into a folder of Parquet "
                    "shards with a dataset card, loadable with datasets.load_dataset(DIR).",
        epilog=BUILD_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imagenet-dir", required=True, metavar="DIR",
                   help="ILSVRC2012 train folder: <wnid>/<wnid>_<n>.JPEG")
    p.add_argument("--urls", metavar="FILE", help="ImageNet URL list (<image_id><TAB><url> per line)")
    p.add_argument("--flickr-key", metavar="KEY", default=None,
                   help="Flickr API key (default: $FLICKR_API_KEY, preferred: `ps` shows command lines)")
    p.add_argument("--flickr-secret", metavar="SECRET", default=None,
                   help="Flickr API secret (default: $FLICKR_API_SECRET, preferred)")
    p.add_argument("--geo-csv", metavar="FILE",
                   help="CSV of known locations (image_id, latitude, longitude) instead of Flickr")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="dataset folder to write: new, empty, or an earlier imagenet-geo build")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out folder that is not an imagenet-geo build")
    p.add_argument("--synsets", metavar="WNID[,WNID...]",
                   help="build only these classes (WordNet ids, comma-separated, e.g. n01440764,n01443537)")
    p.add_argument("--per-class", type=int, metavar="N",
                   help="look up at most N images per class (each Flickr image costs one API call)")
    p.add_argument("--min-accuracy", type=int, default=0, metavar="1-16",
                   help="leave out photos whose Flickr accuracy level is below this (11 ~ city, 16 street; "
                        "default 0 keeps all; the level is exported as flickr_accuracy)")
    p.add_argument("--config", choices=["full", "metadata"], default="full",
                   help="full: images and metadata (default); metadata: no image bytes")
    p.add_argument("--gdp-year", default="latest", metavar="latest|YYYY",
                   help="World Bank GDP year for every country, or the latest per country (default; years "
                        "then differ, the card lists their spread)")
    p.add_argument("--offline", action="store_true",
                   help="do not call the World Bank API: GDP from the snapshot shipped with geoaudit")
    p.add_argument("--flickr-rate", type=float, default=3600.0, metavar="CALLS_PER_HOUR",
                   help="Flickr calls per hour (default 3600, Flickr's limit per key)")
    p.add_argument("--flickr-cache", metavar="FILE",
                   help="SQLite cache of Flickr answers (default ~/.cache/geoaudit/flickr_geo.sqlite)")
    p.add_argument("--flickr-rest-url", metavar="URL", help=argparse.SUPPRESS)  # tests: a local Flickr stub
    p.add_argument("--tolerance-km", type=float, default=25.0,
                   help="coastal tolerance of the reverse geocoding in km (default 25)")
    p.add_argument("--rows-per-shard", type=int, default=1000, help="images per Parquet shard (default 1000)")
    p.add_argument("--max-failed-lookups", type=int, default=0,
                   help="Flickr look-ups allowed to fail for good before the build stops (default 0)")
    p.set_defaults(func=run_build)


def _credentials(args):
    """Key and secret from the options or the environment; warn when given on the command line."""
    import sys

    on_cli = [o for o, v in (("--flickr-key", args.flickr_key), ("--flickr-secret", args.flickr_secret)) if v]
    if on_cli and args.urls:
        print(f"warning: {' and '.join(on_cli)} on the command line are visible to every user of this machine "
              "(ps); prefer the FLICKR_API_KEY and FLICKR_API_SECRET environment variables.", file=sys.stderr)
    return (args.flickr_key or os.environ.get("FLICKR_API_KEY"),
            args.flickr_secret or os.environ.get("FLICKR_API_SECRET"))


def run_build(args) -> int:
    from geoaudit._errors import GeoauditError
    from geoaudit.data.imagenet_geo import build_imagenet_geo
    from geoaudit.data.imagenet_geo.build import format_year_spread

    if args.geo_csv is None and args.urls is None:
        raise InputError("Give a location source: --urls FILE with --flickr-key and --flickr-secret, "
                         "or --geo-csv FILE.")
    key, secret = _credentials(args)
    synsets = [x for x in args.synsets.split(",") if x.strip()] if args.synsets else None
    try:
        r = build_imagenet_geo(
            args.out, imagenet_dir=args.imagenet_dir, urls=args.urls,
            flickr_key=key if args.urls else None, flickr_secret=secret if args.urls else None,
            geo_csv=args.geo_csv, config=args.config, gdp_year=args.gdp_year, offline=args.offline,
            flickr_rate=args.flickr_rate, flickr_cache=args.flickr_cache, flickr_rest_url=args.flickr_rest_url,
            tolerance_km=args.tolerance_km, rows_per_shard=args.rows_per_shard,
            max_failed_lookups=args.max_failed_lookups, min_accuracy=args.min_accuracy, synsets=synsets,
            per_class=args.per_class, overwrite=args.overwrite,
        )
    except GeoauditError as e:
        msg = str(e)
        if msg.startswith("Flickr rejected the API key"):
            msg += " (--flickr-key and --flickr-secret, or $FLICKR_API_KEY and $FLICKR_API_SECRET)"
        elif "allow overwriting it" in msg:
            msg = msg.replace("allow overwriting it", "pass --overwrite")
        if msg != str(e):
            raise type(e)(msg) from None
        raise
    n = r.num_examples
    print(f"Wrote {r.out_dir}: {sum(n.values()):,} images from {r.num_countries} countries "
          f"(train {n['train']:,}, validation {n['validation']:,}, test {n['test']:,}); "
          f"configs: {', '.join(r.configs)}.")
    if r.corrupt_images:
        print(f"Skipped {len(r.corrupt_images)} corrupt images (named in {Path(r.out_dir) / 'build_log.json'}).")
    if r.countries_without_gdp:
        print(f"Countries without GDP (kept, GDP null): {', '.join(r.countries_without_gdp)}.")
    print(f"GDP years: {format_year_spread(r.extra.get('gdp_years', {}))}.")
    print(f'Load it with: datasets.load_dataset("{r.out_dir}")')
    return 0


# ---------------------------------------------------------------------------------------------
# dataset info
# ---------------------------------------------------------------------------------------------
def register_info(sub):
    p = sub.add_parser("info", help="rows per split, countries, images per country, countries without GDP",
                       description="Describe a geo-located image dataset folder (any folder with geoaudit's "
                                   "schema: ImageNet geo-location, GeoShapes).")
    p.add_argument("dir", metavar="DIR", help="dataset folder")
    p.add_argument("--config", default=None, help="dataset config to describe (default: the folder's default)")
    p.add_argument("--top", type=int, default=20, help="countries listed (default 20)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verify", action="store_true",
                   help="read every shard and decode every image; name the first that fails")
    p.add_argument("--out", metavar="DIR", help="also write images_per_country.png (map and bars) and "
                                                "summary.json into DIR")
    p.set_defaults(func=run_info)


def dataset_summary(path, *, config=None) -> dict:
    """Compatibility name of :func:`geoaudit.data._summary.dataset_summary`."""
    from geoaudit.data._summary import dataset_summary as summary

    return summary(path, config=config)


def plot_images_per_country(summary, path, *, top=30):
    """Compatibility name of :func:`geoaudit.report._dataset_figures.plot_images_per_country`."""
    from geoaudit.report._dataset_figures import plot_images_per_country as plot

    return plot(summary, path, top=top)


def run_info(args) -> int:
    from geoaudit._io import atomic_write_text, to_json
    from geoaudit.data._summary import verify_dataset

    if args.top < 1:
        raise InputError(f"The '--top' option must be a positive integer. Got {args.top} instead.")
    s = dataset_summary(args.dir, config=args.config)
    if args.verify:
        s["verified"] = verify_dataset(args.dir)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        png = plot_images_per_country(s, out / "images_per_country.png", top=max(args.top, 30))
        atomic_write_text(out / "summary.json", to_json(s) + "\n")
        s_files = [str(png), str(out / "summary.json")]
    else:
        s_files = []
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"Dataset {s['path']}")
    print("Rows per split: " + ", ".join(f"{k} {v:,}" for k, v in s["rows_per_split"].items())
          + f" (total {s['total']:,})")
    print(f"Countries: {s['num_countries']}")
    print(f"Images per country (top {min(args.top, len(s['images_per_country']))}):")
    for r in s["images_per_country"][:args.top]:
        gdp = "no GDP" if r["gdp_per_capita_usd"] is None else f"GDP/capita ${r['gdp_per_capita_usd']:,.0f}"
        print(f"  {str(r['country_iso3']):<4} {str(r['country_name'])[:28]:<28} {r['images']:>8,} "
              f"{100 * r['share']:5.1f}%  {gdp}")
    print("Countries without GDP: " + (", ".join(s["countries_without_gdp"]) or "none"))
    if s.get("gdp_years"):
        print("GDP years: " + "; ".join(f"{y if y != 'none' else 'no GDP'}: {n:,} images"
                                        for y, n in s["gdp_years"].items()))
    if args.verify:
        v = s["verified"]
        print(f"Verified: {v['shards']} shards, {v['rows']:,} rows, {v['images']:,} images decoded.")
    else:
        print("Images not decoded: --verify reads every shard and decodes every image.")
    for f in s_files:
        print(f"Wrote {f}")
    return 0
