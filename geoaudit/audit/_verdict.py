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


def mean_accuracy_table(tables: dict, *, min_group_size=1) -> pd.DataFrame:
    """Each group's accuracy averaged over models, over the groups every model kept.

    Parameters
    ----------
    tables : dict of str -> pandas.DataFrame
        One group table per model (columns group, n, correct, accuracy, covariate), as
        :func:`group_accuracy` returns.
    min_group_size : int, default 1
        Groups with fewer images for any model are left out.

    Returns
    -------
    pandas.DataFrame
        Columns group, n (the per-model image count: the mean's sampling variance is at most
        that of one model, reached when the models agree on every image), correct, accuracy
        (the mean over models), covariate, n_models.
    """
    frames = [t[["group", "n", "accuracy", "covariate"]].assign(_m=i) for i, t in enumerate(tables.values())]
    allt = pd.concat(frames, ignore_index=True)
    agg = allt.groupby("group", sort=True).agg(
        n=("n", "mean"), n_min=("n", "min"), accuracy=("accuracy", "mean"), covariate=("covariate", "first"),
        n_models=("_m", "nunique"))
    agg = agg[(agg["n_models"] == len(tables)) & (agg["n_min"] >= min_group_size)].reset_index()
    n = np.maximum(np.round(agg["n"].to_numpy(float)), 1).astype(np.int64)
    out = pd.DataFrame({"group": agg["group"].astype(str), "n": n,
                        "correct": np.round(agg["accuracy"].to_numpy(float) * n).astype(np.int64),
                        "accuracy": agg["accuracy"].to_numpy(float),
                        "covariate": agg["covariate"].to_numpy(float), "n_models": agg["n_models"].to_numpy()})
    return out


def population_verdict(tables: dict, *, min_group_size=50, log_covariate=True, alpha=0.05,
                       variance=None) -> PopulationVerdict | None:
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

    Returns
    -------
    PopulationVerdict or None
        None for fewer than two models (a single model's own test is its verdict) or when the
        mean table cannot be tested (fewer than 3 groups kept by every model, equal accuracy).
    """
    from geoaudit.audit._gls import gls_test

    if len(tables) < 2:
        return None
    table = mean_accuracy_table(tables, min_group_size=min_group_size)
    kw = {} if variance is None else {"variance": variance}
    try:
        fit = gls_test(table, min_group_size=1, log_covariate=log_covariate, alpha=alpha, **kw)
    except InputError as e:
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
    )
