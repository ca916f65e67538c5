"""Training data as compact tensors: uint8 images (N, C, H, W), int64 labels, class names and a
content fingerprint (so a resumed population can tell whether its data changed)."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options

TRAIN_COLUMNS = ("image", "label")


@dataclass(frozen=True)
class TrainingData:
    """A training split held as uint8 images.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``(N, C, H, W)``; pixel value ``v`` stands for ``v / 255``.
    labels : torch.Tensor
        int64 ``(N,)``.
    class_names : tuple of str
    source : str
        Where the data came from (folder path, or "in-memory").
    split : str
    fingerprint : str
        sha256 of the images, labels and class names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple
    source: str
    split: str
    fingerprint: str

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def channel_stats(self, chunk_size=512):
        """Per-channel mean and std of the pixels in [0, 1] (for the model's Normalize layer).

        Streams over ``chunk_size`` images at a time, counting each channel's uint8 values in a
        histogram (exact integer sums), so memory stays at one channel of one chunk whatever the
        split's size (512 images at 224 px: 26 MB).

        Parameters
        ----------
        chunk_size : int, default 512
            Images per chunk.

        Returns
        -------
        (list of float, list of float)
            Means and (unbiased, at least 1e-3) standard deviations, rounded to 6 digits.
        """
        return channel_stats(self.images, chunk_size=chunk_size)

    def to_dict(self) -> dict:
        return {"source": self.source, "split": self.split, "n": self.n, "channels": self.channels,
                "image_size": self.image_size, "num_classes": len(self.class_names),
                "fingerprint": self.fingerprint}


def channel_stats(images_u8: torch.Tensor, *, chunk_size=512):
    """Per-channel mean and std in [0, 1] of uint8 images ``(N, C, H, W)``, streamed by chunks.

    The sums of ``v`` and ``v**2`` come exactly from a 256-bin histogram per channel, so the
    result does not depend on ``chunk_size``.

    Parameters
    ----------
    images_u8 : torch.Tensor
        uint8 ``(N, C, H, W)`` (a tensor over a numpy memmap works and is read chunk by chunk).
    chunk_size : int, default 512

    Returns
    -------
    (list of float, list of float)
    """
    chunk_size = check_interval("chunk_size", chunk_size, 1, None, caller="channel_stats", integer=True)
    n, c = int(images_u8.shape[0]), int(images_u8.shape[1])
    hist = torch.zeros(c, 256, dtype=torch.int64)  # per-channel histogram of the uint8 values
    for lo in range(0, n, chunk_size):
        x = images_u8[lo:lo + chunk_size]
        for ch in range(c):
            hist[ch] += torch.bincount(x[:, ch].reshape(-1), minlength=256)
    v = list(range(256))
    s1 = [sum(k * cnt for k, cnt in zip(v, row)) for row in hist.tolist()]
    s2 = [sum(k * k * cnt for k, cnt in zip(v, row)) for row in hist.tolist()]
    count = n * int(images_u8[0, 0].numel()) if n else 0
    if count == 0:
        raise InputError("channel_stats needs at least one image.")
    means, stds = [], []
    for a, b in zip(s1, s2):
        var = (b * count - a * a) / (count * max(count - 1, 1)) / 255.0**2  # exact integer numerator
        means.append(round(a / count / 255.0, 6))
        stds.append(round(max(math.sqrt(max(var, 0.0)), 1e-3), 6))
    return means, stds


def fingerprint(images_u8: torch.Tensor, labels: torch.Tensor, class_names, *, chunk_size=512) -> str:
    """sha256 of the images' shape and bytes, the labels and the class names.

    The image bytes are hashed ``chunk_size`` images at a time from the tensor's own memory (no
    copy of the whole split); the digest equals hashing all bytes at once.

    Parameters
    ----------
    images_u8 : torch.Tensor
        uint8 ``(N, C, H, W)`` on the CPU.
    labels : torch.Tensor
    class_names : sequence of str
    chunk_size : int, default 512

    Returns
    -------
    str
        The hex digest.
    """
    h = hashlib.sha256()
    h.update(repr(tuple(images_u8.shape)).encode())
    for lo in range(0, int(images_u8.shape[0]), chunk_size):
        part = np.ascontiguousarray(images_u8[lo:lo + chunk_size].numpy())
        h.update(memoryview(part).cast("B"))
    h.update(np.ascontiguousarray(labels.numpy().astype(np.int64)).tobytes())
    h.update("\n".join(class_names).encode("utf-8"))
    return h.hexdigest()


def from_tensors(images, labels, *, class_names=None, source="in-memory", split="train") -> TrainingData:
    """Wrap image and label tensors (float in [0, 1] or uint8) as :class:`TrainingData`."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError(f"Expected images of shape (N, C, H, W) as a torch.Tensor, got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        if not images.is_floating_point() or float(images.min()) < 0 or float(images.max()) > 1:
            raise InputError("Expected float images in [0, 1] or uint8 images.")
        images = images.mul(255.0).round_().to(torch.uint8)
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise InputError(f"Expected {images.shape[0]} labels, got shape {tuple(labels.shape)}.")
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) < 2:
        raise InputError(f"Training needs at least 2 classes, got {len(class_names)}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
        raise InputError(f"Labels must be in [0, {len(class_names) - 1}], got [{int(labels.min())}, {int(labels.max())}].")
    images = images.contiguous().cpu()
    return TrainingData(images, labels, class_names, str(source), split, fingerprint(images, labels, class_names))


def load_training_data(data, *, split="train", image_size=None, channels=3, limit=None,
                       num_workers=0) -> TrainingData:
    """Load the ``split`` of a dataset folder (or a ``datasets`` object) as :class:`TrainingData`.

    Parameters
    ----------
    data : str, Path, datasets.Dataset, datasets.DatasetDict or TrainingData
        A folder written by ``geoaudit dataset build`` (Parquet or ``save_to_disk``), or a
        loaded dataset with at least the columns ``image`` and ``label``.
    split : str
        The split to train on (ignored for a ``Dataset`` or ``TrainingData``).
    image_size : int, optional
        Resize every image to this square size; default: the first image's size.
    channels : {1, 3}
    limit : int, optional
        Use only the first ``limit`` rows.
    num_workers : int, default 0
        Worker processes decoding images (see :func:`geoaudit.data.iter_image_batches`).
    """
    if isinstance(data, TrainingData):
        return data
    import datasets

    from geoaudit.data import load_geo_dataset
    from geoaudit.data._load import iter_image_batches

    caller = "load_training_data"
    check_options("channels", channels, (1, 3), caller=caller)
    if image_size is not None:
        image_size = check_interval("image_size", image_size, 8, None, caller=caller, integer=True)
    if isinstance(data, (str, Path)):
        source = str(Path(data).resolve())
        ds = load_geo_dataset(data, split=split, required=TRAIN_COLUMNS)
    elif isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise InputError(f"The dataset has no split {split!r}; splits present: {', '.join(data)}.")
        ds, source = data[split], "in-memory"
    elif isinstance(data, datasets.Dataset):
        ds, source = data, "in-memory"
    else:
        raise InputError(
            "The 'data' parameter must be a dataset folder, a datasets.Dataset/DatasetDict or TrainingData. "
            f"Got {type(data).__name__} instead."
        )
    from geoaudit._validation import check_columns

    check_columns(ds.column_names, TRAIN_COLUMNS, source=f"Training data {source!r} (split {split!r})")
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    if len(ds) == 0:
        raise InputError(f"Training data {source!r} (split {split!r}) is empty.")
    if image_size is None:
        first = ds[0]["image"]
        w, h = first.size
        if w != h:
            raise InputError(f"Images are {w}x{h}; pass image_size to train on square images.")
        image_size = int(w)
    label_feat = ds.features.get("label")
    class_names = list(label_feat.names) if isinstance(label_feat, datasets.ClassLabel) else None
    # decoded straight into one preallocated uint8 array: peak memory is the split plus one batch
    images_u8, labs = None, []
    for images, labels, start in iter_image_batches(ds, 512, image_size=image_size, channels=channels,
                                                    num_workers=num_workers):
        if images_u8 is None:
            images_u8 = torch.empty((len(ds),) + tuple(images.shape[1:]), dtype=torch.uint8)
        images_u8[start:start + len(images)] = images.mul_(255.0).round_()
        labs.append(labels)
    return from_tensors(images_u8, torch.cat(labs), class_names=class_names, source=source, split=split)
