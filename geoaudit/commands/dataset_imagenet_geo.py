"""`geoaudit dataset build imagenet-geo ...` and `geoaudit dataset info DIR`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geoaudit._errors import InputError

BUILD_EPILOG = """\
examples:
  geoaudit dataset build imagenet-geo --imagenet-dir ILSVRC2012/train --urls fall11_urls.txt \\
      --flickr-key KEY --flickr-secret SECRET --out imagenet-geo
  geoaudit dataset build imagenet-geo --imagenet-dir ILSVRC2012/train --geo-csv locations.csv \\
      --config metadata --offline --out imagenet-geo-metadata

An interrupted build resumes when re-run with the same arguments: finished stages and
shards are kept and no Flickr call is repeated.  The key and secret may also come from the
FLICKR_API_KEY and FLICKR_API_SECRET environment variables.
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
    p.add_argument("--flickr-key", metavar="KEY", default=os.environ.get("FLICKR_API_KEY"),
                   help="Flickr API key (default: $FLICKR_API_KEY)")
    p.add_argument("--flickr-secret", metavar="SECRET", default=os.environ.get("FLICKR_API_SECRET"),
                   help="Flickr API secret (default: $FLICKR_API_SECRET)")
    p.add_argument("--geo-csv", metavar="FILE",
                   help="CSV of known locations (image_id, latitude, longitude) instead of Flickr")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument("--config", choices=["full", "metadata"], default="full",
                   help="full: images and metadata (default); metadata: no image bytes")
    p.add_argument("--gdp-year", default="latest", metavar="latest|YYYY",
                   help="World Bank GDP year, or the latest per country (default)")
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


def run_build(args) -> int:
    from geoaudit.data._imagenet_geo import build_imagenet_geo

    if args.geo_csv is None and args.urls is None:
        raise InputError("Give a location source: --urls FILE with --flickr-key and --flickr-secret, "
                         "or --geo-csv FILE.")
    r = build_imagenet_geo(
        args.out, imagenet_dir=args.imagenet_dir, urls=args.urls,
        flickr_key=args.flickr_key if args.urls else None,
        flickr_secret=args.flickr_secret if args.urls else None,
        geo_csv=args.geo_csv, config=args.config, gdp_year=args.gdp_year, offline=args.offline,
        flickr_rate=args.flickr_rate, flickr_cache=args.flickr_cache, flickr_rest_url=args.flickr_rest_url,
        tolerance_km=args.tolerance_km, rows_per_shard=args.rows_per_shard,
        max_failed_lookups=args.max_failed_lookups,
    )
    n = r.num_examples
    print(f"Wrote {r.out_dir}: {sum(n.values()):,} images from {r.num_countries} countries "
          f"(train {n['train']:,}, validation {n['validation']:,}, test {n['test']:,}); "
          f"configs: {', '.join(r.configs)}.")
    if r.corrupt_images:
        print(f"Skipped {len(r.corrupt_images)} corrupt images (named in {Path(r.out_dir) / 'build_log.json'}).")
    if r.countries_without_gdp:
        print(f"Countries without GDP (kept, GDP null): {', '.join(r.countries_without_gdp)}.")
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
    p.add_argument("--out", metavar="DIR", help="also write images_per_country.png (map and bars) and "
                                                "summary.json into DIR")
    p.set_defaults(func=run_info)


_INFO_COLUMNS = ("country_iso3", "country_name", "gdp_per_capita_usd")


def _load_columns(path: Path, config):
    """Only the columns the summary needs (image bytes are never read or copied)."""
    import datasets

    if not path.exists():
        raise InputError(f"Dataset folder {str(path)!r} does not exist.")
    if not path.is_dir():
        raise InputError(f"Expected a dataset folder, got the file {str(path)!r}.")
    if any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
        dd = datasets.load_from_disk(str(path))
        if isinstance(dd, datasets.Dataset):
            dd = datasets.DatasetDict({"train": dd})
    else:
        try:
            dd = datasets.load_dataset(str(path), config, columns=list(_INFO_COLUMNS))
        except Exception:
            try:  # a folder without those columns, or whose builder takes no 'columns'
                dd = datasets.load_dataset(str(path), config)
            except Exception as e:
                raise InputError(f"Could not load a dataset from {str(path)!r}: {e}") from e
    for split, ds in dd.items():
        if "country_iso3" not in ds.column_names:
            raise InputError(f"Dataset {str(path)!r} (split {split!r}) has no 'country_iso3' column; "
                             f"columns present: {', '.join(ds.column_names)}. Is it a geoaudit dataset?")
    return dd


def dataset_summary(path, *, config=None) -> dict:
    """Rows per split, images per country (all splits), and countries without GDP."""
    import pandas as pd

    path = Path(path)
    dd = _load_columns(path, config)
    frames = []
    for split, ds in dd.items():
        cols = [c for c in _INFO_COLUMNS if c in ds.column_names]
        df = ds.select_columns(cols).to_pandas()
        df["split"] = split
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if "gdp_per_capita_usd" not in df:
        df["gdp_per_capita_usd"] = float("nan")
    if "country_name" not in df:
        df["country_name"] = df["country_iso3"]
    per = (df.groupby("country_iso3", dropna=False)
             .agg(images=("split", "size"), country_name=("country_name", "first"),
                  gdp_per_capita_usd=("gdp_per_capita_usd", "first"))
             .sort_values(["images"], ascending=False, kind="stable"))
    no_gdp = sorted(str(c) for c in per.index[per["gdp_per_capita_usd"].isna()])
    total = int(len(df))
    return {
        "path": str(path),
        "rows_per_split": {s: int(len(ds)) for s, ds in dd.items()},
        "total": total,
        "num_countries": int(per.index.notna().sum()),
        "images_per_country": [
            {"country_iso3": None if pd.isna(c) else str(c), "country_name": None if pd.isna(r.country_name) else str(r.country_name),
             "images": int(r.images), "share": float(r.images) / total if total else 0.0,
             "gdp_per_capita_usd": None if pd.isna(r.gdp_per_capita_usd) else float(r.gdp_per_capita_usd)}
            for c, r in per.iterrows()],
        "countries_without_gdp": no_gdp,
    }


def plot_images_per_country(summary, path, *, top=30):
    """A world map of images per country (log colour scale) above a bar chart of the top countries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    from geoaudit._io import atomic_save
    from geoaudit.data import load_boundaries

    counts = {r["country_iso3"]: r["images"] for r in summary["images_per_country"] if r["country_iso3"]}
    world = load_boundaries("110m").copy()
    world["images"] = world["iso3"].map(counts)
    fig, (ax_map, ax_bar) = plt.subplots(2, 1, figsize=(11, 10), gridspec_kw={"height_ratios": [1.3, 1]})
    world.plot(ax=ax_map, color="#eeeeee", edgecolor="#999999", linewidth=0.3)
    has = world[world["images"].notna()]
    if len(has):
        vmax = max(float(has["images"].max()), 2.0)
        has.plot(ax=ax_map, column="images", cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax),
                 edgecolor="#555555", linewidth=0.3, legend=True,
                 legend_kwds={"label": "images (log scale)", "shrink": 0.6})
    ax_map.set_axis_off()
    ax_map.set_title(f"Images per country: {summary['total']:,} images, {summary['num_countries']} countries")
    rows = [r for r in summary["images_per_country"] if r["country_iso3"]][:top]
    labels = [r["country_iso3"] for r in rows]
    vals = np.array([r["images"] for r in rows])
    colors = ["#d62728" if r["gdp_per_capita_usd"] is None else "#1f77b4" for r in rows]
    ax_bar.bar(range(len(rows)), vals, color=colors)
    ax_bar.set_xticks(range(len(rows)))
    ax_bar.set_xticklabels(labels, rotation=90, fontsize=8)
    ax_bar.set_ylabel("images")
    ax_bar.set_title(f"Top {len(rows)} countries (red: no World Bank GDP)")
    fig.tight_layout()
    atomic_save(Path(path), lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def run_info(args) -> int:
    from geoaudit._io import atomic_write_text, to_json

    if args.top < 1:
        raise InputError(f"The '--top' option must be a positive integer. Got {args.top} instead.")
    s = dataset_summary(args.dir, config=args.config)
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
    for f in s_files:
        print(f"Wrote {f}")
    return 0
