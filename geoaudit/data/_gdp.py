"""GDP per capita (World Bank indicator NY.GDP.PCAP.CD, current US$).

``gdp_per_capita(source="snapshot")`` reads the World Bank download shipped in the package;
the live World Bank API path (wbgapi) lives beside it in this module.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit.data._resources import WB_COUNTRY_META, WB_GDP_CSV, resource_path

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


def gdp_per_capita(year="latest", *, source="snapshot") -> pd.DataFrame:
    """GDP per capita per economy, indexed by World Bank (ISO 3166-1 alpha-3) code.

    Parameters
    ----------
    year : "latest" or int
        A calendar year, or the latest year with a value, per country.
    source : {"snapshot", "wbgapi", "auto"}
        "snapshot" reads the World Bank download shipped in the package; "wbgapi" asks the
        World Bank API; "auto" tries the API and falls back to the snapshot with a message.

    Returns
    -------
    pandas.DataFrame
        Columns country_name, gdp_per_capita_usd (NaN where the World Bank has no value),
        gdp_year (nullable int), region, income_group.
    """
    year = parse_gdp_year(year)
    if source == "snapshot":
        return _pick_year(_snapshot_wide(), year)
    if source in ("wbgapi", "auto"):
        try:
            return _pick_year(_fetch_wbgapi_wide(), year)
        except Exception as e:  # any network or API failure
            if source == "wbgapi":
                raise
            log.warning("World Bank API unavailable (%s); using the snapshot shipped with geoaudit "
                        "(last updated 2024-06-28).", e)
            return _pick_year(_snapshot_wide(), year)
    raise InputError(f"The 'source' parameter of gdp_per_capita must be one of 'snapshot', 'wbgapi', 'auto'. Got {source!r} instead.")


def _fetch_wbgapi_wide() -> pd.DataFrame:
    """Economies x years from the live World Bank API, in the snapshot's layout."""
    import wbgapi as wb

    data = wb.data.DataFrame(INDICATOR, economy="all", skipAggs=True, columns="time", labels=False)
    data.columns = [str(c).replace("YR", "") for c in data.columns]
    meta = _snapshot_wide()[["country_name", "region", "income_group"]]
    econ = {row["id"]: row["value"] for row in wb.economy.list()}
    wide = data.copy()
    wide.index.name = "iso3"
    wide.insert(0, "income_group", meta["income_group"].reindex(wide.index))
    wide.insert(0, "region", meta["region"].reindex(wide.index))
    wide.insert(0, "country_name", [econ.get(i, meta["country_name"].get(i, i)) for i in wide.index])
    return wide
