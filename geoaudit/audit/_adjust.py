"""Class-adjusted group accuracy: direct standardisation to a common class mix.

A group's raw accuracy mixes two things: how well the model does on each class there, and
which classes the group's images show.  When the class mix varies with the covariate (richer
countries photograph more of the easy classes), raw accuracy rises with GDP although no class
is recognised better in richer countries.  Direct standardisation removes the class mix: each
group's per-class accuracies are averaged with the same class weights for every group (the
pooled class distribution of the groups audited),

    adj_g = sum_c w_c * p~_gc,        w_c = N_c / N,

where p~_gc = (x_gc + k * p_c) / (n_gc + k) shrinks a group's accuracy on class c toward that
class's pooled accuracy p_c with the weight of k images (k = ``prior_strength``), so a class a
group barely shows (or lacks) borrows from the pool instead of giving 0/1 or nothing.  Its
variance is the sum of w_c^2 * q_gc(1 - q_gc) / (n_gc + k + 1), q_gc = (x_gc + k p_c + 0.5) /
(n_gc + k + 1) (about a Beta posterior's variance, which keeps an empty or all-correct cell
uncertain), handed to the regression as an effective sample size
n_eff = adj(1 - adj) / var so that every variance option of :func:`gls_test` uses it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit.audit._groups import _as_1d, group_accuracy

DEFAULT_PRIOR_STRENGTH = 1.0


def standardise_cells(n_gc, x_gc, kept=None, *, prior_strength=DEFAULT_PRIOR_STRENGTH):
    """Directly standardised accuracy and its variance from per-(group, class) counts.

    Parameters
    ----------
    n_gc, x_gc : numpy.ndarray, shape (..., G, C)
        Images and correct predictions of each group g and class c (leading axes batch).
    kept : numpy.ndarray of bool, shape (..., G), optional
        Groups whose images define the standard class mix (default: all).
    prior_strength : float, default 1.0
        k, the images' worth of the pooled class accuracy each cell is shrunk toward.

    Returns
    -------
    adj, var : numpy.ndarray, shape (..., G)
        The adjusted accuracy sum_c w_c p~_gc and its variance sum_c w_c^2 q(1 - q)/(n_gc + k + 1),
        q = (x_gc + k p_c + 0.5)/(n_gc + k + 1).
    """
    n_gc = np.asarray(n_gc, dtype=float)
    x_gc = np.asarray(x_gc, dtype=float)
    kept = np.ones(n_gc.shape[:-1], bool) if kept is None else np.asarray(kept, bool)
    kk = kept[..., None]
    n_c, x_c = (n_gc * kk).sum(axis=-2), (x_gc * kk).sum(axis=-2)  # (..., C)
    w = n_c / n_c.sum(axis=-1, keepdims=True)
    # a class no kept group shows has weight 0; its pooled accuracy only fills cells of dropped groups
    p_all = x_gc.sum(axis=-2) / np.maximum(n_gc.sum(axis=-2), 1)
    p_c = np.where(n_c > 0, x_c / np.maximum(n_c, 1), p_all)[..., None, :]
    k = float(prior_strength)
    p_gc = (x_gc + k * p_c) / (n_gc + k)
    w = w[..., None, :]
    adj = (p_gc * w).sum(axis=-1)
    # the variance uses a proportion kept off 0 and 1 (as the binomial variance of gls_test does),
    # so that a cell of a class every group gets right still counts as uncertain
    p_v = (x_gc + k * p_c + 0.5) / (n_gc + k + 1)
    var = (w ** 2 * p_v * (1 - p_v) / (n_gc + k + 1)).sum(axis=-1)
    return adj, var


def class_adjusted_accuracy(labels, predictions, groups, *, covariate=None, min_group_size=1,
                            prior_strength=DEFAULT_PRIOR_STRENGTH, caller="class_adjusted_accuracy"):
    """Per-group accuracy standardised to the pooled class mix (direct standardisation).

    Parameters
    ----------
    labels, predictions, groups : array-like, shape (N,)
        True class, predicted class and group of each image.
    covariate : array-like or dict, optional
        The groups' covariate, as for :func:`group_accuracy`.
    min_group_size : int, default 1
        Groups with fewer images are left out of the standard class mix (and flagged
        ``dropped``); their adjusted accuracy is still given.
    prior_strength : float, default 1.0
        k: how many images' worth of the class's pooled accuracy each cell is shrunk toward.
    caller : str
        Name used in error messages.

    Returns
    -------
    pandas.DataFrame
        One row per group: group, n (effective sample size of the adjusted accuracy, rounded),
        correct (round(accuracy * n)), accuracy (class-adjusted), covariate, n_images,
        accuracy_crude, n_classes (classes the group shows), dropped.

    Examples
    --------
    >>> t = class_adjusted_accuracy([0, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1], ["a", "a", "a", "b", "b", "b"])
    >>> t["n_images"].tolist()
    [3, 3]
    """
    if not np.isfinite(prior_strength) or prior_strength <= 0:
        raise InputError(f"prior_strength of {caller} must be a positive number, got {prior_strength!r}.")
    crude = group_accuracy(labels, predictions, groups, covariate=covariate, caller=caller)
    y = _as_1d("labels", labels, caller=caller)
    yhat = _as_1d("predictions", predictions, caller=caller)
    g = pd.Series(_as_1d("groups", groups, caller=caller)).astype(str).to_numpy()
    if y.dtype.kind in "OUS" or yhat.dtype.kind in "OUS":
        y_key = pd.Series(y).astype(str).to_numpy()
        correct = y_key == pd.Series(yhat).astype(str).to_numpy()
    else:
        y_key, correct = y, (y == yhat)
    frame = pd.DataFrame({"group": g, "cls": pd.Series(y_key).astype(str).to_numpy(),
                          "correct": correct.astype(np.int64)})
    cells = frame.groupby(["group", "cls"], sort=True)["correct"].agg(["size", "sum"])
    n_gc = cells["size"].unstack(fill_value=0).reindex(crude["group"]).fillna(0).to_numpy(float)
    x_gc = cells["sum"].unstack(fill_value=0).reindex(crude["group"]).fillna(0).to_numpy(float)
    kept = crude["n"].to_numpy() >= min_group_size
    if not kept.any():
        kept = np.ones(len(crude), bool)  # nothing would be kept: the regression reports it
    adj, var = standardise_cells(n_gc, x_gc, kept, prior_strength=prior_strength)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(var > 0, adj * (1 - adj) / var, crude["n"].to_numpy(float))
    n_eff = np.maximum(np.round(np.nan_to_num(n_eff, nan=1.0)), 1).astype(np.int64)
    return pd.DataFrame({
        "group": crude["group"].to_numpy(),
        "n": n_eff,
        "correct": np.round(adj * n_eff).astype(np.int64),
        "accuracy": adj,
        "covariate": crude["covariate"].to_numpy(),
        "n_images": crude["n"].to_numpy(np.int64),
        "accuracy_crude": crude["accuracy"].to_numpy(),
        "n_classes": (n_gc > 0).sum(axis=1).astype(np.int64),
        "dropped": crude["n"].to_numpy() < min_group_size,
    })


def adjusted_gls(table, *, min_group_size, log_covariate, alpha, **kw):
    """:func:`gls_test` on a class-adjusted table: groups are dropped by their image count (not by
    the effective sample size), and the result lists them as dropped at ``min_group_size``."""
    import dataclasses

    from geoaudit.audit._gls import gls_test

    small = table["n_images"].to_numpy() < min_group_size
    # without 'correct': the adjusted accuracy is not a count over n (gls_test would refuse the mismatch)
    fit = gls_test(table.loc[~small, ["group", "n", "accuracy", "covariate"]].reset_index(drop=True),
                   min_group_size=1, log_covariate=log_covariate, alpha=alpha, **kw)
    return dataclasses.replace(fit, dropped_groups=tuple(str(x) for x in table.loc[small, "group"]),
                               min_group_size=int(min_group_size))
