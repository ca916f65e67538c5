"""Datasets that are not in geoaudit's schema: any table or Hugging Face dataset whose rows carry a
country (a name, ISO2 or ISO3 code) or coordinates, plus field mappings for Dollar Street and
GeoDE as they are published on the Hub.

:func:`add_geo_columns` adds the columns the audit reads: ``country_iso3``, ``country_name``,
the covariate (``gdp_per_capita_usd`` by default, from the shipped World Bank data) and its
year, ``region``, ``income_group`` (World Bank) and ``continent`` (Natural Earth).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns
from geoaudit.data._country_names import country_codes, country_display_name, country_groups
from geoaudit.data._indicators import GDP_INDICATOR, covariate_column, indicator_values

log = logging.getLogger(__name__)

#: Field mappings of published datasets.
#: Dollar Street (MLCommons; e.g. ``nlphuji/dollar_street_test`` on the Hub): ``country.id`` is a
#: lower-case ISO2 code, ``income`` the monthly income in US$ (PPP) as Dollar Street
#: publishes it, ``place`` the household, ``imagenet_sysnet_id`` the list of ImageNet wnids
#: that count as correct for the image.
#: GeoDE (``MLap/GeoDE``): ``object`` is the class name, ``region`` one of six world regions,
#: ``ip_country`` the country name of the contributor.
PRESETS = {
    "dollar-street": {"country_col": "country.id", "label_col": "imagenet_sysnet_id", "income_col": "income",
                      "household_col": "place", "region_col": "region.id"},
    "geode": {"country_col": "ip_country", "label_col": "object", "region_col": "region"},
}
GROUPINGS = ("country", "region", "income_group", "continent", "income-band", "household")


def preset(name) -> dict:
    """The field mapping of a published dataset.

    Parameters
    ----------
    name : {"dollar-street", "geode"}

    Returns
    -------
    dict
        country_col, label_col and, where published, income_col, household_col, region_col.
    """
    key = str(name).lower().replace("_", "-").replace(" ", "-")
    if key not in PRESETS:
        raise InputError(f"Unknown dataset preset {name!r}; known: {', '.join(PRESETS)}.")
    return dict(PRESETS[key])


def _columns(data):
    return list(data.columns) if isinstance(data, pd.DataFrame) else list(data.column_names)


def _frame(data, cols):
    if isinstance(data, pd.DataFrame):
        return data[cols].copy()
    return data.select_columns(cols).to_pandas()


def add_geo_columns(data, *, country_col=None, lat_col=None, lon_col=None, indicator=GDP_INDICATOR,
                    year="latest", on_unmatched="raise", aliases=None, offline=False,
                    drop_missing_covariate=False):
    """Add country code, covariate, region, income group and continent to a table or dataset.

    Parameters
    ----------
    data : pandas.DataFrame or datasets.Dataset
        Rows with a country column or coordinate columns.
    country_col : str, optional
        Column holding a country name, ISO2, ISO3 or numeric code (any case).
    lat_col, lon_col : str, optional
        Coordinate columns (degrees), used when ``country_col`` is not given: each point is
        reverse-geocoded against the shipped Natural Earth boundaries.
    indicator : str, default "NY.GDP.PCAP.CD"
        The World Bank indicator used as covariate: the shipped GDP per capita (current US$)
        or any code fetched through wbgapi.
    year : "latest" or int
        Year of the indicator ("latest" = the latest year with a value, per country).
    on_unmatched : {"raise", "drop"}
        Rows whose country (or coordinates) match nothing: an error naming them with the
        closest matches, or dropped with a logged count.
    aliases : dict of str -> str, optional
        Extra country spellings -> ISO3 codes.
    offline : bool
        Never touch the network (only shipped indicators).
    drop_missing_covariate : bool
        Drop rows of countries without an indicator value instead of keeping NaN.

    Returns
    -------
    same type as ``data``
        With columns country_iso3, country_name, the covariate (``gdp_per_capita_usd`` or the
        code in lower case), its year (``gdp_year`` or ``<column>_year``), region,
        income_group (World Bank), continent (Natural Earth).  The dataset's own region,
        income_group or continent columns are kept as ``dataset_<name>``.  The provenance of the covariate is logged (and kept in
        ``DataFrame.attrs["covariate_source"]`` for a table).

    Raises
    ------
    InputError
        Missing columns, unmatched countries (``on_unmatched="raise"``), no rows left.
    """
    if on_unmatched not in ("raise", "drop"):
        raise InputError(f"The 'on_unmatched' parameter of add_geo_columns must be 'raise' or 'drop'. "
                         f"Got {on_unmatched!r} instead.")
    cols = _columns(data)
    if country_col:
        check_columns(cols, [country_col], source="The dataset")
        values = _frame(data, [country_col])[country_col]
        iso3 = country_codes(values.to_numpy(dtype=object), on_unmatched="keep" if on_unmatched == "drop" else "raise",
                             aliases=aliases, source=f"Column {country_col!r}")
        missing = values.isna().to_numpy()
        if missing.any() and on_unmatched == "raise":
            raise InputError(f"Column {country_col!r} is empty in {int(missing.sum())} row(s) "
                             f"(first at row {int(np.flatnonzero(missing)[0])}); fill or drop them.")
    elif lat_col and lon_col:
        from geoaudit.data._geocode import reverse_geocode

        check_columns(cols, [lat_col, lon_col], source="The dataset")
        f = _frame(data, [lat_col, lon_col])
        geo = reverse_geocode(f[lat_col].to_numpy(float), f[lon_col].to_numpy(float))
        iso3 = np.array([c if isinstance(c, str) and c else None for c in geo["country_iso3"]], dtype=object)
        if on_unmatched == "raise" and any(c is None for c in iso3):
            bad = [i for i, c in enumerate(iso3) if c is None]
            raise InputError(f"{len(bad)} row(s) have coordinates in no country (first at row {bad[0]}: "
                             f"{f[lat_col].iloc[bad[0]]}, {f[lon_col].iloc[bad[0]]}); drop them on purpose.")
    else:
        raise InputError("add_geo_columns needs a country column (country_col) or coordinate columns "
                         f"(lat_col and lon_col); columns present: {', '.join(map(repr, cols))}.")
    keep = np.array([c is not None for c in iso3])
    n_dropped = int((~keep).sum())
    if n_dropped:
        log.warning("dropping %d of %d row(s) without a matched country", n_dropped, len(iso3))
    cov_col = covariate_column(indicator)
    year_col = "gdp_year" if cov_col == "gdp_per_capita_usd" else f"{cov_col}_year"
    codes = np.array([c if c is not None else "" for c in iso3], dtype=object)
    vals, years, prov = indicator_values(codes, indicator, year, offline=offline)
    log.info("covariate %s: %s", cov_col, prov)
    if drop_missing_covariate:
        no_cov = keep & np.isnan(vals)
        if no_cov.any():
            log.warning("dropping %d row(s) of countries without %s: %s", int(no_cov.sum()), indicator,
                        ", ".join(sorted(set(codes[no_cov]))[:10]))
        keep &= ~no_cov
    groups = country_groups(codes)
    new = {
        "country_iso3": codes,
        "country_name": np.array([country_display_name(c) if c else None for c in codes], dtype=object),
        cov_col: vals,
        year_col: years,
        "region": groups["region"].to_numpy(dtype=object),
        "income_group": groups["income_group"].to_numpy(dtype=object),
        "continent": groups["continent"].to_numpy(dtype=object),
    }
    # the dataset's own columns of the same names (GeoDE's six-region "region") are kept as dataset_<name>
    clash = [k for k in ("region", "income_group", "continent") if k in cols]
    if clash:
        log.info("keeping the dataset's own %s as %s", ", ".join(clash), ", ".join(f"dataset_{k}" for k in clash))
        data = (data.rename(columns={k: f"dataset_{k}" for k in clash}) if isinstance(data, pd.DataFrame)
                else data.rename_columns({k: f"dataset_{k}" for k in clash}))
        cols = _columns(data)
    if isinstance(data, pd.DataFrame):
        out = data.copy()
        for k, v in new.items():
            out[k] = v
        out = out[keep].reset_index(drop=True)
        out.attrs["covariate_source"] = prov
    else:
        out = data.remove_columns([k for k in new if k in cols])
        for k, v in new.items():
            if k == year_col:
                v = [None if y is None else int(y) for y in v]
            elif v.dtype == object:
                v = [None if (x is None or (isinstance(x, float) and np.isnan(x))) else str(x) for x in v]
            out = out.add_column(k, list(v))
        if n_dropped or not keep.all():
            out = out.select(np.flatnonzero(keep))
    if len(out) == 0:
        raise InputError("No rows are left after matching countries.")
    return out


def income_bands(values, bands=4):
    """Band of each per-image income: quantile bands (``bands`` an int) or fixed edges.

    Parameters
    ----------
    values : array-like of float
        Per-image income (e.g. Dollar Street's monthly household income).
    bands : int or sequence of float, default 4
        Number of quantile bands, or increasing band edges (values outside go to the end bands).

    Returns
    -------
    (numpy.ndarray of str, numpy.ndarray of float)
        The band label of each value (``"B1 [27, 180)"``, sortable) and the band's median
        income, its covariate.
    """
    v = np.asarray(values, dtype=float)
    if np.isnan(v).any():
        raise InputError(f"{int(np.isnan(v).sum())} income value(s) are missing; drop those rows first.")
    if np.isscalar(bands) or isinstance(bands, int):
        k = int(bands)
        if k < 2:
            raise InputError(f"The 'bands' parameter of income_bands must be >= 2 or a list of edges. Got {bands!r}.")
        edges = np.unique(np.quantile(v, np.linspace(0, 1, k + 1)))
    else:
        edges = np.asarray(sorted(bands), dtype=float)
        edges = np.unique(np.concatenate([[min(v.min(), edges[0])], edges, [max(v.max(), edges[-1])]]))
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
    width = len(str(len(edges) - 1))
    labels = np.array([f"B{i + 1:0{width}d} [{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == len(edges) - 2 else ')'}"
                       for i in idx], dtype=object)
    med = pd.Series(v).groupby(labels).median()
    return labels, med.reindex(labels).to_numpy(float)


def load_country_dataset(path, split=None, *, preset_name=None, country_col=None, lat_col=None, lon_col=None,
                         indicator=GDP_INDICATOR, year="latest", on_unmatched="raise", aliases=None,
                         offline=False):
    """Load a dataset whose rows carry a country (or coordinates) and add the geo columns.

    Parameters
    ----------
    path : str or Path
        A local folder (Parquet/CSV/image folder or ``save_to_disk``), a CSV/Parquet file, or
        a Hugging Face Hub id (loaded through ``datasets``, which may download it).
    split : str, optional
        The split to use (default: the only split, or "test", or "train").
    preset_name : {"dollar-street", "geode"}, optional
        Field mapping of a published dataset; explicit column arguments override it.
    country_col, lat_col, lon_col, indicator, year, on_unmatched, aliases, offline
        As in :func:`add_geo_columns`.

    Returns
    -------
    (datasets.Dataset, dict)
        The split with geo columns, and the field mapping used (country_col, label_col, ...).
    """
    import datasets

    fields = preset(preset_name) if preset_name else {}
    for k, v in (("country_col", country_col), ("lat_col", lat_col), ("lon_col", lon_col)):
        if v:
            fields[k] = v
    p = Path(str(path))
    try:
        if p.is_file():
            kind = "parquet" if p.suffix.lower() in (".parquet", ".pq") else "csv"
            dd = datasets.load_dataset(kind, data_files=str(p))
        elif p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "dataset_info.json").exists()):
            dd = datasets.load_from_disk(str(p))
        else:
            dd = datasets.load_dataset(str(path))
    except Exception as e:  # datasets raises many types for a bad path or id
        raise InputError(f"Could not load a dataset from {str(path)!r}: {type(e).__name__}: {e}") from e
    if isinstance(dd, datasets.Dataset):
        ds = dd
    else:
        if split is None:
            split = next((s for s in ("test", "train") if s in dd), None) if len(dd) > 1 else next(iter(dd))
        if split not in dd:
            raise InputError(f"Dataset {str(path)!r} has no split {split!r}; splits present: {', '.join(dd)}.")
        ds = dd[split]
    ds = add_geo_columns(ds, country_col=fields.get("country_col"), lat_col=fields.get("lat_col"),
                         lon_col=fields.get("lon_col"), indicator=indicator, year=year,
                         on_unmatched=on_unmatched, aliases=aliases, offline=offline)
    return ds, fields
