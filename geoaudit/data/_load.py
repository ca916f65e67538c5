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


class _DecodedBatches:
    """Batches of a split by start row, decoded to uint8 (for a DataLoader's workers)."""

    def __init__(self, ds, batch_size, mode, image_size, label_col):
        self.ds, self.batch_size, self.mode, self.image_size, self.label_col = ds, batch_size, mode, image_size, label_col

    def __len__(self):
        return (len(self.ds) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i):
        import torch

        start = i * self.batch_size
        try:
            rows = self.ds[start:start + self.batch_size]
        except Exception as e:  # PIL raises many types for broken bytes
            _raise_undecodable(self.ds, start, self.batch_size, e)
        arr = np.stack([_to_array(im, self.mode, self.image_size) for im in rows["image"]])
        labels = torch.as_tensor(np.asarray(rows[self.label_col], dtype=np.int64)) if self.label_col else None
        return torch.from_numpy(arr).permute(0, 3, 1, 2), labels, start


def iter_image_batches(ds, batch_size=256, *, image_size=None, channels=3, label_col="label", num_workers=0,
                       pin_memory=False, uint8=False):
    """Yield ``(images, labels, start)``: float32 (N, C, H, W) tensors in [0, 1], int64 labels,
    and the index of the batch's first row.

    Parameters
    ----------
    ds : datasets.Dataset
        A split with an ``image`` column (and ``label_col`` unless it is None).
    batch_size : int, default 256
    image_size : int, optional
        Resize every image to this square size.
    channels : {1, 3}, default 3
    label_col : str or None, default "label"
    num_workers : int, default 0
        Processes decoding batches ahead of the consumer (a ``torch.utils.data.DataLoader``);
        0 decodes in this thread.  Batches come in order and are the same either way.
    pin_memory : bool, default False
        Return images in page-locked memory, so that ``.to("cuda", non_blocking=True)``
        overlaps the copy with the model (useful only with CUDA).
    uint8 : bool, default False
        Yield the uint8 pixels (``v`` for ``v / 255``) instead of floats: a quarter of the bytes to
        move to a GPU, converted there.

    Yields
    ------
    (torch.Tensor, torch.Tensor or None, int)
    """
    import torch

    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"The 'channels' parameter must be 1 or 3. Got {channels!r} instead.")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise InputError(f"The 'num_workers' parameter must be an integer >= 0. Got {num_workers!r} instead.")
    batches = _DecodedBatches(ds, batch_size, mode, image_size, label_col)
    if num_workers == 0:
        source = (batches[i] for i in range(len(batches)))
    else:
        from torch.utils.data import DataLoader

        # uint8 crosses the process boundary (4x fewer bytes than float); workers keep ~2 batches each ahead
        source = DataLoader(batches, batch_size=None, shuffle=False, num_workers=num_workers)
    pin = bool(pin_memory) and torch.cuda.is_available()
    for arr, labels, start in source:
        if pin:
            arr = arr.pin_memory()
        yield (arr if uint8 else arr.float().div_(255.0)), labels, start


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
