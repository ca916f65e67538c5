"""The weighted dataset D = {x_i, y_i, P_i} of Algorithms 2 and 3, kept on disk.

Images are in a memory-mapped ``.npy`` file, so D costs the page cache, not process memory,
and every model of a population -- in this process, in another process, or in a Ray worker on
the same machine -- reads the same file.  Two storages:

* ``"float16"`` (2 bytes per value, half of float32): keeps what an attack did.  Its spacing
  near 1 is 2^-11 (about 1/2048), eight times finer than uint8's 1/255, so the sub-1/255
  changes a perceptual attack makes survive; the default for Algorithm 2's D.
* ``"uint8"`` (1 byte per value, a quarter of float32): exact for clean uint8 images (plain
  training uses it) but rounds every perturbation to multiples of 1/255.  The small per-example table (label, weight, source example, round) is an ``.npz``
written atomically whenever the images written so far are flushed.

Folder layout::

    images.npy     float16 or uint8 (capacity, C, H, W), memory-mapped; rows [0, size) are valid
    table.npz      labels int64, weights float64, source int64, round int16, size
    dataset.json   {"complete": bool, "storage", "class_names", "settings", "stats", ...}
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_bytes, atomic_write_json

IMAGES = "images.npy"
TABLE = "table.npz"
META = "dataset.json"

#: How D stores images (see the module docstring).
STORAGES = ("float16", "uint8")
_NP = {"float16": np.float16, "uint8": np.uint8}
_TORCH = {"float16": torch.float16, "uint8": torch.uint8}


def encode(x: torch.Tensor, storage: str) -> torch.Tensor:
    """Float images in [0, 1] as ``storage`` holds them (uint8: rounded to k/255)."""
    if x.dtype == _TORCH[storage]:
        return x
    if not x.is_floating_point():
        x = decode(x)
    if storage == "uint8":
        return x.clamp(0, 1).mul(255.0).round_().to(torch.uint8)
    return x.clamp(0, 1).to(torch.float16)


def decode(t: torch.Tensor) -> torch.Tensor:
    """Stored images back as float32 in [0, 1]."""
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t.float()


class WeightedDataset:
    """D on disk.  Create with :meth:`create`, open a finished one with :meth:`open`."""

    def __init__(self, folder, images, labels, weights, source, rounds, size, meta):
        self.folder = Path(folder)
        self.images = images          # np.memmap float16 or uint8 (capacity, C, H, W)
        self.labels = labels          # np.ndarray int64 (capacity,)
        self.weights = weights        # float64
        self.source = source          # int64: index of the clean example this one derives from
        self.rounds = rounds          # int16: 0 = clean, k = appended in round k of Algorithm 2
        self.size = int(size)
        self.meta = meta

    # -- creation and opening ----------------------------------------------------------------
    @classmethod
    def create(cls, folder, clean_images_u8: torch.Tensor, labels: torch.Tensor, *, capacity, meta,
               storage="uint8"):
        """A new D holding the N clean examples with weight 1, room for ``capacity`` in all.

        Parameters
        ----------
        folder : str or Path
        clean_images_u8 : torch.Tensor
            uint8 ``(N, C, H, W)``.
        labels : torch.Tensor
        capacity : int
            Rows in all (N (1 + T1) for Algorithm 2).
        meta : dict
            Written to ``dataset.json``.
        storage : {"uint8", "float16"}
            How images are stored (see the module docstring).

        Returns
        -------
        WeightedDataset
        """
        if storage not in STORAGES:
            raise InputError(f"The 'storage' of a weighted dataset must be one of {', '.join(STORAGES)}. "
                             f"Got {storage!r} instead.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = clean_images_u8.shape[0]
        if capacity < n:
            raise InputError(f"capacity {capacity} < {n} clean examples")
        images = np.lib.format.open_memmap(folder / IMAGES, mode="w+", dtype=_NP[storage],
                                           shape=(capacity,) + tuple(clean_images_u8.shape[1:]))
        for lo in range(0, n, 4096):  # in chunks: no float copy of the whole data set
            images[lo:min(lo + 4096, n)] = encode(decode(clean_images_u8[lo:lo + 4096].cpu()), storage).numpy()
        lab = np.zeros(capacity, np.int64)
        lab[:n] = labels.cpu().numpy()
        w = np.zeros(capacity, np.float64)
        w[:n] = 1.0
        src = np.zeros(capacity, np.int64)
        src[:n] = np.arange(n)
        rnd = np.zeros(capacity, np.int16)
        d = cls(folder, images, lab, w, src, rnd, n, dict(meta, complete=False, storage=storage))
        d.flush()
        return d

    @classmethod
    def open(cls, folder, *, writable=False):
        """Open D from ``folder`` (read-only memory map unless ``writable``)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            with np.load(folder / TABLE) as t:
                lab, w, src, rnd, size = t["labels"], t["weights"], t["source"], t["round"], int(t["size"])
            images = np.load(folder / IMAGES, mmap_mode="r+" if writable else "r")
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise InputError(f"Corrupt weighted dataset in {str(folder)!r}: {e}. Delete the folder to rebuild it.") from e
        capacity = images.shape[0]
        if len(lab) != capacity:  # table written for fewer rows than the image file holds
            pad = capacity - len(lab)
            lab, w = np.pad(lab, (0, pad)), np.pad(w, (0, pad))
            src, rnd = np.pad(src, (0, pad)), np.pad(rnd, (0, pad))
        return cls(folder, images, lab.copy(), w.copy(), src.copy(), rnd.copy(), size, meta)

    # -- writing ------------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        """How the images are stored: "float16" or "uint8"."""
        return "uint8" if self.images.dtype == np.uint8 else "float16"

    def append(self, images: torch.Tensor, labels, weights, source, round_k):
        """Append attacks (Algorithm 2, line 7): float images in [0, 1] or already encoded ones."""
        b = images.shape[0]
        lo, hi = self.size, self.size + b
        if hi > self.images.shape[0]:
            raise RuntimeError("weighted dataset is full")
        self.images[lo:hi] = encode(images.detach(), self.storage).cpu().numpy()
        self.labels[lo:hi] = np.asarray(labels)
        self.weights[lo:hi] = np.asarray(weights, dtype=np.float64)
        self.source[lo:hi] = np.asarray(source)
        self.rounds[lo:hi] = round_k
        self.size = hi

    def truncate(self, size):
        """Forget rows from ``size`` on (an interrupted round is redone from its start)."""
        self.size = int(size)

    def flush(self, **meta_updates):
        """Make everything appended so far durable: images, then table, then meta."""
        self.images.flush()
        buf = io.BytesIO()
        n = self.size
        np.savez(buf, labels=self.labels[:n], weights=self.weights[:n], source=self.source[:n],
                 round=self.rounds[:n], size=np.int64(n))
        atomic_write_bytes(self.folder / TABLE, buf.getvalue())
        self.meta.update(meta_updates)
        atomic_write_json(self.folder / META, self.meta)

    # -- reading ------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    def sampling_probabilities(self) -> np.ndarray:
        w = self.weights[:self.size]
        return w / w.sum()

    def draw(self, n, rng) -> np.ndarray:
        """``n`` row indices drawn with replacement, row i with probability ``P_i / sum P``."""
        return rng.choice(self.size, size=int(n), replace=True, p=self.sampling_probabilities())

    def mean_sampled_weight(self) -> float:
        """E[P] when sampling proportionally to P: sum P^2 / sum P (the loss-weight normalizer)."""
        w = self.weights[:self.size]
        return float((w * w).sum() / w.sum())

    def batch(self, idx, device):
        """Float images in [0, 1], labels and weights of the rows ``idx``, on ``device``."""
        idx = np.asarray(idx)
        order = np.argsort(idx, kind="stable")  # read the memory map in file order
        rows = np.empty((len(idx),) + self.images.shape[1:], self.images.dtype)
        rows[order] = self.images[idx[order]]
        x = decode(torch.from_numpy(rows).to(device, non_blocking=True))
        y = torch.from_numpy(self.labels[idx]).to(device)
        w = torch.from_numpy(self.weights[idx]).to(device=device, dtype=torch.float32)
        return x, y, w

    @property
    def nbytes(self) -> int:
        """Bytes of the valid image rows plus the table."""
        return self.size * (self.bytes_per_image + 8 + 8 + 8 + 2)

    @property
    def bytes_per_image(self) -> int:
        """Bytes of one stored image."""
        return int(np.prod(self.images.shape[1:])) * self.images.dtype.itemsize

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "size": self.size, "capacity": int(self.images.shape[0]),
                "image_shape": list(self.images.shape[1:]), "storage": self.storage, "bytes": self.nbytes,
                "weight_total": float(self.weights[:self.size].sum()), "complete": self.complete}
