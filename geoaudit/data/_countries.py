"""Country boundaries (Natural Earth, shipped) and the country table built from them."""
from __future__ import annotations

import gzip
import warnings
import json
from functools import lru_cache

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit.data._gdp import gdp_per_capita
from geoaudit.data._resources import BOUNDARIES_50M, BOUNDARIES_110M, resource_path

# Natural Earth ADM0_A3 codes that differ from the World Bank's (see resources/SOURCES.md).
# ISO_A3 is -99 for France and Norway, so ADM0_A3 is the join key.
NE_TO_WB = {"KOS": "XKX", "PSX": "PSE", "SDS": "SSD"}


@lru_cache(maxsize=2)
def load_boundaries(scale: str = "50m"):
    """Admin-0 country polygons as a GeoDataFrame (EPSG:4326) with columns iso3, name, geometry.

    ``iso3`` is Natural Earth's ADM0_A3 mapped onto World Bank codes, so it joins with GDP.
    """
    import geopandas as gpd

    files = {"50m": BOUNDARIES_50M, "110m": BOUNDARIES_110M}
    if scale not in files:
        raise InputError(f"The 'scale' parameter of load_boundaries must be one of '50m', '110m'. Got {scale!r} instead.")
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
