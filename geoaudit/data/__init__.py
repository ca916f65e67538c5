"""Datasets: the ImageNet geo-location builder, the GeoShapes demo, countries and GDP.

Every dataset here shares one schema (``geo_features``): image, label, wnid, image_id,
flickr_photo_id, latitude, longitude, country_iso3, country_name, gdp_per_capita_usd,
gdp_year, log_gdp_per_capita.
"""
from geoaudit.data._builtin import BUILTIN_DATA, load_builtin, load_digits_tensors, load_split, load_torchvision_mnist
from geoaudit.data._countries import country_table, load_boundaries
from geoaudit.data._gdp import gdp_per_capita
from geoaudit.data._geoshapes import (
    GeoShapes,
    GeoShapesConfig,
    build_geoshapes,
    capture_corruption,
    geoshapes,
    geoshapes_country_plan,
    geoshapes_grid,
    geoshapes_latents,
)
from geoaudit.data._geocode import reverse_geocode
from geoaudit.data._imagenet_geo import ImageNetGeo, ImageNetGeoConfig, build_imagenet_geo
from geoaudit.data._load import iter_image_batches, load_geo_dataset, split_to_tensors
from geoaudit.data._schema import REQUIRED_COLUMNS, geo_features, imagenet_classes

__all__ = [
    "BUILTIN_DATA",
    "load_builtin",
    "load_digits_tensors",
    "load_split",
    "load_torchvision_mnist",
    "GeoShapes",
    "GeoShapesConfig",
    "capture_corruption",
    "ImageNetGeo",
    "ImageNetGeoConfig",
    "build_imagenet_geo",
    "reverse_geocode",
    "REQUIRED_COLUMNS",
    "build_geoshapes",
    "country_table",
    "gdp_per_capita",
    "geo_features",
    "geoshapes",
    "geoshapes_country_plan",
    "geoshapes_grid",
    "geoshapes_latents",
    "imagenet_classes",
    "iter_image_batches",
    "load_boundaries",
    "load_geo_dataset",
    "split_to_tensors",
]
