"""Summaries of a geo-located dataset folder: rows per split, images per country, GDP years,
and a full check that every shard and image can be read."""
from __future__ import annotations

import io
from pathlib import Path

from geoaudit._errors import InputError

_INFO_COLUMNS = ("country_iso3", "country_name", "gdp_per_capita_usd", "gdp_year")


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
                bad = _first_bad_shard(path)
                raise InputError(bad or f"Could not load a dataset from {str(path)!r}: {e}") from e
    for split, ds in dd.items():
        if "country_iso3" not in ds.column_names:
            raise InputError(f"Dataset {str(path)!r} (split {split!r}) has no 'country_iso3' column; "
                             f"columns present: {', '.join(ds.column_names)}. Is it a geoaudit dataset?")
    return dd


def _first_bad_shard(path: Path):
    """A message naming the first Parquet file under ``path`` that cannot be read, or None."""
    import pyarrow.parquet as pq

    for f in sorted(path.rglob("*.parquet")):
        try:
            pq.ParquetFile(f).metadata  # noqa: B018 (reads the footer)
        except Exception as e:  # pyarrow raises several types for a damaged file
            return f"The Parquet shard {str(f)!r} is damaged and cannot be read ({type(e).__name__}: {e})."
    return None


def dataset_summary(path, *, config=None) -> dict:
    """Rows per split, images per country (all splits), GDP years and countries without GDP.

    Parameters
    ----------
    path : str or Path
        A dataset folder with geoaudit's schema (ImageNet geo-location, GeoShapes).
    config : str, optional
        The configuration to describe (default: the folder's default).

    Returns
    -------
    dict
        ``path``, ``rows_per_split``, ``total``, ``num_countries``, ``images_per_country``
        (list of dicts), ``countries_without_gdp`` and ``gdp_years`` (images per GDP year).
    """
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
    years = {}
    if "gdp_year" in df:
        for y, n in df["gdp_year"].value_counts(dropna=False).items():
            years["none" if pd.isna(y) else str(int(y))] = int(n)
    return {
        "path": str(path),
        "rows_per_split": {s: int(len(ds)) for s, ds in dd.items()},
        "total": total,
        "num_countries": int(per.index.notna().sum()),
        "images_per_country": [
            {"country_iso3": None if pd.isna(c) else str(c),
             "country_name": None if pd.isna(r.country_name) else str(r.country_name),
             "images": int(r.images), "share": float(r.images) / total if total else 0.0,
             "gdp_per_capita_usd": None if pd.isna(r.gdp_per_capita_usd) else float(r.gdp_per_capita_usd)}
            for c, r in per.iterrows()],
        "countries_without_gdp": no_gdp,
        "gdp_years": dict(sorted(years.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def verify_dataset(path) -> dict:
    """Read every Parquet shard of a dataset folder and decode every image in it.

    Parameters
    ----------
    path : str or Path
        The dataset folder.

    Returns
    -------
    dict
        ``shards`` and ``rows`` read, ``images`` decoded.

    Raises
    ------
    InputError
        Naming the first shard that cannot be read, or the shard, row and image id of the
        first image that cannot be decoded.
    """
    import pyarrow.parquet as pq
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"Dataset folder {str(path)!r} does not exist or is not a folder.")
    shards = sorted(path.rglob("*.parquet"))
    if not shards:
        raise InputError(f"Dataset folder {str(path)!r} holds no Parquet shards.")
    rows = images = 0
    for f in shards:
        try:
            pf = pq.ParquetFile(f)
            batches = pf.iter_batches(batch_size=256)
            row = 0
            for rb in batches:
                cols = rb.schema.names
                ids = rb.column(cols.index("image_id")).to_pylist() if "image_id" in cols else [None] * rb.num_rows
                imgs = rb.column(cols.index("image")).to_pylist() if "image" in cols else None
                for i in range(rb.num_rows):
                    if imgs is not None and imgs[i] is not None:
                        data = imgs[i].get("bytes") if isinstance(imgs[i], dict) else None
                        try:
                            with Image.open(io.BytesIO(data)) as im:
                                im.load()
                        except Exception as e:  # PIL raises many types for broken bytes
                            raise InputError(f"Image {ids[i] or '?'} (row {row + i} of {str(f)!r}) cannot be "
                                             f"decoded: {type(e).__name__}.") from None
                        images += 1
                row += rb.num_rows
            rows += row
        except InputError:
            raise
        except Exception as e:  # a damaged shard: pyarrow raises OSError, ArrowInvalid, ...
            raise InputError(f"The Parquet shard {str(f)!r} is damaged and cannot be read "
                             f"({type(e).__name__}: {e}).") from None
    return {"shards": len(shards), "rows": rows, "images": images}
