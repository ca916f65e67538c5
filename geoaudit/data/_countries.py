"""Country boundaries (Natural Earth, shipped) and the country table built from them."""
from __future__ import annotations

import gzip
import re
import warnings
import json
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit.data._gdp import gdp_per_capita
from geoaudit.data._resources import BOUNDARIES_10M, BOUNDARIES_50M, BOUNDARIES_110M, resource_path

# Natural Earth ADM0_A3 codes that differ from the World Bank's (see resources/SOURCES.md).
# ISO_A3 is -99 for France and Norway, so ADM0_A3 is the join key.
NE_TO_WB = {"KOS": "XKX", "PSX": "PSE", "SDS": "SSD"}

#: Coding choices of the 1:10m boundaries (docs/imagenet_geo.md, "Coding choices"): units
#: that have no World Bank economy of their own go to the economy a photo taken there is
#: counted in.  Jersey and Guernsey are the World Bank's Channel Islands (CHI, which has a
#: GDP); Aland is Finnish; the UK sovereign base areas lie on Cyprus and are reached only
#: through it; Guantanamo Bay is on Cuba; Brazilian Island (a river island disputed with
#: Uruguay) is administered by Brazil.  The German-view edition already draws Somaliland
#: inside Somalia, Northern Cyprus inside Cyprus and Crimea inside Ukraine.
NE10_TO_WB = {**NE_TO_WB, "JEY": "CHI", "GGY": "CHI", "ALD": "FIN", "ESB": "CYP", "WSB": "CYP", "USG": "CUB",
              "BRI": "BRA", "SAH": "ESH"}
_NE10_NAMES = {"CHI": "Channel Islands"}

#: ISO 3166 alpha-3 codes (as GeoNames and Flickr use them) of places that the 1:10m
#: boundaries and the World Bank count inside another economy: the French overseas
#: departments in France, Svalbard in Norway, the Caribbean Netherlands in the Netherlands,
#: Tokelau in New Zealand, Christmas and Cocos Islands in Australia's Indian Ocean
#: Territories, plus the coding choices above.
ISO3_TO_WB = {"JEY": "CHI", "GGY": "CHI", "ALA": "FIN", "GLP": "FRA", "GUF": "FRA", "MTQ": "FRA", "MYT": "FRA",
              "REU": "FRA", "SJM": "NOR", "BES": "NLD", "TKL": "NZL", "CCK": "IOA", "CXR": "IOA", "XKS": "XKX",
              "KOS": "XKX", "PSX": "PSE"}


def to_wb_code(iso3):
    """The economy code the geocoding uses for an ISO 3166 alpha-3 code (None stays None).

    Parameters
    ----------
    iso3 : str or None
        An ISO 3166-1 alpha-3 code (GeoNames, Flickr) or a World Bank code.

    Returns
    -------
    str or None
        The code of :func:`load_boundaries` at 10m (e.g. "JEY" -> "CHI", "REU" -> "FRA").
    """
    if iso3 is None:
        return None
    return ISO3_TO_WB.get(iso3, iso3)


def _load_10m():
    """The shipped 1:10m polygons (coordinates stored as 1e-5 degree integer steps)."""
    import geopandas as gpd
    import shapely

    with np.load(resource_path(BOUNDARIES_10M)) as z:
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
        coords = np.cumsum(z["coords_delta"].astype(np.int64), axis=0) / meta["scale"]
        offsets = (z["ring_offsets"].astype(np.int64), z["part_offsets"].astype(np.int64),
                   z["geom_offsets"].astype(np.int64))
    geoms = shapely.from_ragged_array(shapely.GeometryType.MULTIPOLYGON, coords, offsets)
    iso3 = [NE10_TO_WB.get(c, c) for c in meta["adm0_a3"]]
    gdf = gpd.GeoDataFrame({"iso3": iso3, "name": [_NE10_NAMES.get(i, n) for i, n in zip(iso3, meta["name"])],
                            "adm0_a3": meta["adm0_a3"], "iso_a2": meta["iso_a2"], "name_long": meta["name_long"],
                            "admin": meta["admin"], "formal_en": meta["formal_en"]},
                           geometry=geoms, crs="EPSG:4326")
    return gdf


@lru_cache(maxsize=3)
def load_boundaries(scale: str = "50m"):
    """Admin-0 country polygons as a GeoDataFrame (EPSG:4326).

    Parameters
    ----------
    scale : {"50m", "110m", "10m"}
        Natural Earth scale.  "10m" is the 1:10m German-view edition (v5.1.1) that the
        reverse geocoding uses; "50m" and "110m" (v4.0.0) draw maps and country tables.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns iso3, name, geometry (and, at 10m, adm0_a3, iso_a2, name_long, admin,
        formal_en).  ``iso3`` is Natural Earth's ADM0_A3 mapped onto World Bank codes, so
        it joins with GDP; at 10m the coding choices of ``NE10_TO_WB`` apply too.
    """
    import geopandas as gpd

    files = {"50m": BOUNDARIES_50M, "110m": BOUNDARIES_110M, "10m": BOUNDARIES_10M}
    if scale not in files:
        raise InputError(f"The 'scale' parameter of load_boundaries must be one of '50m', '110m', '10m'. "
                         f"Got {scale!r} instead.")
    if scale == "10m":
        return _load_10m()
    with gzip.open(resource_path(files[scale]), "rt", encoding="utf-8") as f:
        fc = json.load(f)
    gdf = gpd.GeoDataFrame.from_features(fc["features"], crs="EPSG:4326")
    gdf["iso3"] = gdf["ADM0_A3"].map(lambda c: NE_TO_WB.get(c, c))
    gdf = gdf.rename(columns={"NAME": "name"})
    return gdf[["iso3", "name", "geometry"]].reset_index(drop=True)


def _interior_point(geom):
    """A point inside the geometry's largest part (mainland, not an overseas territory)."""
    if geom.geom_type == "MultiPolygon":
        geom = max(geom.geoms, key=lambda g: g.area)
    return geom.representative_point()


@lru_cache(maxsize=4)
def _country_table(year) -> pd.DataFrame:
    b = load_boundaries("50m")
    with warnings.catch_warnings():  # areas in degrees only rank a country's own parts
        warnings.simplefilter("ignore", UserWarning)
        area = b.geometry.area
    pts = [_interior_point(g) for g in b.geometry]
    geo = pd.DataFrame(
        {"iso3": b["iso3"], "ne_name": b["name"],
         "latitude": [p.y for p in pts], "longitude": [p.x for p in pts],
         "area": area}
    )
    # several Natural Earth units can share a code after mapping: keep the largest
    geo = geo.sort_values("area", ascending=False).drop_duplicates("iso3").drop(columns="area")
    gdp = gdp_per_capita(year, source="snapshot").reset_index()
    t = geo.merge(gdp, on="iso3", how="inner")
    t["country_name"] = t["country_name"].fillna(t["ne_name"])
    t = t.drop(columns="ne_name")
    t["log_gdp_per_capita"] = np.log(t["gdp_per_capita_usd"])
    return t.sort_values("iso3").reset_index(drop=True)


def country_table(year="latest") -> pd.DataFrame:
    """World Bank economies with a Natural Earth polygon: iso3, country_name, latitude,
    longitude (a point inside the mainland), gdp_per_capita_usd, gdp_year,
    log_gdp_per_capita, region, income_group.  GDP is NaN where the World Bank has none.
    """
    return _country_table(year).copy()


# Country names Flickr's reverse geocoding uses that neither Natural Earth nor the World
# Bank spells the same way.
_NAME_ALIASES = {
    "united states": "USA", "usa": "USA", "united kingdom": "GBR", "uk": "GBR", "great britain": "GBR",
    "russian federation": "RUS", "south korea": "KOR", "korea south": "KOR", "republic of korea": "KOR",
    "north korea": "PRK", "viet nam": "VNM", "vietnam": "VNM", "iran": "IRN", "syria": "SYR", "laos": "LAO",
    "macedonia": "MKD", "czech republic": "CZE", "czechia": "CZE", "burma": "MMR", "ivory coast": "CIV",
    "palestinian territories": "PSE", "palestine": "PSE", "west bank": "PSE", "gaza strip": "PSE",
    "hong kong": "HKG", "macau": "MAC", "macao": "MAC", "taiwan": "TWN", "vatican city": "VAT",
    "holy see": "VAT", "kosovo": "XKX", "channel islands": "CHI", "jersey": "CHI", "guernsey": "CHI",
    "aland islands": "FIN", "reunion": "FRA", "martinique": "FRA", "guadeloupe": "FRA", "french guiana": "FRA",
    "mayotte": "FRA", "svalbard and jan mayen": "NOR", "the netherlands": "NLD", "netherlands": "NLD",
    "the bahamas": "BHS", "bahamas": "BHS", "the gambia": "GMB", "gambia": "GMB", "cape verde": "CPV",
    "swaziland": "SWZ", "east timor": "TLS", "timor leste": "TLS", "brunei": "BRN", "bolivia": "BOL",
    "venezuela": "VEN", "tanzania": "TZA", "moldova": "MDA", "slovakia": "SVK", "kyrgyzstan": "KGZ",
    "egypt": "EGY", "yemen": "YEM", "micronesia": "FSM", "congo kinshasa": "COD", "congo brazzaville": "COG",
    "democratic republic of the congo": "COD", "republic of the congo": "COG", "turkey": "TUR",
    "western sahara": "ESH", "somaliland": "SOM", "northern cyprus": "CYP",
}


def _norm_name(name):
    import unicodedata

    s = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii").lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", s).split())


@lru_cache(maxsize=1)
def _name_table():
    table = {}
    b = load_boundaries("10m")
    for col in ("formal_en", "admin", "name_long", "name"):
        for n, c in zip(b[col], b["iso3"]):
            if n:
                table[_norm_name(n)] = c
    gdp = gdp_per_capita("latest", source="snapshot")
    for c, n in zip(gdp.index, gdp["country_name"]):
        table.setdefault(_norm_name(n), c)
    table.update(_NAME_ALIASES)
    return table


def country_code_from_name(name):
    """The economy code of a country name such as Flickr's reverse geocoding gives it.

    Parameters
    ----------
    name : str or None
        A country name ("United States", "Viet Nam", "Hong Kong", "Jersey").

    Returns
    -------
    str or None
        The code of :func:`load_boundaries` at 10m, or None for an unknown or missing name.

    Examples
    --------
    >>> country_code_from_name("United States"), country_code_from_name("Jersey")
    ('USA', 'CHI')
    """
    if not isinstance(name, str) or not name.strip():
        return None
    return _name_table().get(_norm_name(name))
