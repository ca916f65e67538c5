"""Country names and codes as people write them -> World Bank ISO3 codes.

Accepted: ISO 3166-1 alpha-2 (any case, e.g. Dollar Street's ``"in"``), alpha-3, numeric,
the names and official names of ISO 3166 (``pycountry``), the World Bank's economy names
(``"Korea, Rep."``), Natural Earth's names (``"South Korea"``, ``"Turkey"``) and a few common
short forms (``"USA"``, ``"UK"``, ``"Ivory Coast"``).  Matching ignores case, accents and
punctuation.  A value that matches nothing is never dropped silently: :func:`country_codes`
raises naming it with the closest known names, or drops it only when asked, with a count.

Codes are World Bank codes, so they join with the shipped GDP table: Kosovo is XKX.
"""
from __future__ import annotations

import difflib
import gzip
import json
import logging
import re
import unicodedata
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import DependencyError, InputError
from geoaudit.data._resources import BOUNDARIES_50M, WB_COUNTRY_META, WB_GDP_CSV, resource_path

log = logging.getLogger(__name__)

UNMATCHED = ("raise", "drop", "keep")

# Common ways of writing a country that none of the sources above spell out.
ALIASES = {
    "usa": "USA", "us": "USA", "u s": "USA", "u s a": "USA", "america": "USA",
    "united states of america": "USA", "uk": "GBR", "u k": "GBR", "britain": "GBR",
    "great britain": "GBR", "england": "GBR", "scotland": "GBR", "wales": "GBR",
    "northern ireland": "GBR", "ivory coast": "CIV", "cote divoire": "CIV", "czech republic": "CZE",
    "holland": "NLD", "burma": "MMR", "swaziland": "SWZ", "macedonia": "MKD", "cape verde": "CPV",
    "east timor": "TLS", "vatican": "VAT", "vatican city": "VAT", "drc": "COD", "dr congo": "COD",
    "dr of the congo": "COD", "congo kinshasa": "COD", "democratic republic of congo": "COD",
    "congo brazzaville": "COG", "republic of congo": "COG", "kosovo": "XKX", "palestine": "PSE",
    "south korea": "KOR", "north korea": "PRK", "korea": "KOR", "russia": "RUS", "laos": "LAO",
    "vietnam": "VNM", "syria": "SYR", "iran": "IRN", "turkey": "TUR", "turkiye": "TUR",
    "bolivia": "BOL", "venezuela": "VEN", "tanzania": "TZA", "moldova": "MDA", "uae": "ARE",
    "emirates": "ARE", "brunei": "BRN", "micronesia": "FSM", "the gambia": "GMB", "gambia": "GMB",
    "bahamas": "BHS", "the bahamas": "BHS", "hong kong": "HKG", "macau": "MAC", "macao": "MAC",
    "taiwan": "TWN", "egypt": "EGY", "yemen": "YEM", "kyrgyzstan": "KGZ", "slovakia": "SVK",
    "st lucia": "LCA", "st kitts and nevis": "KNA", "st vincent and the grenadines": "VCT",
    "sao tome and principe": "STP", "curacao": "CUW",
}


def normalize_name(value) -> str:
    """Lower case, no accents, no punctuation, single spaces: the key names are matched on."""
    s = unicodedata.normalize("NFKD", str(value))
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = s.replace("&", " and ").replace("'", "").replace("\u2019", "")
    s = re.sub(r"[^a-z0-9]+", " ", s).strip()
    return s


@lru_cache(maxsize=1)
def _economies() -> dict:
    """World Bank economy code -> World Bank name (economies only, no aggregates)."""
    meta = pd.read_csv(resource_path(WB_COUNTRY_META), encoding="utf-8-sig")
    meta = meta[meta["Region"].notna() & (meta["Region"].astype(str).str.len() > 0)]
    return dict(zip(meta["Country Code"].astype(str), meta["TableName"].astype(str)))


@lru_cache(maxsize=1)
def _name_index() -> tuple[dict, dict, dict]:
    """(name key -> ISO3, ISO2 -> ISO3, display name of each ISO3)."""
    try:
        import pycountry
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DependencyError("Country names need the 'pycountry' package: pip install pycountry") from e
    names, iso2, display = {}, {}, {}

    def add(key_source, code):
        key = normalize_name(key_source)
        if key and key not in names:
            names[key] = code

    for c in pycountry.countries:
        code = c.alpha_3
        iso2[c.alpha_2] = code
        display.setdefault(code, getattr(c, "common_name", None) or c.name)
        for attr in ("common_name", "name", "official_name"):
            if getattr(c, attr, None):
                add(getattr(c, attr), code)
        names.setdefault("n" + str(c.numeric), code)  # numeric codes as "n250"
    for code, name in _economies().items():
        add(name, code)
        display.setdefault(code, name)
    gdp = pd.read_csv(resource_path(WB_GDP_CSV), skiprows=4, encoding="utf-8-sig", usecols=[0, 1])
    for name, code in zip(gdp["Country Name"], gdp["Country Code"]):
        if code in _economies():
            add(name, code)
    from geoaudit.data._countries import NE_TO_WB

    with gzip.open(resource_path(BOUNDARIES_50M), "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    for feat in features:
        p = feat["properties"]
        code = NE_TO_WB.get(p["ADM0_A3"], p["ADM0_A3"])
        for k in ("NAME", "NAME_LONG", "ADMIN", "BRK_NAME", "NAME_CIAWF", "NAME_SORT", "NAME_ALT", "FORMAL_EN"):
            if p.get(k):
                add(p[k], code)
        if p.get("ISO_A2") and p["ISO_A2"] != "-99":
            iso2.setdefault(p["ISO_A2"], code)
    for key, code in ALIASES.items():
        names.setdefault(key, code)
    iso2.setdefault("XK", "XKX")
    display.setdefault("XKX", "Kosovo")
    return names, iso2, display


def _match_one(value, names, iso2, display):
    raw = str(value).strip()
    if not raw:
        return None
    up = raw.upper()
    if len(up) == 2 and up.isalpha():
        return iso2.get(up)
    if len(up) == 3 and up.isalpha() and (up in display or up in _economies()):
        return up
    if raw.isdigit():
        return names.get("n" + str(int(raw)))
    key = normalize_name(raw)
    if key in names:
        return names[key]
    if key.startswith("the ") and key[4:] in names:
        return names[key[4:]]
    return None


def closest_countries(value, k=3) -> list[str]:
    """The known country names closest to a value (for error messages).

    Parameters
    ----------
    value : str
    k : int, default 3

    Returns
    -------
    list of str
        Up to ``k`` entries "Name (ISO3)", closest first.
    """
    names, _, display = _name_index()
    hits = difflib.get_close_matches(normalize_name(value), list(names), n=12, cutoff=0.5)
    out = []
    for h in hits:
        label = f"{display.get(names[h], h)} ({names[h]})"
        if label not in out:
            out.append(label)
    return out[:k]


def country_codes(values, *, on_unmatched="raise", aliases=None, source="The country column"):
    """World Bank ISO3 code of each country value (name, ISO2, ISO3 or numeric code).

    Parameters
    ----------
    values : array-like of str
        Country values as written in a dataset: ``"India"``, ``"in"``, ``"IND"``, ``"356"``,
        ``"Korea, Rep."``, ``"Côte d'Ivoire"``.
    on_unmatched : {"raise", "drop", "keep"}, default "raise"
        What to do with a value that matches no country: raise an :class:`InputError` naming
        each such value with its closest matches; or return None for it ("drop" logs how many
        rows will be dropped; "keep" is silent, for callers that report the count themselves).
    aliases : dict of str -> str, optional
        Extra spellings mapped to ISO3 codes (or to country names), tried first.
    source : str
        How error messages name the values.

    Returns
    -------
    numpy.ndarray of object, shape (N,)
        ISO3 codes; None where unmatched (only with "drop"/"keep") or missing.

    Raises
    ------
    InputError
        Unmatched values with ``on_unmatched="raise"``, or a bad ``on_unmatched``.
    """
    if on_unmatched not in UNMATCHED:
        raise InputError(f"The 'on_unmatched' parameter of country_codes must be one of "
                         f"{', '.join(repr(u) for u in UNMATCHED)}. Got {on_unmatched!r} instead.")
    names, iso2, display = _name_index()
    arr = pd.Series(np.asarray(values, dtype=object))
    extra = {normalize_name(k): v for k, v in (aliases or {}).items()}
    uniq = pd.unique(arr[arr.notna()].astype(str))
    mapping = {}
    for v in uniq:
        code = None
        if normalize_name(v) in extra:
            target = extra[normalize_name(v)]
            code = _match_one(target, names, iso2, display)
            if code is None:
                raise InputError(f"The alias {v!r} -> {target!r} names no known country; "
                                 f"closest: {', '.join(closest_countries(target)) or 'none'}.")
        else:
            code = _match_one(v, names, iso2, display)
        mapping[v] = code
    unmatched = [v for v, c in mapping.items() if c is None]
    if unmatched:
        counts = arr.astype(str).value_counts()
        n_rows = int(sum(counts.get(v, 0) for v in unmatched))
        if on_unmatched == "raise":
            parts = []
            for v in unmatched[:5]:
                close = closest_countries(v)
                parts.append(f"{v!r} (closest: {', '.join(close)})" if close else f"{v!r} (no close match)")
            more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
            raise InputError(
                f"{source}: {len(unmatched)} value(s) in {n_rows} row(s) match no country: "
                f"{'; '.join(parts)}{more}. Fix them, map them with aliases, or drop those rows on purpose."
            )
        if on_unmatched == "drop":
            log.warning("%s: dropping %d row(s) whose country matches nothing: %s", source, n_rows,
                        ", ".join(map(repr, unmatched[:10])))
    out = np.array([mapping.get(str(v)) if pd.notna(v) else None for v in arr], dtype=object)
    return out


def country_display_name(iso3) -> str:
    """A readable name for an ISO3 code (the code itself when unknown)."""
    return _name_index()[2].get(str(iso3), str(iso3))


@lru_cache(maxsize=1)
def _continents() -> dict:
    from geoaudit.data._countries import NE_TO_WB

    with gzip.open(resource_path(BOUNDARIES_50M), "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    out = {}
    for feat in features:
        p = feat["properties"]
        out.setdefault(NE_TO_WB.get(p["ADM0_A3"], p["ADM0_A3"]), p["CONTINENT"])
    return out


def _clean(values):
    """Object array with None for missing or empty values."""
    return np.array([None if (x is None or (isinstance(x, float) and np.isnan(x)) or x == "") else x
                     for x in values], dtype=object)


def country_groups(iso3) -> pd.DataFrame:
    """World Bank region and income group, and Natural Earth continent, of each ISO3 code.

    Parameters
    ----------
    iso3 : array-like of str

    Returns
    -------
    pandas.DataFrame
        Columns iso3, region, income_group, continent (None where unknown), one row per value.
    """
    meta = pd.read_csv(resource_path(WB_COUNTRY_META), encoding="utf-8-sig").set_index("Country Code")
    codes = pd.Series(np.asarray(iso3, dtype=object)).astype(str)
    region = meta["Region"].reindex(codes).to_numpy(dtype=object)
    income = meta["IncomeGroup"].reindex(codes).to_numpy(dtype=object)
    cont = np.array([_continents().get(c) for c in codes], dtype=object)
    return pd.DataFrame({"iso3": codes.to_numpy(), "region": _clean(region), "income_group": _clean(income),
                         "continent": _clean(cont)})
