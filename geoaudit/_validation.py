"""Input validation shared by every part of geoaudit.

Messages follow scikit-learn's wording: "The 'eps' parameter of PGD must be a float in
(0, inf). Got -1.0 instead."  Validation raises InputError (a ValueError); never assert.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

from geoaudit._errors import InputError

_PARAM_MSG = "The {name!r} parameter of {caller} must be {what}. Got {value!r} instead."


def _fmt_bound(low, high, closed):
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    return f"{left}{lo}, {hi}{right}"


def check_interval(name, value, low=None, high=None, *, caller, closed="both", integer=False):
    """Check that ``value`` is a real (or integer) number inside an interval; return it.

    ``closed`` is one of "both", "left", "right", "neither"; ``None`` bounds are infinite.
    """
    kind = "an int" if integer else "a float"
    what = f"{kind} in {_fmt_bound(low, high, closed)}"
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type:
        raise InputError(_PARAM_MSG.format(name=name, caller=caller, what=what, value=value))
    if not integer and not math.isfinite(float(value)):
        raise InputError(_PARAM_MSG.format(name=name, caller=caller, what=what, value=value))
    lo_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    hi_ok = high is None or (value <= high if closed in ("both", "right") else value < high)
    if not (lo_ok and hi_ok):
        raise InputError(_PARAM_MSG.format(name=name, caller=caller, what=what, value=value))
    return int(value) if integer else float(value)


def check_options(name, value, options: Iterable, *, caller):
    """Check that ``value`` is one of ``options``; return it."""
    options = list(options)
    if value not in options:
        what = "one of " + ", ".join(repr(o) for o in options)
        raise InputError(_PARAM_MSG.format(name=name, caller=caller, what=what, value=value))
    return value


def check_columns(columns: Sequence[str], required: Iterable[str], *, source: str):
    """Raise one error naming every missing column and listing those present."""
    present = list(columns)
    missing = [c for c in required if c not in present]
    if missing:
        raise InputError(
            f"{source} has no column {', '.join(repr(m) for m in missing)}; "
            f"columns present: {', '.join(repr(c) for c in present) or '(none)'}."
        )


def check_images(images, *, caller, name="images", min_size=None):
    """Check a float image batch of shape (N, C, H, W) with values in [0, 1]; return it."""
    import torch

    if not isinstance(images, torch.Tensor):
        raise InputError(f"Expected {name} of {caller} to be a torch.Tensor, got {type(images).__name__}.")
    if images.dim() != 4:
        raise InputError(
            f"Expected {name} of {caller} to have shape (N, C, H, W), got {images.dim()} dimensions "
            f"{tuple(images.shape)}."
        )
    if images.shape[0] == 0:
        raise InputError(f"Expected {name} of {caller} to hold at least one image, got an empty batch.")
    if not images.is_floating_point():
        raise InputError(
            f"Expected {name} of {caller} to be a float tensor in [0, 1], got dtype {images.dtype}."
        )
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise InputError(
            f"Expected {name} of {caller} to have values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
            "Normalization belongs inside the model (see geoaudit.train.Normalize)."
        )
    if min_size is not None and min(images.shape[-2:]) < min_size:
        raise InputError(
            f"Expected {name} of {caller} to be at least {min_size}x{min_size} pixels, "
            f"got {images.shape[-2]}x{images.shape[-1]}."
        )
    return images


def check_labels(labels, n, *, caller, num_classes=None, name="labels"):
    """Check integer labels of length ``n`` (and within ``num_classes`` when given); return them."""
    import torch

    if not isinstance(labels, torch.Tensor):
        raise InputError(f"Expected {name} of {caller} to be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise InputError(
            f"Expected {name} of {caller} to have shape ({n},), one per image, got {tuple(labels.shape)}."
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"Expected {name} of {caller} to be integer class indices, got dtype {labels.dtype}.")
    if n and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        bound = f"[0, {num_classes - 1}]" if num_classes is not None else "[0, inf)"
        raise InputError(
            f"Expected {name} of {caller} to be in {bound}, got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return labels


def check_flag(flag, value, low=None, high=None, *, integer=True):
    """Check a command-line option's number against an interval (both ends included); return it.

    For ``commands/``: the message names the option as typed, e.g. "--limit must be at least
    1, got 0."  ``None`` passes (an option left unset).

    Parameters
    ----------
    flag : str
        The option as the user typed it (``"--limit"``).
    value : int or float or None
    low, high : int or float, optional
        Bounds; ``None`` is unbounded.
    integer : bool
        Describe the bounds as integers.

    Returns
    -------
    int or float or None
        ``value``.
    """
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {value}.")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            what = f"at least {low}"
        elif low is None:
            what = f"at most {high}"
        else:
            what = f"in [{low}, {high}]"
        raise InputError(f"{flag} must be {what}, got {value}.")
    return value
