"""Built-in labelled image data that need no dataset folder: scikit-learn's handwritten digits
(shipped with scikit-learn, offline), MNIST and Fashion-MNIST (downloaded by torchvision on first
use), and :func:`load_split`, which reads either those or a dataset folder as tensors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geoaudit._errors import DependencyError, InputError
from geoaudit._validation import check_interval, check_options

#: Names :func:`load_builtin` and :func:`load_split` accept instead of a dataset folder.
BUILTIN_DATA = ("digits", "mnist", "fashion-mnist")


def _resize(x, image_size):
    import torch

    if image_size is None or image_size == x.shape[-1]:
        return x
    return torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                           align_corners=False).clamp_(0, 1)


def load_digits_tensors(*, image_size=28, test_fraction=0.3, random_state=0):
    """scikit-learn's handwritten digits as tensors, split into train and test.

    1797 8x8 greyscale images (shipped with scikit-learn, no download), scaled to [0, 1] and
    resized (bilinear) to ``image_size`` so MNIST-sized models apply.

    Parameters
    ----------
    image_size : int
        Side of the returned images, at least 8 (8 keeps the originals).
    test_fraction : float
        Fraction of the images in the test split, in (0, 1).
    random_state : int
        Seed of the stratified split.

    Returns
    -------
    dict
        ``"train"`` and ``"test"``: ``(images (N, 1, S, S) float32, labels (N,) int64)``;
        ``"class_names"``: ``["0", ..., "9"]``.
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    caller = "load_digits_tensors"
    image_size = check_interval("image_size", image_size, 8, None, caller=caller, integer=True)
    check_interval("test_fraction", test_fraction, 0, 1, caller=caller, closed="neither")
    d = load_digits()
    x = _resize(torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0, image_size)
    y = torch.as_tensor(d.target, dtype=torch.long)
    tr, te = train_test_split(range(len(y)), test_size=test_fraction, stratify=y.numpy(),
                              random_state=random_state)
    tr, te = torch.as_tensor(tr), torch.as_tensor(te)
    return {"train": (x[tr], y[tr]), "test": (x[te], y[te]), "class_names": [str(i) for i in range(10)]}


def _default_root() -> Path:
    return Path.home() / ".cache" / "geoaudit" / "torchvision"


def _remove_new_empty_dirs(created):
    """Remove the folders a failed download left empty, deepest first; keep anything with files."""
    for d in sorted(created, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:  # not empty (a partial file the user may want) or already gone
            pass


def _existing_dirs(root: Path) -> set:
    """Every folder from the filesystem root down to ``root`` and under it that exists now."""
    found = {p for p in [root, *root.parents] if p.is_dir()}
    if root.is_dir():
        found.update(Path(d) for d, _, _ in os.walk(root))
    return found


def load_torchvision_mnist(name="mnist", *, root=None, split="test", limit=None):
    """MNIST or Fashion-MNIST through torchvision (downloaded into ``root`` the first time).

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    root : str or Path, optional
        Where torchvision keeps the files (default ``~/.cache/geoaudit/torchvision``).
    split : {"train", "test"}
    limit : int, optional
        Keep the first ``limit`` images.

    Returns
    -------
    images : torch.Tensor
        ``(N, 1, 28, 28)`` float32 in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64.
    class_names : list of str

    Raises
    ------
    DependencyError
        When the files are not in ``root`` and cannot be downloaded (offline).  Folders the
        failed attempt created are removed again.
    """
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}.get(name)
    if cls is None:
        raise InputError(f"Unknown torchvision dataset {name!r}; use 'mnist' or 'fashion-mnist'.")
    check_options("split", split, ("train", "test"), caller="load_torchvision_mnist")
    root = Path(root) if root is not None else _default_root()
    before = _existing_dirs(root)
    try:
        ds = cls(str(root), train=(split == "train"), download=True)
    except Exception as e:  # offline: urllib errors, RuntimeError "Dataset not found"
        _remove_new_empty_dirs(_existing_dirs(root) - before)
        raise DependencyError(
            f"{name} could not be loaded from {str(root)!r} nor downloaded "
            f"({type(e).__name__}: {' '.join(str(e).split())[:300]}). "
            "Without internet, use the built-in 'digits' data (scikit-learn's, offline) or a dataset folder."
        ) from e
    x = ds.data[:limit].float().div_(255.0)[:, None]
    y = ds.targets[:limit].long()
    return x, y, list(ds.classes)


def load_builtin(name, split="test", *, image_size=None, data_root=None):
    """A split of a built-in dataset as tensors.

    Parameters
    ----------
    name : {"digits", "mnist", "fashion-mnist"}
    split : {"train", "test"}
    image_size : int, optional
        Resize to this side (bilinear).  Default: 28 (digits are upscaled from 8 to MNIST's size).
    data_root : str or Path, optional
        Where torchvision keeps MNIST / Fashion-MNIST.

    Returns
    -------
    images : torch.Tensor
        ``(N, 1, S, S)`` float32 in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64.
    class_names : list of str
    """
    caller = "load_builtin"
    check_options("name", name, BUILTIN_DATA, caller=caller)
    check_options("split", split, ("train", "test"), caller=caller)
    if image_size is not None:
        image_size = check_interval("image_size", image_size, 8, None, caller=caller, integer=True)
    if name == "digits":
        d = load_digits_tensors(image_size=image_size or 28)
        x, y = d[split]
        return x, y, list(d["class_names"])
    x, y, names = load_torchvision_mnist(name, root=data_root, split=split)
    return _resize(x, image_size), y, list(names)


def sample_per_class(labels, per_class, *, random_state=0):
    """Indices of up to ``per_class`` items of each class, drawn without replacement, sorted.

    Parameters
    ----------
    labels : array-like of int
    per_class : int
    random_state : int

    Returns
    -------
    torch.Tensor
        Int64 indices into ``labels``.
    """
    import torch

    g = torch.Generator().manual_seed(int(random_state))
    labels = torch.as_tensor(np.asarray(labels)).cpu()
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.sort(torch.cat(out)).values


def _random_subset(n, limit, random_state):
    import torch

    g = torch.Generator().manual_seed(int(random_state))
    return torch.sort(torch.randperm(n, generator=g)[:limit]).values


def load_split(data, split, *, image_size=None, channels=None, per_class=None, limit=None, random_state=0,
               data_root=None, seed=None):
    """``(images, labels, class_names)`` from a dataset folder or a built-in name.

    Parameters
    ----------
    data : str or Path
        A dataset folder (``geoaudit dataset build ...`` or any folder with ``image`` and
        ``label`` columns) or one of :data:`BUILTIN_DATA`.
    split : str
        The split to read ("train", "test", ...).
    image_size : int, optional
        Resize to this side; default the data's own (digits: 28).
    channels : {1, 3}, optional
        Default: from the data (built-ins are greyscale).
    per_class : int, optional
        Draw this many images per class (seeded by ``random_state``).
    limit : int, optional
        Keep a seeded random subset of this size (ignored with ``per_class``).
    random_state : int
        Seed of the subsets.
    data_root : str or Path, optional
        Where torchvision keeps MNIST / Fashion-MNIST.
    seed : int, optional
        Deprecated alias of ``random_state``.

    Returns
    -------
    images : torch.Tensor
        ``(N, C, S, S)`` float32 in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64.
    class_names : list of str
    """
    if seed is not None:
        random_state = seed
    caller = "load_split"
    if image_size is not None:
        image_size = check_interval("image_size", image_size, 8, None, caller=caller, integer=True)
    if channels is not None:
        check_options("channels", channels, (1, 3), caller=caller)
    if per_class is not None:
        per_class = check_interval("per_class", per_class, 1, None, caller=caller, integer=True)
    if limit is not None:
        limit = check_interval("limit", limit, 1, None, caller=caller, integer=True)
    if isinstance(data, str) and data in BUILTIN_DATA:
        if split not in ("train", "test"):
            raise InputError(f"The built-in data {data!r} has splits 'train' and 'test', not {split!r}.")
        x, y, names = load_builtin(data, split, image_size=image_size, data_root=data_root)
        if channels == 3:
            x = x.repeat(1, 3, 1, 1)
        idx = None
        if per_class is not None:
            idx = sample_per_class(y, per_class, random_state=random_state)
        elif limit is not None and limit < len(y):
            idx = _random_subset(len(y), limit, random_state)
        if idx is not None:
            x, y = x[idx], y[idx]
        return x, y, names

    from geoaudit.data._load import load_geo_dataset, split_to_tensors

    ds = load_geo_dataset(data, split, required=("image", "label"))
    feat = ds.features["label"]
    names = list(getattr(feat, "names", None) or [str(i) for i in range(int(max(ds["label"])) + 1)])
    if per_class is not None:
        ds = ds.select(sample_per_class(np.asarray(ds["label"]), per_class, random_state=random_state).tolist())
    elif limit is not None and limit < len(ds):
        ds = ds.select(_random_subset(len(ds), limit, random_state).tolist())
    if len(ds) == 0:
        raise InputError(f"The split {split!r} of {str(data)!r} is empty.")
    first = ds[0]["image"]
    if channels is None:
        channels = 1 if getattr(first, "mode", "RGB") in ("L", "1", "I", "F") else 3
    if image_size is None:
        w, h = first.size
        if w != h:
            raise InputError(f"Images of {str(data)!r} are {w}x{h}, not square; give an image size to "
                             "resize them to.")
        image_size = w
    x, y = split_to_tensors(ds, image_size=image_size, channels=channels)
    return x, y, names
