"""Per-group accuracy: n, correct, accuracy and the group's covariate."""
from __future__ import annotations

import numpy as np
import pandas as pd

from geoaudit._errors import InputError

GROUP_COLUMNS = ["group", "n", "correct", "accuracy", "covariate"]


def _as_1d(name, values, *, caller):
    if isinstance(values, (pd.Series, pd.Index)):
        arr = values.to_numpy()
    else:
        try:
            import torch

            if isinstance(values, torch.Tensor):
                values = values.detach().cpu().numpy()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"Expected {name} of {caller} to be one-dimensional, got shape {arr.shape}.")
    return arr


def _nan_mask(arr):
    return pd.isna(pd.Series(arr)).to_numpy()


def _equal(y, yhat, *, caller):
    """Elementwise y == yhat, comparing numbers as numbers even when one side is text
    ("1" equals 1.0), and refusing text that cannot be compared with numbers."""
    if y.dtype.kind not in "OUS" and yhat.dtype.kind not in "OUS":
        return y == yhat
    ny = pd.to_numeric(pd.Series(y), errors="coerce")
    nyhat = pd.to_numeric(pd.Series(yhat), errors="coerce")
    y_num, yhat_num = not ny.isna().any(), not nyhat.isna().any()
    if y_num and yhat_num:
        return ny.to_numpy(float) == nyhat.to_numpy(float)
    if y_num != yhat_num:
        text, example = ("labels", y[ny.isna().to_numpy()][0]) if not y_num else \
            ("predictions", yhat[nyhat.isna().to_numpy()][0])
        other = "predictions" if text == "labels" else "labels"
        raise InputError(f"The {text} of {caller} are text (e.g. {str(example)!r}) but its {other} are numbers; "
                         "no prediction could ever be correct. Pass both as class indices or both as class names.")
    return pd.Series(y).astype(str).to_numpy() == pd.Series(yhat).astype(str).to_numpy()


def _example_list(values, k=8):
    values = [str(v) for v in values]
    more = f" and {len(values) - k} more" if len(values) > k else ""
    return ", ".join(values[:k]) + more


def group_accuracy(labels, predictions, groups, *, covariate=None, caller="group_accuracy"):
    """Accuracy of each group.

    Parameters
    ----------
    labels, predictions : array-like of shape (N,)
        True and predicted classes (ints or strings; a prediction is correct when equal).
    groups : array-like of shape (N,)
        The group of each sample (e.g. ISO3 country codes).
    covariate : array-like of shape (N,) or mapping, optional
        The group covariate (e.g. GDP per capita): per sample (must be constant within a
        group), or a mapping / Series from group to value.

    Returns
    -------
    pandas.DataFrame
        Columns group, n, correct, accuracy, covariate (NaN when no covariate was given),
        one row per group, sorted by group.

    Raises
    ------
    InputError
        Arrays of different lengths, missing values, or a covariate that varies within a group.
    """
    y = _as_1d("labels", labels, caller=caller)
    yhat = _as_1d("predictions", predictions, caller=caller)
    g = _as_1d("groups", groups, caller=caller)
    if not (len(y) == len(yhat) == len(g)):
        raise InputError(
            f"labels, predictions and groups of {caller} must have the same length; "
            f"got {len(y)}, {len(yhat)} and {len(g)}."
        )
    if len(y) == 0:
        raise InputError(f"{caller} got no samples.")
    for name, arr in (("labels", y), ("predictions", yhat), ("groups", g)):
        bad = _nan_mask(arr)
        if bad.any():
            raise InputError(f"{int(bad.sum())} of {len(arr)} {name} of {caller} are missing (NaN/None); "
                             "remove those rows first.")
    correct = _equal(y, yhat, caller=caller)
    frame = pd.DataFrame({"group": pd.Series(g).astype(str).to_numpy(), "correct": correct.astype(np.int64)})
    agg = frame.groupby("group", sort=True)["correct"].agg(["size", "sum"])
    table = pd.DataFrame({
        "group": agg.index.astype(str),
        "n": agg["size"].to_numpy(np.int64),
        "correct": agg["sum"].to_numpy(np.int64),
    })
    table["accuracy"] = table["correct"] / table["n"]
    table["covariate"] = _group_covariate(covariate, frame["group"], table["group"], caller=caller)
    return table.reset_index(drop=True)


def _group_covariate(covariate, sample_groups, table_groups, *, caller):
    if covariate is None:
        return np.full(len(table_groups), np.nan)
    if isinstance(covariate, dict) or (isinstance(covariate, pd.Series) and len(covariate) != len(sample_groups)):
        mapping = pd.Series(covariate)
        mapping.index = mapping.index.astype(str)
        missing = [gr for gr in table_groups if gr not in mapping.index]
        if missing:
            raise InputError(f"The covariate mapping of {caller} has no value for groups {_example_list(missing)}.")
        return pd.to_numeric(mapping.loc[list(table_groups)], errors="coerce").to_numpy(float)
    cov = _as_1d("covariate", covariate, caller=caller)
    if len(cov) != len(sample_groups):
        raise InputError(f"covariate of {caller} must have one value per sample ({len(sample_groups)}), "
                         f"got {len(cov)}.")
    try:
        cov = cov.astype(float)
    except (TypeError, ValueError) as e:
        raise InputError(f"covariate of {caller} must be numeric: {e}") from e
    frame = pd.DataFrame({"group": sample_groups.to_numpy(), "cov": cov})
    # NaN-aware "constant within group": compare min and max over non-NaN values, and flag mixes.
    stats = frame.groupby("group", sort=True)["cov"].agg(["min", "max", "count", "size"])
    varying = stats.index[(stats["max"] - stats["min"]).abs() > 1e-9 * stats["max"].abs().clip(lower=1.0)]
    if len(varying):
        raise InputError(f"The covariate of {caller} must be constant within each group; it varies in "
                         f"groups {_example_list(varying)}.")
    partly = stats.index[(stats["count"] > 0) & (stats["count"] < stats["size"])]
    if len(partly):
        raise InputError(f"The covariate of {caller} is missing (NaN) for some rows of groups "
                         f"{_example_list(partly)}.")
    return stats["min"].reindex(table_groups).to_numpy(float)


def pool_group_tables(tables: dict) -> pd.DataFrame:
    """Pool per-model group tables: n and correct summed over models, accuracy recomputed."""
    frames = []
    for name, t in tables.items():
        frames.append(t.assign(_model=name))
    allt = pd.concat(frames, ignore_index=True)
    agg = allt.groupby("group", sort=True).agg(
        n=("n", "sum"), correct=("correct", "sum"), covariate=("covariate", "first"),
        n_models=("_model", "nunique"),
    ).reset_index()
    agg["accuracy"] = agg["correct"] / agg["n"]
    return agg[["group", "n", "correct", "accuracy", "covariate", "n_models"]]
