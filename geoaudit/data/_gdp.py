"""GDP per capita (World Bank indicator NY.GDP.PCAP.CD, current US$).

``gdp_per_capita(source="snapshot")`` reads the World Bank download shipped in the package;
the live World Bank API path (wbgapi) lives beside it in this module.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import GeoauditError, InputError
from geoaudit.data._resources import WB_ATTRIBUTION, WB_COUNTRY_META, WB_GDP_CSV, resource_path

log = logging.getLogger(__name__)

INDICATOR = "NY.GDP.PCAP.CD"
GDP_COLUMNS = ["country_name", "gdp_per_capita_usd", "gdp_year", "region", "income_group"]


@lru_cache(maxsize=1)
def _snapshot_wide() -> pd.DataFrame:
    """Economies (no aggregates) x years, plus name/region/income group."""
    gdp = pd.read_csv(resource_path(WB_GDP_CSV), skiprows=4, encoding="utf-8-sig")
    meta = pd.read_csv(resource_path(WB_COUNTRY_META), encoding="utf-8-sig")
    meta = meta[meta["Region"].notna() & (meta["Region"].astype(str).str.len() > 0)]
    df = gdp.merge(meta[["Country Code", "Region", "IncomeGroup"]], on="Country Code", how="inner")
    df = df.rename(columns={"Country Code": "iso3", "Country Name": "country_name",
                            "Region": "region", "IncomeGroup": "income_group"})
    year_cols = [c for c in df.columns if str(c).isdigit()]
    df = df[["iso3", "country_name", "region", "income_group", *year_cols]].set_index("iso3")
    df[year_cols] = df[year_cols].astype(float)
    return df


def snapshot_years() -> list[int]:
    return [int(c) for c in _snapshot_wide().columns if str(c).isdigit()]


def _pick_year(wide: pd.DataFrame, year) -> pd.DataFrame:
    """From economies x years choose one value per economy: a given year or the latest."""
    year_cols = [c for c in wide.columns if str(c).isdigit()]
    values = wide[year_cols]
    out = wide[["country_name", "region", "income_group"]].copy()
    if year == "latest":
        has = values.notna().to_numpy()
        # index of the last non-missing year per row (-1 where none)
        last = np.where(has.any(axis=1), has.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1), -1)
        vals = values.to_numpy()
        out["gdp_per_capita_usd"] = [vals[i, j] if j >= 0 else np.nan for i, j in enumerate(last)]
        out["gdp_year"] = [int(year_cols[j]) if j >= 0 else pd.NA for j in last]
    else:
        col = str(year)
        if col not in values.columns:
            raise InputError(
                f"No GDP column for year {year}; the available years are {year_cols[0]}-{year_cols[-1]} or 'latest'."
            )
        out["gdp_per_capita_usd"] = values[col]
        out["gdp_year"] = [int(year) if pd.notna(v) else pd.NA for v in values[col]]
    out["gdp_year"] = out["gdp_year"].astype("Int64")
    return out[GDP_COLUMNS]


def parse_gdp_year(value):
    """'latest' or a four-digit year, as accepted on the command line."""
    if value in (None, "latest"):
        return "latest"
    try:
        year = int(value)
    except (TypeError, ValueError):
        raise InputError(f"The 'gdp_year' parameter must be 'latest' or a year such as 2019. Got {value!r} instead.") from None
    if not 1960 <= year <= 2100:
        raise InputError(f"The 'gdp_year' parameter must be 'latest' or a year in [1960, 2100]. Got {value!r} instead.")
    return year


def gdp_per_capita(year="latest", *, source="snapshot", offline=False) -> pd.DataFrame:
    """GDP per capita per economy, indexed by World Bank (ISO 3166-1 alpha-3) code.

    Parameters
    ----------
    year : "latest" or int
        A calendar year, or the latest year with a value, per country.
    source : {"snapshot", "wbgapi", "auto"}
        "snapshot" reads the World Bank download shipped in the package; "wbgapi" asks the
        World Bank API (``wbgapi``); "auto" tries the API and falls back to the snapshot with
        a warning.
    offline : bool
        Never touch the network: "wbgapi" and "auto" use the snapshot, with a message saying so.

    Returns
    -------
    pandas.DataFrame
        Columns country_name, gdp_per_capita_usd (NaN where the World Bank has no value),
        gdp_year (nullable int), region, income_group.  Economies without a value are kept
        (NaN) so callers can flag them.

    Raises
    ------
    InputError
        Bad ``year`` or ``source``.
    GeoauditError
        ``source="wbgapi"`` (not offline) and the API cannot be reached.
    """
    return resolve_gdp(year, source=source, offline=offline)[0]


def resolve_gdp(year="latest", *, source="auto", offline=False, timeout_s=30.0):
    """Like :func:`gdp_per_capita`, also saying where the numbers came from.

    Returns
    -------
    (pandas.DataFrame, str)
        The table and its provenance, e.g. ``"World Bank API (wbgapi), NY.GDP.PCAP.CD, fetched
        2025-01-31"`` or the snapshot's attribution.
    """
    year = parse_gdp_year(year)
    if source not in ("snapshot", "wbgapi", "auto"):
        raise InputError(f"The 'source' parameter of gdp_per_capita must be one of 'snapshot', 'wbgapi', 'auto'. "
                         f"Got {source!r} instead.")
    if source == "snapshot":
        return _pick_year(_snapshot_wide(), year), SNAPSHOT_PROVENANCE
    if offline:
        log.info("Offline: GDP per capita comes from the World Bank snapshot shipped with geoaudit "
                 "(NY.GDP.PCAP.CD, last updated 2024-06-28), not from the live World Bank API.")
        return _pick_year(_snapshot_wide(), year), SNAPSHOT_PROVENANCE
    try:
        wide = _fetch_wbgapi_wide(timeout_s=timeout_s)
    except Exception as e:  # any network or API failure
        if source == "wbgapi":
            raise GeoauditError(f"The World Bank API could not be reached ({type(e).__name__}: {e}); "
                                "use offline=True for the snapshot shipped with geoaudit.") from e
        log.warning("World Bank API unavailable (%s: %s); using the snapshot shipped with geoaudit "
                    "(NY.GDP.PCAP.CD, last updated 2024-06-28).", type(e).__name__, e)
        return _pick_year(_snapshot_wide(), year), SNAPSHOT_PROVENANCE
    import datetime

    today = datetime.date.today().isoformat()
    return _pick_year(wide, year), f"World Bank API (wbgapi), {INDICATOR}, fetched {today}, CC BY 4.0"


SNAPSHOT_PROVENANCE = WB_ATTRIBUTION + " (snapshot shipped with geoaudit)"


def wbgapi_years(code, *, timeout_s=30.0, with_names=False):
    """Economies x years (str columns, float values) of World Bank indicator ``code``, live.

    ``wbgapi.data.fetch`` yields one dict per economy and year, e.g.
    ``{"value": 40886.3, "series": "NY.GDP.PCAP.CD", "economy": "FRA", "aggregate": False,
    "time": 2019}`` (``numericTimeKeys=True``); ``wbgapi.economy.list`` yields
    ``{"id": "FRA", "value": "France", ...}``, read when ``with_names``.

    Returns
    -------
    pandas.DataFrame, or (pandas.DataFrame, dict) with ``with_names``
    """
    import wbgapi as wb

    saved = wb.get_options
    wb.get_options = {"timeout": timeout_s, **saved}  # wbgapi has no timeout of its own
    try:
        rows = [(r["economy"], int(r["time"]), r["value"])
                for r in wb.data.fetch(code, economy="all", skipAggs=True, numericTimeKeys=True)
                if str(r.get("time", "")).isdigit()]
        names = {r["id"]: r["value"] for r in wb.economy.list(skipAggs=True)} if with_names else None
    finally:
        wb.get_options = saved
    if not rows:
        raise GeoauditError(f"The World Bank API returned no values for indicator {code}.")
    long = pd.DataFrame(rows, columns=["iso3", "year", "value"])
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    wide = long.pivot_table(index="iso3", columns="year", values="value", aggfunc="first", dropna=False)
    wide = wide.reindex(columns=sorted(wide.columns))
    wide.columns = [str(c) for c in wide.columns]
    wide = wide.astype(float)
    return (wide, names) if with_names else wide


def _fetch_wbgapi_wide(*, timeout_s=30.0) -> pd.DataFrame:
    """GDP per capita from the live World Bank API, in the snapshot's layout (region and income
    group names from the shipped metadata, same World Bank codes)."""
    wide, names = wbgapi_years(INDICATOR, timeout_s=timeout_s, with_names=True)
    meta = _snapshot_wide()[["country_name", "region", "income_group"]]
    ids = wide.index
    out = pd.DataFrame(index=ids)
    out.index.name = "iso3"
    out["country_name"] = [names.get(i) or meta["country_name"].get(i, i) for i in ids]
    out["region"] = meta["region"].reindex(ids).to_numpy()
    out["income_group"] = meta["income_group"].reindex(ids).to_numpy()
    return pd.concat([out, wide], axis=1)
