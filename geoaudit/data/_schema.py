"""The one schema shared by the ImageNet geo-location dataset and GeoShapes.

Everything downstream (audit, attacks, training) reads these columns, so a model trained or
audited on GeoShapes runs unchanged on the real dataset.
"""
from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache

import datasets

from geoaudit.data._resources import IMAGENET_CLASS_INDEX, resource_path

# Columns the audit and training need, beside the image.
REQUIRED_COLUMNS = ("image", "label", "country_iso3", "gdp_per_capita_usd")

#: Version of the shared schema.  2 added the optional location-source columns
#: ``flickr_accuracy`` (Flickr's 1-16 accuracy level) and ``flickr_country`` (Flickr's own
#: country, as a code), written by the ImageNet geo-location build; datasets without a
#: location source (GeoShapes) leave them out, and readers treat a missing one as None.
SCHEMA_VERSION = 2
#: Values of the optional columns for a row that has no such information.
OPTIONAL_DEFAULTS = {"flickr_accuracy": None, "flickr_country": None}


def geo_features(class_names, *, with_image=True, with_location_source=False) -> datasets.Features:
    """Features of a geo-located image classification dataset.

    Parameters
    ----------
    class_names : list of str
        Names of the label classes, in label order.
    with_image : bool
        False for the metadata-only configuration (no image bytes).
    with_location_source : bool
        Add the optional columns ``flickr_accuracy`` (int32, 1 world to 16 street) and
        ``flickr_country`` (string, Flickr's reverse-geocoded country as a code).

    Returns
    -------
    datasets.Features
    """
    feats = {}
    if with_image:
        feats["image"] = datasets.Image()
    feats.update(
        {
            "label": datasets.ClassLabel(names=list(class_names)),
            "wnid": datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "flickr_photo_id": datasets.Value("string"),
            "latitude": datasets.Value("float64"),
            "longitude": datasets.Value("float64"),
            "country_iso3": datasets.Value("string"),
            "country_name": datasets.Value("string"),
            "gdp_per_capita_usd": datasets.Value("float64"),
            "gdp_year": datasets.Value("int32"),
            "log_gdp_per_capita": datasets.Value("float64"),
        }
    )
    if with_location_source:
        feats["flickr_accuracy"] = datasets.Value("int32")
        feats["flickr_country"] = datasets.Value("string")
    return datasets.Features(feats)


@lru_cache(maxsize=1)
def imagenet_classes():
    """(wnids, names) of the 1000 ILSVRC2012 classes in the standard index order.

    Two names occur twice in the index ("crane": bird and machine; "maillot"); ClassLabel
    needs unique names, so those four carry their wnid: "crane_n02012849".
    """
    with open(resource_path(IMAGENET_CLASS_INDEX), encoding="utf-8") as f:
        index = json.load(f)
    wnids = [index[str(i)][0] for i in range(len(index))]
    names = [index[str(i)][1] for i in range(len(index))]
    counts = Counter(names)
    names = [f"{n}_{w}" if counts[n] > 1 else n for n, w in zip(names, wnids)]
    return wnids, names
