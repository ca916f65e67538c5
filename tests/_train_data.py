"""Tiny synthetic datasets in the shared geo schema for the training tests and benchmark."""
from __future__ import annotations

import numpy as np


def make_images(n_per_class=20, n_classes=3, size=16, seed=0):
    """uint8 (N, H, W, 3) images: each class a colour blob at its own place, with noise, and labels."""
    rng = np.random.default_rng(seed)
    ims, labs = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(n_classes):
        for _ in range(n_per_class):
            base = rng.uniform(0.2, 0.5, size=3)
            img = np.ones((size, size, 3)) * base
            cx, cy = (c + 1) * size / (n_classes + 1) + rng.normal(0, 1), size / 2 + rng.normal(0, 2)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 8) ** 2))
            colour = np.eye(3)[c % 3] * 0.5
            img = img + blob[..., None] * colour + rng.normal(0, 0.04, size=img.shape)
            ims.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
            labs.append(c)
    return np.stack(ims), np.asarray(labs)


def make_dataset_dir(path, *, n_per_class=20, n_classes=3, size=16, seed=0, drop=(), fmt="disk"):
    """Write a DatasetDict (train/test) in the geo schema to ``path``; ``drop`` removes columns."""
    import datasets
    from PIL import Image

    from geoaudit.data import geo_features

    names = [f"class_{c}" for c in range(n_classes)]
    feats = geo_features(names)
    splits = {}
    for split, s in (("train", seed), ("test", seed + 1)):
        ims, labs = make_images(n_per_class, n_classes, size, s)
        n = len(labs)
        iso = np.array(["USA", "IND", "DEU", "NGA"])[np.arange(n) % 4]
        rows = {
            "image": [Image.fromarray(a) for a in ims], "label": labs.tolist(), "wnid": ["n0"] * n,
            "image_id": [f"{split}_{i}" for i in range(n)], "flickr_photo_id": [str(i) for i in range(n)],
            "latitude": [0.0] * n, "longitude": [0.0] * n, "country_iso3": iso.tolist(),
            "country_name": iso.tolist(), "gdp_per_capita_usd": [1000.0 + 100 * (i % 4) for i in range(n)],
            "gdp_year": [2022] * n, "log_gdp_per_capita": [7.0] * n,
        }
        ds = datasets.Dataset.from_dict(rows, features=feats)
        if drop:
            ds = ds.remove_columns(list(drop))
        splits[split] = ds
    dd = datasets.DatasetDict(splits)
    if fmt == "disk":
        dd.save_to_disk(str(path))
    else:
        for split, ds in dd.items():
            ds.to_parquet(f"{path}/data/{split}-00000-of-00001.parquet")
    return path
