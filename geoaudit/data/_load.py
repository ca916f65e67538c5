"""Loading a geo-located image dataset folder and turning splits into tensors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geoaudit._errors import InputError
from geoaudit._validation import check_columns


def load_geo_dataset(path, split=None, *, required=("image", "label", "country_iso3")):
    """Load a dataset folder written by ``geoaudit dataset build`` (or any Parquet/``save_to_disk``
    folder with the geo schema).

    Parameters
    ----------
    path : str or Path
        The dataset folder.
    split : str, optional
        Return only this split (a ``datasets.Dataset``); otherwise the ``DatasetDict``.
    required : tuple of str
        Columns that must be present.
    """
    import datasets

    path = Path(path)
    if not path.exists():
        raise InputError(f"Dataset folder {str(path)!r} does not exist.")
    if not path.is_dir():
        raise InputError(f"Expected a dataset folder, got the file {str(path)!r}.")
    try:
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            dd = datasets.load_from_disk(str(path))
        else:
            dd = datasets.load_dataset(str(path))
    except Exception as e:
        dd = _load_despite_broken_shards(path, split, e)
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    if split is not None:
        if split not in dd:
            raise InputError(f"Dataset {str(path)!r} has no split {split!r}; splits present: {', '.join(dd)}.")
        check_columns(dd[split].column_names, required, source=f"Dataset {str(path)!r} (split {split!r})")
        return dd[split]
    for name, ds in dd.items():
        check_columns(ds.column_names, required, source=f"Dataset {str(path)!r} (split {name!r})")
    return dd


def _load_despite_broken_shards(path, split, error):
    """After a failed load: the one ``split`` asked for when only other splits' shards are
    broken; otherwise an InputError naming the first broken Parquet shard (or ``error``)."""
    import datasets
    import pyarrow.parquet as pq

    broken = {}
    for f in sorted(path.rglob("*.parquet")):
        try:
            pq.ParquetFile(f).metadata
        except Exception as e:  # pyarrow raises several types for a damaged file
            broken[f.resolve()] = f"{type(e).__name__}: {e}"
    if not broken:
        raise InputError(f"Could not load a dataset from {str(path)!r}: {error}") from error
    if split is not None:
        try:
            files = [Path(f) for f in datasets.load_dataset_builder(str(path)).config.data_files.get(split, [])]
        except Exception:
            files = []
        if files and not {f.resolve() for f in files} & set(broken):
            ds = datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
            return datasets.DatasetDict({split: ds})
    first, why = next(iter(broken.items()))
    raise InputError(f"Could not load a dataset from {str(path)!r}: {len(broken)} Parquet shard(s) cannot be read, "
                     f"the first {str(first)!r} ({why}).") from None


def _to_array(img, mode, size):
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    if img.mode != mode:
        img = img.convert(mode)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _raise_undecodable(ds, start, batch_size, error):
    """Name the row (and image id) of the first image in ``ds[start:start + batch_size]`` that
    does not decode; re-raise ``error`` when none of them is at fault."""
    import io

    from PIL import Image

    raw = ds.select(range(start, min(start + batch_size, len(ds))))
    try:
        import datasets

        raw = raw.cast_column("image", datasets.Image(decode=False))
    except Exception:
        raise error
    for i, ex in enumerate(raw):
        im = ex["image"]
        try:
            if isinstance(im, dict):
                with Image.open(io.BytesIO(im["bytes"]) if im.get("bytes") else im["path"]) as pil:
                    pil.load()
        except Exception as e:
            iid = ex.get("image_id")
            raise InputError(f"The image in row {start + i} of the split" + (f" (image_id {iid!r})" if iid else "")
                             + f" cannot be decoded ({type(e).__name__}).") from None
    raise error


def iter_image_batches(ds, batch_size=256, *, image_size=None, channels=3, label_col="label"):
    """Yield ``(images, labels, start)``: float32 (N, C, H, W) tensors in [0, 1], int64 labels,
    and the index of the batch's first row."""
    import torch

    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"The 'channels' parameter must be 1 or 3. Got {channels!r} instead.")
    n = len(ds)
    for start in range(0, n, batch_size):
        try:
            rows = ds[start:start + batch_size]
        except Exception as e:  # PIL raises many types for broken bytes
            _raise_undecodable(ds, start, batch_size, e)
        arr = np.stack([_to_array(im, mode, image_size) for im in rows["image"]])
        images = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.as_tensor(np.asarray(rows[label_col], dtype=np.int64)) if label_col else None
        yield images, labels, start


def split_to_tensors(ds, *, image_size=None, channels=3, limit=None, label_col="label"):
    """The whole split (or its first ``limit`` rows) as ``(images, labels)`` tensors."""
    import torch

    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    ims, labs = [], []
    for images, labels, _ in iter_image_batches(ds, 512, image_size=image_size, channels=channels, label_col=label_col):
        ims.append(images)
        labs.append(labels)
    if not ims:
        raise InputError("The dataset split is empty.")
    return torch.cat(ims), torch.cat(labs)
