"""The GLS test of section 4 of the paper: does group accuracy depend on the covariate?

For m groups with n_i images, accuracy p_i and covariate g_i, fit by generalized least squares

    p_i = intercept + beta * ln(g_i) + e_i,      Cov(e) = Sigma

with Sigma = diag(1/sqrt(n_i)) (``variance="paper"``) or diag(p_i(1-p_i)/n_i)
(``variance="binomial"``, the sampling variance of a proportion), and test H0: beta = 0 with
an F-test on (1, m - 2) degrees of freedom.  statsmodels does the fitting.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns, check_interval, check_options
from geoaudit.audit._groups import _example_list
from geoaudit.audit._results import GLSResult

VARIANCES = ("paper", "binomial")
MIN_GROUPS = 3

_MSG_FEW_GROUPS = (
    "Only {m} group(s) have at least min_group_size={k} images ({kept}); the GLS test needs at "
    "least 3 groups (df = m - 2 >= 1). Lower --min-group-size or add data."
)
_MSG_NONPOSITIVE = (
    "The covariate must be positive to take its logarithm, but it is <= 0 for groups {groups}. "
    "Pass log_covariate=False (--no-log-covariate) if the covariate is already on its scale."
)
_MSG_CONSTANT = (
    "The covariate takes the single value {value!r} in every group used ({m} groups); there is "
    "no slope to fit."
)
_MSG_CONSTANT_ACC = (
    "Accuracy is {value:.4g} in every group used ({m} groups); the residual variance is zero and "
    "the F-test is undefined."
)


def f_test_pvalue(f_stat, df_num, df_denom):
    """P(F > f_stat) for an F(df_num, df_denom) variable (the F-test's p-value)."""
    from scipy import stats

    return float(stats.f.sf(f_stat, df_num, df_denom))


def sigma_for(n, correct, variance):
    """The diagonal of the error covariance Sigma for each group.

    ``paper``: 1/sqrt(n_i).  ``binomial``: p(1-p)/n_i with p = (correct_i + 0.5)/(n_i + 1), a
    smoothed proportion so that a group with 0% or 100% accuracy keeps a positive variance
    instead of an infinite weight.
    """
    n = np.asarray(n, dtype=float)
    if variance == "paper":
        return 1.0 / np.sqrt(n)
    p = (np.asarray(correct, dtype=float) + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


def _as_arrays(table, *, caller):
    """(group names, accuracy, covariate, n, correct) as numpy arrays, checked.  Plain numpy:
    the null-rate simulation fits thousands of these."""
    if isinstance(table, pd.DataFrame):
        cols = {c: table[c].to_numpy() for c in table.columns}
    elif isinstance(table, dict):
        cols = {k: np.asarray(v) for k, v in table.items()}
    else:
        raise InputError(
            f"{caller} expects a group table (a DataFrame from group_accuracy, or a dict of arrays with "
            f"keys 'accuracy', 'covariate', 'n'), got {type(table).__name__}."
        )
    check_columns(list(cols), ["accuracy", "covariate", "n"], source=f"The group table given to {caller}")
    m = len(cols["accuracy"])
    lengths = {k: (v.shape[0] if v.ndim else -1) for k, v in cols.items()
               if k in ("accuracy", "covariate", "n", "correct", "group")}
    if any(v != m for v in lengths.values()) or any(cols[k].ndim != 1 for k in lengths):
        raise InputError(f"The arrays given to {caller} must be one-dimensional and of the same length; "
                         f"got lengths {lengths}.")
    groups = np.array([str(g) for g in cols["group"]]) if "group" in cols else np.array([str(i) for i in range(m)])
    if len(set(groups)) != m:
        seen, dup = set(), []
        for g in groups:
            (dup.append(g) if g in seen else seen.add(g))
        raise InputError(f"The group table given to {caller} repeats groups {_example_list(sorted(set(dup)))}.")
    out = {}
    for col in ("accuracy", "covariate", "n") + (("correct",) if "correct" in cols else ()):
        try:
            v = np.asarray(cols[col], dtype=float)
        except (TypeError, ValueError) as e:
            raise InputError(f"Column {col!r} of the group table given to {caller} must be numeric: {e}") from e
        bad = ~np.isfinite(v)
        if bad.any():
            raise InputError(f"Column {col!r} of the group table given to {caller} is missing (NaN) or "
                             f"infinite for groups {_example_list(groups[bad])}; remove those groups first.")
        out[col] = v
    n = out["n"]
    if np.any(n <= 0) or np.any(n != np.round(n)):
        raise InputError(f"Column 'n' of the group table given to {caller} must hold positive counts.")
    acc = out["accuracy"]
    bad = (acc < 0) | (acc > 1)
    if bad.any():
        raise InputError(f"Accuracy must be in [0, 1]; groups {_example_list(groups[bad])} are outside it.")
    correct = out.get("correct", np.round(acc * n))
    return groups, acc, out["covariate"], n, correct


def gls_test(table, *, min_group_size=50, variance="paper", log_covariate=True, alpha=0.05):
    """GLS regression of group accuracy on the (log) covariate, and the F-test of beta = 0.

    Parameters
    ----------
    table : pandas.DataFrame or dict of arrays
        One row per group with columns ``accuracy``, ``covariate`` and ``n`` (and optionally
        ``group`` names and ``correct`` counts), as returned by :func:`group_accuracy`.
    min_group_size : int, default 50
        Groups with fewer images are dropped (and listed in the result).
    variance : {"paper", "binomial"}, default "paper"
        The error covariance: diag(1/sqrt(n_i)) as in the paper, or the binomial sampling
        variance diag(p_i(1-p_i)/n_i), p_i smoothed as (correct_i + 0.5)/(n_i + 1).
    log_covariate : bool, default True
        Regress on the natural log of the covariate (GDP per capita); False when the covariate
        is already on the scale wanted.
    alpha : float, default 0.05
        Significance level for the confidence interval and the verdict.

    Returns
    -------
    GLSResult

    Raises
    ------
    InputError
        Missing columns or values, fewer than 3 groups left, a non-positive covariate under the
        log, a constant covariate, or identical accuracy in every group.

    Examples
    --------
    >>> import numpy as np
    >>> from geoaudit.audit import gls_test
    >>> g = np.array([500., 2000., 8000., 30000., 60000.])
    >>> res = gls_test({"accuracy": [0.5, 0.58, 0.66, 0.7, 0.75], "covariate": g, "n": [80] * 5})
    >>> round(res.beta, 3), res.df_num, res.df_denom
    (0.05, 1, 3)
    """
    import statsmodels.api as sm

    caller = "gls_test"
    min_group_size = check_interval("min_group_size", min_group_size, 1, None, caller=caller, integer=True)
    check_options("variance", variance, VARIANCES, caller=caller)
    alpha = check_interval("alpha", alpha, 0, 1, caller=caller, closed="neither")
    if not isinstance(log_covariate, (bool, np.bool_)):
        raise InputError(f"The 'log_covariate' parameter of {caller} must be a bool. Got {log_covariate!r} instead.")
    groups, acc, cov, n, correct = _as_arrays(table, caller=caller)
    if log_covariate:
        bad = cov <= 0
        if bad.any():
            raise InputError(_MSG_NONPOSITIVE.format(groups=_example_list(groups[bad])))
    small = n < min_group_size
    dropped = tuple(str(g) for g in groups[small])
    keep = ~small
    groups, acc, cov, n, correct = groups[keep], acc[keep], cov[keep], n[keep], correct[keep]
    m = len(groups)
    if m < MIN_GROUPS:
        raise InputError(_MSG_FEW_GROUPS.format(m=m, k=min_group_size, kept=_example_list(groups) or "none"))
    x = np.log(cov) if log_covariate else cov
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        raise InputError(_MSG_CONSTANT.format(value=float(cov[0]), m=m))
    y = acc
    if np.ptp(y) == 0:
        raise InputError(_MSG_CONSTANT_ACC.format(value=float(y[0]), m=m))
    sigma = sigma_for(n, correct, variance)
    X = sm.add_constant(x, has_constant="add")
    res = sm.GLS(y, X, sigma=sigma).fit()
    ci = res.conf_int(alpha=alpha)
    beta, se = float(res.params[1]), float(res.bse[1])
    f_stat = float(res.fvalue)
    df_num, df_denom = int(round(res.df_model)), int(round(res.df_resid))
    return GLSResult(
        beta=beta,
        intercept=float(res.params[0]),
        se=se,
        intercept_se=float(res.bse[0]),
        t_stat=float(res.tvalues[1]),
        f_stat=f_stat,
        df_num=df_num,
        df_denom=df_denom,
        p_value=float(res.f_pvalue),
        ci_low=float(ci[1, 0]),
        ci_high=float(ci[1, 1]),
        n_groups=m,
        n_images=int(n.sum()),
        r_squared=float(res.rsquared),
        groups=tuple(str(g) for g in groups),
        dropped_groups=dropped,
        variance=variance,
        log_covariate=bool(log_covariate),
        min_group_size=min_group_size,
        alpha=alpha,
        cov_params=tuple(tuple(float(v) for v in row) for row in np.asarray(res.cov_params())),
    )
