"""The weighted dataset D = {x_i, y_i, P_i} of Algorithms 2 and 3, kept on disk.

Images are uint8 in a memory-mapped ``.npy`` file (1 byte per pixel value, a quarter of
float32), so D costs the page cache, not process memory, and every model of a population --
in this process, in another process, or in a Ray worker on the same machine -- reads the same
file.  The small per-example table (label, weight, source example, round) is an ``.npz``
written atomically whenever the images written so far are flushed.

Folder layout::

    images.npy     uint8 (capacity, C, H, W), memory-mapped; rows [0, size) are valid
    table.npz      labels int64, weights float64, source int64, round int16, size
    dataset.json   {"complete": bool, "class_names", "settings", "stats", ...}
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


class WeightedDataset:
    """D on disk.  Create with :meth:`create`, open a finished one with :meth:`open`."""

    def __init__(self, folder, images, labels, weights, source, rounds, size, meta):
        self.folder = Path(folder)
        self.images = images          # np.memmap uint8 (capacity, C, H, W)
        self.labels = labels          # np.ndarray int64 (capacity,)
        self.weights = weights        # float64
        self.source = source          # int64: index of the clean example this one derives from
        self.rounds = rounds          # int16: 0 = clean, k = appended in round k of Algorithm 2
        self.size = int(size)
        self.meta = meta

    # -- creation and opening ----------------------------------------------------------------
    @classmethod
    def create(cls, folder, clean_images_u8: torch.Tensor, labels: torch.Tensor, *, capacity, meta):
        """A new D holding the N clean examples with weight 1, room for ``capacity`` in all."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = clean_images_u8.shape[0]
        if capacity < n:
            raise InputError(f"capacity {capacity} < {n} clean examples")
        images = np.lib.format.open_memmap(folder / IMAGES, mode="w+", dtype=np.uint8,
                                           shape=(capacity,) + tuple(clean_images_u8.shape[1:]))
        images[:n] = clean_images_u8.cpu().numpy()
        lab = np.zeros(capacity, np.int64)
        lab[:n] = labels.cpu().numpy()
        w = np.zeros(capacity, np.float64)
        w[:n] = 1.0
        src = np.zeros(capacity, np.int64)
        src[:n] = np.arange(n)
        rnd = np.zeros(capacity, np.int16)
        d = cls(folder, images, lab, w, src, rnd, n, dict(meta, complete=False))
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
    def append(self, images_u8: torch.Tensor, labels, weights, source, round_k):
        """Append attacks (Algorithm 2, line 7)."""
        b = images_u8.shape[0]
        lo, hi = self.size, self.size + b
        if hi > self.images.shape[0]:
            raise RuntimeError("weighted dataset is full")
        self.images[lo:hi] = images_u8.cpu().numpy()
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
        rows = np.empty((len(idx),) + self.images.shape[1:], np.uint8)
        rows[order] = self.images[idx[order]]
        x = torch.from_numpy(rows).to(device, non_blocking=True).float().div_(255.0)
        y = torch.from_numpy(self.labels[idx]).to(device)
        w = torch.from_numpy(self.weights[idx]).to(device=device, dtype=torch.float32)
        return x, y, w

    @property
    def nbytes(self) -> int:
        """Bytes of the valid image rows plus the table."""
        per = int(np.prod(self.images.shape[1:]))
        return self.size * (per + 8 + 8 + 8 + 2)

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "size": self.size, "capacity": int(self.images.shape[0]),
                "image_shape": list(self.images.shape[1:]), "bytes": self.nbytes,
                "weight_total": float(self.weights[:self.size].sum()), "complete": self.complete}
