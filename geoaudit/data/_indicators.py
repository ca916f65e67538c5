"""World Bank indicators by code, as country covariates.

GDP per capita in current US$ (``NY.GDP.PCAP.CD``) is shipped with geoaudit (see
resources/SOURCES.md) and is the default covariate.  Any other World Development Indicators
code (e.g. ``NY.GDP.PCAP.PP.CD``, GDP per capita PPP) comes from the live World Bank API
through ``wbgapi``; no other indicator is shipped (see resources/SOURCES_indicators.md), so
those need the network, and an offline request for them says so in one line.
"""
from __future__ import annotations

import datetime
import logging

import numpy as np
import pandas as pd

from geoaudit._errors import GeoauditError, InputError
from geoaudit.data._gdp import INDICATOR as GDP_INDICATOR
from geoaudit.data._gdp import SNAPSHOT_PROVENANCE, _pick_year, _snapshot_wide, parse_gdp_year, wbgapi_years

log = logging.getLogger(__name__)

#: Indicators shipped with geoaudit (usable offline).
SHIPPED_INDICATORS = {GDP_INDICATOR: "GDP per capita (current US$)"}
#: A few indicators people audit against, with their World Bank names (fetched live).
COMMON_INDICATORS = {
    GDP_INDICATOR: "GDP per capita (current US$)",
    "NY.GDP.PCAP.PP.CD": "GDP per capita, PPP (current international $)",
    "NY.GDP.PCAP.KD": "GDP per capita (constant 2015 US$)",
    "NY.GNP.PCAP.CD": "GNI per capita, Atlas method (current US$)",
    "SI.POV.GINI": "Gini index",
    "IT.NET.USER.ZS": "Individuals using the Internet (% of population)",
}
INDICATOR_COLUMNS = ["country_name", "value", "year", "region", "income_group"]


def _check_code(code):
    if not isinstance(code, str) or not code.strip() or " " in code.strip():
        raise InputError(f"The 'code' parameter of indicator must be a World Bank indicator code such as "
                         f"'NY.GDP.PCAP.PP.CD'. Got {code!r} instead.")
    return code.strip().upper()


def covariate_column(code) -> str:
    """Column name under which an indicator is added to a dataset.

    Parameters
    ----------
    code : str
        A World Bank indicator code.

    Returns
    -------
    str
        ``gdp_per_capita_usd`` for NY.GDP.PCAP.CD, else the code in lower case with
        underscores (``ny_gdp_pcap_pp_cd``).
    """
    code = _check_code(code)
    return "gdp_per_capita_usd" if code == GDP_INDICATOR else code.lower().replace(".", "_")


def indicator(code=GDP_INDICATOR, year="latest", *, source="auto", offline=False, timeout_s=30.0):
    """One World Bank indicator per economy, with the year of each value and its provenance.

    Parameters
    ----------
    code : str, default "NY.GDP.PCAP.CD"
        A World Development Indicators code.
    year : "latest" or int
        A calendar year, or the latest year with a value, per economy.
    source : {"auto", "snapshot", "wbgapi"}
        "snapshot": only the shipped indicators; "wbgapi": the live API; "auto": the snapshot
        for a shipped indicator, else the API.
    offline : bool
        Never touch the network (only shipped indicators are then available).
    timeout_s : float
        Timeout of each API request.

    Returns
    -------
    (pandas.DataFrame, str)
        Indexed by ISO3 code, columns country_name, value, year (nullable int), region,
        income_group; and the provenance (source, code, date fetched, licence).

    Raises
    ------
    InputError
        A bad code, year or source.
    GeoauditError
        An indicator that is not shipped, when offline or when the API cannot be reached.
    """
    code = _check_code(code)
    year = parse_gdp_year(year)
    if source not in ("auto", "snapshot", "wbgapi"):
        raise InputError(f"The 'source' parameter of indicator must be one of 'auto', 'snapshot', 'wbgapi'. "
                         f"Got {source!r} instead.")
    if code in SHIPPED_INDICATORS and (source == "snapshot" or offline or source == "auto"):
        t = _pick_year(_snapshot_wide(), year).rename(columns={"gdp_per_capita_usd": "value", "gdp_year": "year"})
        return t[INDICATOR_COLUMNS], SNAPSHOT_PROVENANCE
    if source == "snapshot" or offline:
        raise GeoauditError(
            f"World Bank indicator {code} is not shipped with geoaudit (shipped: {', '.join(SHIPPED_INDICATORS)}); "
            "it needs the live World Bank API (wbgapi), which offline use does not reach."
        )
    try:
        wide = _fetch_indicator_wide(code, timeout_s=timeout_s)
    except GeoauditError:
        raise
    except Exception as e:  # any network or API failure
        raise GeoauditError(f"The World Bank API could not be reached for {code} ({type(e).__name__}: {e}).") from e
    t = _pick_year(wide, year).rename(columns={"gdp_per_capita_usd": "value", "gdp_year": "year"})
    today = datetime.date.today().isoformat()
    return t[INDICATOR_COLUMNS], f"World Bank API (wbgapi), {code}, fetched {today}, CC BY 4.0"


def _fetch_indicator_wide(code, *, timeout_s=30.0) -> pd.DataFrame:
    """Economies x years of ``code`` from the World Bank API, in the GDP snapshot's layout."""
    wide = wbgapi_years(code, timeout_s=timeout_s)
    meta = _snapshot_wide()[["country_name", "region", "income_group"]]
    out = meta.reindex(wide.index)
    out["country_name"] = out["country_name"].fillna(pd.Series(wide.index, index=wide.index))
    return pd.concat([out, wide], axis=1)


def indicator_values(iso3, code=GDP_INDICATOR, year="latest", **kwargs):
    """Indicator value and year for each ISO3 code (NaN / missing where the World Bank has none).

    Returns
    -------
    (numpy.ndarray of float, numpy.ndarray of object, str)
        Values, years and the provenance.
    """
    table, prov = indicator(code, year, **kwargs)
    codes = pd.Series(np.asarray(iso3, dtype=object)).astype(str)
    vals = table["value"].reindex(codes).to_numpy(float)
    years = table["year"].reindex(codes).to_numpy(dtype=object)
    years = np.array([None if pd.isna(y) else int(y) for y in years], dtype=object)
    return vals, years, prov
