"""The population-level verdict: one test of the population's mean beta.

The models of a population are audited on one shared test set, so their F-tests are
correlated (they share every country's images and the test set's country effects): a vote
("biased when most models' tests reject") has no stated size, and combining their p-values
as if independent is worse.  The verdict here averages each group's accuracy over the models
and runs the audit's (calibrated) test once on that mean accuracy per group: the slope is the
population's mean beta, and the test's between-group error term (tau^2 in the random-effects
default) absorbs the country effects the models share.  Its size is measured in
``benchmarks/calibration_populations.py``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit.audit._compare_results import PopulationVerdict

log = logging.getLogger(__name__)


def _get(fit, *names):
    """The first attribute of ``fit`` among ``names`` (result field names changed once)."""
    for n in names:
        if hasattr(type(fit), n) or n in getattr(fit, "__dataclass_fields__", {}):
            return getattr(fit, n)
    raise AttributeError(names[0])


def _correct(y, yhat):
    if y.dtype.kind in "OUS" or yhat.dtype.kind in "OUS":
        return pd.Series(y).astype(str).to_numpy() == pd.Series(yhat).astype(str).to_numpy()
    return y == yhat


def mean_accuracy_variance(parts: dict, *, group, label_col, pred_col, image_col="image_id"):
    """Sampling variance of each group's model-mean accuracy, from the models' agreement per image.

    The models of a population predict the same test images, so the mean of their
    accuracies varies over test sets as the per-image mean correctness does:
    Var = s^2(mean over models of correct_j) / n over the group's images j.  It lies between
    p(1-p)/(n K) (models independent) and p(1-p)/n (models agree on every image).

    Parameters
    ----------
    parts : dict of str -> pandas.DataFrame
        Each model's prediction rows.
    group, label_col, pred_col : str
        Columns of the group, true and predicted class.
    image_col : str, default "image_id"
        Column identifying an image; without it, the models' rows are matched by position
        when every model lists the same groups in the same order.

    Returns
    -------
    pandas.Series or None
        Group -> variance; None when the models' images cannot be matched one to one (then
        the models are treated as predicting independent images).
    """
    frames = list(parts.values())
    if len(frames) < 2:
        return None
    lengths = {len(f) for f in frames}
    if len(lengths) != 1:
        return None
    if all(image_col in f.columns for f in frames):
        keys = [f[image_col].astype(str) for f in frames]
        if any(k.duplicated().any() for k in keys):
            return None
        order = [np.argsort(k.to_numpy(), kind="stable") for k in keys]
        ids = [k.to_numpy()[o] for k, o in zip(keys, order)]
        if any(not np.array_equal(ids[0], i) for i in ids[1:]):
            return None
    else:
        order = [np.arange(len(f)) for f in frames]
    groups = [f[group].astype(str).to_numpy()[o] for f, o in zip(frames, order)]
    if any(not np.array_equal(groups[0], gr) for gr in groups[1:]):
        return None
    correct = np.stack([_correct(f[label_col].to_numpy(), f[pred_col].to_numpy())[o]
                        for f, o in zip(frames, order)], axis=1).astype(float)
    per_image = pd.DataFrame({"group": groups[0], "c": correct.mean(axis=1)})
    agg = per_image.groupby("group", sort=True)["c"].agg(["var", "size"])
    return (agg["var"].fillna(0.0) / agg["size"]).rename("variance")


def mean_accuracy_table(tables: dict, *, min_group_size=1, variance=None) -> pd.DataFrame:
    """Each group's accuracy averaged over models, over the groups every model kept.

    Parameters
    ----------
    tables : dict of str -> pandas.DataFrame
        One group table per model (columns group, n, correct, accuracy, covariate), as
        :func:`group_accuracy` returns.
    min_group_size : int, default 1
        Groups with fewer images for any model are left out.
    variance : pandas.Series, optional
        Group -> sampling variance of the mean accuracy (:func:`mean_accuracy_variance`).
        Without it the models are taken to predict independent images.

    Returns
    -------
    pandas.DataFrame
        Columns group, n (the effective sample size of the mean accuracy, p(1-p)/variance,
        between the per-model image count and K times it), correct, accuracy (the mean over
        models), covariate, n_models, n_images (per model).
    """
    frames = [t[["group", "n", "accuracy", "covariate"]].assign(_m=i) for i, t in enumerate(tables.values())]
    allt = pd.concat(frames, ignore_index=True)
    agg = allt.groupby("group", sort=True).agg(
        n=("n", "mean"), n_min=("n", "min"), accuracy=("accuracy", "mean"), covariate=("covariate", "first"),
        n_models=("_m", "nunique"))
    agg = agg[(agg["n_models"] == len(tables)) & (agg["n_min"] >= min_group_size)].reset_index()
    n_img = agg["n"].to_numpy(float)
    K = len(tables)
    acc = agg["accuracy"].to_numpy(float)
    if variance is None:
        n_eff = n_img * K
    else:
        v = variance.reindex(agg["group"].astype(str)).to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            n_eff = np.where(v > 0, acc * (1 - acc) / v, n_img * K)
        n_eff = np.clip(np.nan_to_num(n_eff, nan=n_img * K), n_img, n_img * K)
    n = np.maximum(np.round(n_eff), 1).astype(np.int64)
    out = pd.DataFrame({"group": agg["group"].astype(str), "n": n,
                        "correct": np.round(agg["accuracy"].to_numpy(float) * n).astype(np.int64),
                        "accuracy": agg["accuracy"].to_numpy(float),
                        "covariate": agg["covariate"].to_numpy(float), "n_models": agg["n_models"].to_numpy(),
                        "n_images": np.round(n_img).astype(np.int64)})
    return out


def population_verdict(tables: dict, *, min_group_size=50, log_covariate=True, alpha=0.05,
                       variance=None, sampling_variance=None) -> PopulationVerdict | None:
    """The population-level test of H0: the population's mean beta is 0.

    Parameters
    ----------
    tables : dict of str -> pandas.DataFrame
        One group table per model (as :func:`group_accuracy` returns).
    min_group_size : int, default 50
        Groups below it for any model are left out.
    log_covariate : bool, default True
    alpha : float, default 0.05
    variance : str, optional
        The method of :func:`gls_test`; by default its default (the calibrated test).
    sampling_variance : pandas.Series, optional
        Group -> sampling variance of the mean accuracy, from the models' agreement on each
        image (:func:`mean_accuracy_variance`); without it the models are taken to predict
        independent images (which makes the test conservative when they share images).

    Returns
    -------
    PopulationVerdict or None
        None for fewer than two models (a single model's own test is its verdict) or when the
        mean table cannot be tested (fewer than 3 groups kept by every model, equal accuracy).
    """
    from geoaudit.audit._gls import gls_test

    if len(tables) < 2:
        return None
    table = mean_accuracy_table(tables, min_group_size=min_group_size, variance=sampling_variance)
    kw = {} if variance is None else {"variance": variance}
    try:
        # without 'correct': the mean accuracy is not a count over n (gls_test would refuse the mismatch)
        fit = gls_test(table[["group", "n", "accuracy", "covariate"]], min_group_size=1,
                       log_covariate=log_covariate, alpha=alpha, **kw)
    except InputError as e:  # e.g. fewer than 3 groups kept by every model
        log.warning("no population verdict: %s", e)
        return None
    return PopulationVerdict(
        beta=float(fit.beta),
        bse=float(_get(fit, "bse", "se")),
        ci_low=float(fit.ci_low),
        ci_high=float(fit.ci_high),
        statistic=float(_get(fit, "tvalue", "t_stat")),
        df=float(fit.df_denom),
        pvalue=float(_get(fit, "pvalue", "p_value")),
        method=str(fit.variance),
        n_models=len(tables),
        n_groups=int(fit.n_groups),
        alpha=float(alpha),
        image_agreement=sampling_variance is not None,
    )
