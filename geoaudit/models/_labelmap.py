"""Label maps between a model's classes and a dataset's.

A model trained on ImageNet-1k predicts one of 1000 classes; a dataset labels its images with
wnids (Dollar Street's ``imagenet_sysnet_id``), ImageNet names, indices, or its own class names
(GeoDE's ``object``).  :func:`label_map` matches each model class to at most one dataset class:
first by an explicit mapping, then by wnid (a 1000-class model is taken to be in the standard
ImageNet-1k order), then by index, then by name and synonyms ("tench, Tinca tinca"), ignoring
case, underscores and punctuation.  A map that covers no class is an error.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError


def _norm(s) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(s).lower().replace("_", " ")).strip()


def data_key(value) -> str:
    """The key a dataset label is matched on: ``"#3"`` for an index, a wnid as it is, else the
    normalised name."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"#{int(value)}"
    s = str(value).strip()
    if re.fullmatch(r"n\d{8}", s):
        return s
    if s.isdigit():
        return f"#{int(s)}"
    return _norm(s)


def _model_keys(i, name, n_classes, imagenet):
    keys = []
    if imagenet is not None and n_classes == 1000:
        keys.append(imagenet[0][i])  # wnid
    keys.append(f"#{i}")
    if name is not None:
        keys.append(_norm(name))
        keys.extend(_norm(p) for p in str(name).split(",") if p.strip())
        # geoaudit's ImageNet names carry the wnid on duplicates: "crane_n02012849"
        m = re.fullmatch(r"(.*)_(n\d{8})", str(name))
        if m:
            keys.extend([_norm(m.group(1)), m.group(2)])
    if imagenet is not None and n_classes == 1000:
        keys.append(_norm(imagenet[1][i]))
    return list(dict.fromkeys(k for k in keys if k))


@dataclass(frozen=True)
class LabelMap:
    """Model class index -> dataset class key.

    Attributes
    ----------
    model_to_data : tuple of str or None
        For each model class, the dataset class key it counts as (None: counts as no class).
    data_classes : tuple of str
        The dataset class keys.
    uncovered : tuple of str
        Dataset classes no model class maps to (their images can never be right).
    """

    model_to_data: tuple
    data_classes: tuple
    uncovered: tuple

    @property
    def n_covered(self) -> int:
        return len(self.data_classes) - len(self.uncovered)

    def map(self, indices):
        """Dataset class keys of model class indices (array of any shape; None where unmapped)."""
        lut = np.array(list(self.model_to_data) + [None], dtype=object)
        idx = np.asarray(indices, dtype=np.int64)
        idx = np.where((idx >= 0) & (idx < len(self.model_to_data)), idx, len(self.model_to_data))
        return lut[idx]

    def summary(self) -> str:
        return (f"label map: {sum(m is not None for m in self.model_to_data)} model classes -> "
                f"{self.n_covered} of {len(self.data_classes)} dataset classes")


def read_label_map(path) -> dict:
    """Read a label map file.

    Parameters
    ----------
    path : str or Path
        A JSON object ``{model_class: dataset_class}`` or a CSV with columns
        ``model_class,dataset_class``.

    Returns
    -------
    dict
        For :func:`label_map`'s ``mapping``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Label map file {str(path)!r} does not exist.")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"Could not read label map {str(path)!r}: {e}") from e
        if not isinstance(data, dict):
            raise InputError(f"Label map {str(path)!r} must be a JSON object {{model_class: dataset_class}}.")
        return {str(k): v for k, v in data.items()}
    t = pd.read_csv(path, dtype=str)
    if not {"model_class", "dataset_class"} <= set(t.columns):
        raise InputError(f"Label map {str(path)!r} needs columns model_class, dataset_class; "
                         f"columns present: {', '.join(t.columns)}.")
    return dict(zip(t["model_class"], t["dataset_class"]))


def label_map(model_classes, data_classes, *, mapping=None) -> LabelMap:
    """Match a model's classes to a dataset's.

    Parameters
    ----------
    model_classes : int or list of str
        The model's class names in logit order, or just their number (then only wnids, for a
        1000-class model, and indices can match).
    data_classes : iterable
        The dataset's class labels (indices, wnids or names).
    mapping : dict, optional
        Explicit ``{model class (name, wnid or index): dataset class}``; tried first.  Many model
        classes may map to one dataset class.

    Returns
    -------
    LabelMap

    Raises
    ------
    InputError
        When no model class maps to any dataset class.
    """
    from geoaudit.data import imagenet_classes

    if isinstance(model_classes, (int, np.integer)):
        n, names = int(model_classes), [None] * int(model_classes)
    else:
        names = [None if c is None else str(c) for c in model_classes]
        n = len(names)
    imagenet = imagenet_classes() if n == 1000 else None
    dkeys = list(dict.fromkeys(data_key(c) for c in data_classes))
    dset = set(dkeys)
    explicit = {}
    for k, v in (mapping or {}).items():
        explicit[data_key(k)] = data_key(v)
    out = []
    for i, name in enumerate(names):
        keys = _model_keys(i, name, n, imagenet)
        hit = None
        for k in keys:
            if k in explicit:
                hit = explicit[k]
                break
        if hit is None and not mapping:
            hit = next((k for k in keys if k in dset), None)
        out.append(hit if hit in dset else None)
    covered = {o for o in out if o is not None}
    if not covered:
        ex_m = ", ".join(str(x) for x in (names[:3] if names[0] is not None else range(3)))
        ex_d = ", ".join(map(str, list(data_classes)[:3]))
        raise InputError(
            f"The label map covers no class: none of the model's {n} classes (e.g. {ex_m}) matches any of the "
            f"dataset's {len(dkeys)} classes (e.g. {ex_d}); give a label map {{model class: dataset class}}."
        )
    return LabelMap(tuple(out), tuple(dkeys), tuple(k for k in dkeys if k not in covered))
