"""Tiny datasets in the published formats of Dollar Street and GeoDE, written by the tests.

Dollar Street: the features its Hub loader declares (``nlphuji/dollar_street_test``): id,
country.id (lower-case ISO2), country.name, region.id, type, imageRelPath, topics (list),
place (the household), income (monthly, US$), imagenet_synonyms and imagenet_sysnet_id
(lists; any listed wnid counts as right).  GeoDE (``MLap/GeoDE``): image, object, region,
ip_country (a country name).

Each image is a flat colour: grey level 40 * c shows class c, so :func:`intensity_model`
recognises it; a fraction ``acc`` of each country's images shows its true class.
"""
from __future__ import annotations

import numpy as np
import torch

COUNTRIES = [("in", "India", "as"), ("ng", "Nigeria", "af"), ("br", "Brazil", "am"),
             ("fr", "France", "eu"), ("us", "United States", "am"), ("de", "Germany", "eu")]
ACCURACY = [0.2, 0.35, 0.5, 0.7, 0.85, 0.95]


def _image(level, size=8):
    from PIL import Image

    return Image.fromarray(np.full((size, size, 3), level, np.uint8))


def dollar_street(n_per_country=30, size=8, random_state=0):
    import datasets

    from geoaudit.data import imagenet_classes

    wnids, _ = imagenet_classes()
    rng = np.random.default_rng(random_state)
    cols = ["image", "id", "country.id", "country.name", "region.id", "type", "imageRelPath", "topics", "place",
            "income", "imagenet_synonyms", "imagenet_sysnet_id"]
    rows = {k: [] for k in cols}
    for ci, ((code, name, region), acc) in enumerate(zip(COUNTRIES, ACCURACY)):
        for j in range(n_per_country):
            cls = int(rng.integers(0, 5))
            shown = cls if rng.random() < acc else (cls + 1 + int(rng.random() < 0.5)) % 5
            rows["image"].append(_image(40 * shown, size))
            rows["id"].append(f"{code}{j:03d}")
            rows["country.id"].append(code)
            rows["country.name"].append(name)
            rows["region.id"].append(region)
            rows["type"].append("image")
            rows["imageRelPath"].append(f"assets/{code}{j:03d}.jpg")
            rows["topics"].append(["topic"])
            rows["place"].append(f"{code}-house{j % 3}")
            rows["income"].append(float(40 * 2 ** ci * (1 + j % 3)))
            rows["imagenet_synonyms"].append(["synonym"])
            rows["imagenet_sysnet_id"].append([wnids[cls], wnids[10 + cls]])
    feats = datasets.Features({
        "image": datasets.Image(),
        **{k: datasets.Value("string") for k in ["id", "country.id", "country.name", "region.id", "type",
                                                    "imageRelPath", "place"]},
        "topics": [datasets.Value("string")],
        "income": datasets.Value("float32"),
        "imagenet_synonyms": [datasets.Value("string")],
        "imagenet_sysnet_id": [datasets.Value("string")],
    })
    return datasets.Dataset.from_dict(rows, features=feats)


def geode(n_per_country=20, size=8, random_state=0):
    import datasets

    objects = ["bag", "car", "stove", "tree", "house"]
    regions = {"India": "SouthEastAsia", "Nigeria": "Africa", "Indonesia": "SouthEastAsia",
               "Italy": "Europe", "United Kingdom": "Europe", "Turkey": "WestAsia"}
    rng = np.random.default_rng(random_state)
    rows = {"image": [], "object": [], "region": [], "ip_country": []}
    for (country, region), acc in zip(regions.items(), ACCURACY):
        for _ in range(n_per_country):
            cls = int(rng.integers(0, 5))
            shown = cls if rng.random() < acc else (cls + 1) % 5
            rows["image"].append(_image(40 * shown, size))
            rows["object"].append(objects[cls])
            rows["region"].append(region)
            rows["ip_country"].append(country)
    feats = datasets.Features({"image": datasets.Image(), "object": datasets.Value("string"),
                               "region": datasets.Value("string"), "ip_country": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=feats)


def save_parquet_folder(ds, folder, split="test"):
    """Write a split as the Hub stores it: ``data/<split>-00000-of-00001.parquet``."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


class IntensityModel(torch.nn.Module):
    """1000 logits: class round(mean grey / 40) first, the class before it second."""

    def forward(self, x):
        v = (x.mean(dim=(1, 2, 3)) * 255 / 40).round().long().clamp(0, 998)
        out = torch.zeros(len(x), 1000)
        out[torch.arange(len(x)), v] = 2.0
        out[torch.arange(len(x)), (v + 4) % 5] = 1.0
        return out


def intensity_model():
    return IntensityModel()
