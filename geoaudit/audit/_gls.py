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


def _as_table(table, *, caller):
    if isinstance(table, pd.DataFrame):
        t = table.copy()
    elif isinstance(table, dict):
        try:
            t = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
        except ValueError as e:
            raise InputError(f"The arrays given to {caller} must all have the same length: {e}") from e
    else:
        raise InputError(
            f"{caller} expects a group table (a DataFrame from group_accuracy, or a dict of arrays with "
            f"keys 'accuracy', 'covariate', 'n'), got {type(table).__name__}."
        )
    check_columns(list(t.columns), ["accuracy", "covariate", "n"], source=f"The group table given to {caller}")
    if "group" not in t.columns:
        t["group"] = [str(i) for i in range(len(t))]
    t["group"] = t["group"].astype(str)
    if t["group"].duplicated().any():
        raise InputError(f"The group table given to {caller} repeats groups "
                         f"{_example_list(t['group'][t['group'].duplicated()].unique())}.")
    for col in ("accuracy", "covariate", "n"):
        try:
            t[col] = pd.to_numeric(t[col], errors="raise").astype(float)
        except (TypeError, ValueError) as e:
            raise InputError(f"Column {col!r} of the group table given to {caller} must be numeric: {e}") from e
        bad = t["group"][~np.isfinite(t[col].to_numpy())]
        if len(bad):
            raise InputError(f"Column {col!r} of the group table given to {caller} is missing (NaN) or "
                             f"infinite for groups {_example_list(bad)}; remove those groups first.")
    if "correct" not in t.columns:
        t["correct"] = np.round(t["accuracy"] * t["n"])
    if ((t["n"] <= 0) | (t["n"] != np.round(t["n"]))).any():
        raise InputError(f"Column 'n' of the group table given to {caller} must hold positive counts.")
    if ((t["accuracy"] < 0) | (t["accuracy"] > 1)).any():
        bad = t["group"][(t["accuracy"] < 0) | (t["accuracy"] > 1)]
        raise InputError(f"Accuracy must be in [0, 1]; groups {_example_list(bad)} are outside it.")
    return t


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
    t = _as_table(table, caller=caller)
    if log_covariate:
        bad = t["group"][t["covariate"] <= 0]
        if len(bad):
            raise InputError(_MSG_NONPOSITIVE.format(groups=_example_list(bad)))
    small = t["n"] < min_group_size
    dropped = tuple(t["group"][small])
    t = t[~small].reset_index(drop=True)
    m = len(t)
    if m < MIN_GROUPS:
        raise InputError(_MSG_FEW_GROUPS.format(m=m, k=min_group_size, kept=_example_list(t["group"]) or "none"))
    x = np.log(t["covariate"].to_numpy()) if log_covariate else t["covariate"].to_numpy()
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        raise InputError(_MSG_CONSTANT.format(value=float(t["covariate"].iloc[0]), m=m))
    y = t["accuracy"].to_numpy()
    if np.ptp(y) == 0:
        raise InputError(_MSG_CONSTANT_ACC.format(value=float(y[0]), m=m))
    sigma = sigma_for(t["n"].to_numpy(), t["correct"].to_numpy(), variance)
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
        n_images=int(t["n"].sum()),
        r_squared=float(res.rsquared),
        groups=tuple(t["group"]),
        dropped_groups=dropped,
        variance=variance,
        log_covariate=bool(log_covariate),
        min_group_size=min_group_size,
        alpha=alpha,
        cov_params=tuple(tuple(float(v) for v in row) for row in np.asarray(res.cov_params())),
    )
