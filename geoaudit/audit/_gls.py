"""The test of section 4 of the paper: does group accuracy depend on the covariate?

For m groups with n_i images, accuracy p_i and covariate g_i, fit

    p_i = intercept + beta * ln(g_i) + e_i

and test H0: beta = 0 with an F-test on (1, m - 2) degrees of freedom (F = t^2).  The methods
(``variance=``) differ in what they assume about e_i; see :mod:`geoaudit.audit._meta`:

- ``"random-effects"`` (default): e_i = u_i + binomial noise, Var = tau^2 + p_i(1-p_i)/n_i,
  tau^2 by REML, Knapp-Hartung test.  Calibrated when countries scatter around the line for
  reasons the covariate does not explain, which every real audit shows.
- ``"hc3"``: ordinary least squares with heteroskedasticity-robust (HC3) standard errors.
- ``"paper"``: Sigma = diag(1/sqrt(n_i)), as the paper's text states.
- ``"binomial"``: Sigma = diag(p_i(1-p_i)/n_i), sampling variance only.

statsmodels does the fitting (WLS/GLS/OLS); tau^2 is estimated by :mod:`geoaudit.audit._meta`,
which reproduces ``metafor::rma`` (tests/r_reference).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns, check_interval, check_options
from geoaudit.audit._groups import _example_list
from geoaudit.audit._meta import (
    DEFAULT_METHOD,
    DEFAULT_TAU2,
    METHODS,
    TAU2_METHODS,
    binomial_variance,
    design,
    fit_batch,
    heterogeneity,
    i_squared,
    sampling_variance,
    tau2_dl,
    tau2_reml,
)
from geoaudit.audit._results import GLSResult, Influence

VARIANCES = METHODS
SENSITIVITY_CUTS = (20, 30, 50, 100)
MIN_GROUPS = 3

_MSG_FEW_GROUPS = (
    "Only {m} group(s) have at least min_group_size={k} images ({kept}); the GLS test needs at "
    "least 3 groups (df = m - 2 >= 1). Lower min_group_size or add data."
)
_MSG_NONPOSITIVE = (
    "The covariate must be positive to take its logarithm, but it is <= 0 for groups {groups}. "
    "Pass log_covariate=False if the covariate is already on its scale."
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


def sigma_for(n, correct, variance, tau2=0.0):
    """The diagonal of the error covariance Sigma for each group (up to the estimated scale).

    ``paper``: 1/sqrt(n_i).  ``binomial``: v_i = p(1-p)/n_i with p = (correct_i + 0.5)/(n_i + 1),
    a smoothed proportion so that a group with 0% or 100% accuracy keeps a positive variance
    instead of an infinite weight.  ``random-effects``: v_i + tau2.  ``hc3``: ones (OLS).

    Parameters
    ----------
    n, correct : array-like
        Images and correct predictions per group.
    variance : {"random-effects", "hc3", "paper", "binomial"}
    tau2 : float, default 0
        The between-group variance (``random-effects`` only).

    Returns
    -------
    numpy.ndarray
    """
    n = np.asarray(n, dtype=float)
    if variance == "paper":
        return 1.0 / np.sqrt(n)
    if variance == "hc3":
        return np.ones_like(n)
    v = binomial_variance(n, correct)
    return v + tau2 if variance == "random-effects" else v


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
    bad = (n <= 0) | (n != np.round(n))
    if bad.any():
        raise InputError(f"Column 'n' of the group table given to {caller} must hold positive whole counts; "
                         f"it does not for groups {_example_list(groups[bad])}.")
    acc = out["accuracy"]
    bad = (acc < 0) | (acc > 1)
    if bad.any():
        raise InputError(f"Accuracy must be in [0, 1]; groups {_example_list(groups[bad])} are outside it.")
    if "correct" in out:
        correct = out["correct"]
        bad = (correct < 0) | (correct > n) | (correct != np.round(correct))
        if bad.any():
            raise InputError(f"Column 'correct' of the group table given to {caller} must hold counts between 0 "
                             f"and n; it does not for groups {_example_list(groups[bad])}.")
        bad = np.abs(correct / n - acc) > 1e-9
        if bad.any():
            raise InputError(f"Columns 'correct' and 'accuracy' of the group table given to {caller} disagree "
                             f"(accuracy != correct / n) for groups {_example_list(groups[bad])}; pass one of them "
                             "or make them agree.")
    else:
        correct = np.round(acc * n)
    return groups, acc, out["covariate"], n, correct



def _degenerate(x, y):
    """Why a regression of y on x cannot be fitted (None when it can)."""
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return "constant covariate"
    if np.ptp(y) <= 1e-12:
        return "constant accuracy"
    return None


def _fit_one(method, y, n, correct, x, tau2_method):
    """The numpy fit of one dataset as a dict of floats (NaN where it cannot be fitted)."""
    if len(y) < MIN_GROUPS or _degenerate(x, y):
        return None
    r = fit_batch(method, y, n, correct, x, tau2_method=tau2_method)
    return {k: float(v[0]) for k, v in r.items() if k not in ("cov", "weights")}


def _influence(method, groups, y, n, correct, x, all_table, *, alpha, tau2_method, cuts, min_group_size,
               beta, significant):
    """Leave-one-group-out refits and refits at several min_group_size cuts."""
    import pandas as pd

    m = len(y)
    loo_rows = []
    if m - 1 >= MIN_GROUPS:
        keep = ~np.eye(m, dtype=bool)
        Y, N, C, X = (a[None, :].repeat(m, 0)[keep].reshape(m, m - 1) for a in (y, n, correct, x))
        ok = np.array([_degenerate(X[i], Y[i]) is None for i in range(m)])
        res = {}
        if ok.any():
            res = fit_batch(method, Y[ok], N[ok], C[ok], X[ok], tau2_method=tau2_method)
        j = 0
        for i in range(m):
            if ok[i]:
                b, pv = float(res["beta"][j]), float(res["pvalue"][j])
                j += 1
            else:
                b, pv = float("nan"), float("nan")
            loo_rows.append({"group": str(groups[i]), "n": int(n[i]), "beta": b, "pvalue": pv,
                             "significant": bool(pv < alpha) if np.isfinite(pv) else None})
    loo = pd.DataFrame(loo_rows, columns=["group", "n", "beta", "pvalue", "significant"])
    cut_rows = []
    _, ya, na, ca, xa = all_table
    for k in sorted(set(cuts) | {min_group_size}):
        sel = na >= k
        f = _fit_one(method, ya[sel], na[sel], ca[sel], xa[sel], tau2_method)
        cut_rows.append({"min_group_size": int(k), "n_groups": int(sel.sum()),
                         "beta": f["beta"] if f else float("nan"), "pvalue": f["pvalue"] if f else float("nan"),
                         "significant": bool(f["pvalue"] < alpha) if f else None})
    cut_frame = pd.DataFrame(cut_rows, columns=["min_group_size", "n_groups", "beta", "pvalue", "significant"])
    return Influence.build(loo, cut_frame, beta=beta, significant=significant, min_group_size=min_group_size,
                           alpha=alpha)


def gls_test(table, *, min_group_size=50, variance=DEFAULT_METHOD, log_covariate=True, alpha=0.05,
             tau2_method=DEFAULT_TAU2, influence=True, sensitivity_cuts=SENSITIVITY_CUTS):
    """Regression of group accuracy on the (log) covariate, and the F-test of beta = 0.

    Parameters
    ----------
    table : pandas.DataFrame or dict of arrays
        One row per group with columns ``accuracy``, ``covariate`` and ``n`` (and optionally
        ``group`` names and ``correct`` counts, which must agree with ``accuracy``), as returned
        by :func:`group_accuracy`.
    min_group_size : int, default 50
        Groups with fewer images are dropped (and listed in the result).
    variance : {"random-effects", "hc3", "paper", "binomial"}, default "random-effects"
        The method.  ``random-effects``: meta-regression with the binomial sampling variance
        v_i = f_i(1-f_i)/n_i at the fitted accuracy f_i of the image-weighted line, plus a between-group variance tau^2 (estimated by
        ``tau2_method``), weights 1/(v_i + tau^2) and the Knapp-Hartung test (as
        ``metafor::rma(..., test="knha")``).  ``hc3``: OLS with HC3 robust standard errors.
        ``paper``: GLS with Sigma = diag(1/sqrt(n_i)), the paper's choice.  ``binomial``: GLS
        with Sigma = diag(p_i(1-p_i)/n_i), p_i smoothed as (correct_i + 0.5)/(n_i + 1).
        Only ``random-effects`` and ``hc3`` keep their nominal size when countries scatter
        around the line (see docs/audit.md, "Calibration").
    log_covariate : bool, default True
        Regress on the natural log of the covariate (GDP per capita); False when the covariate
        is already on the scale wanted.
    alpha : float, default 0.05
        Significance level for the confidence interval and the verdict.
    tau2_method : {"REML", "DL"}, default "REML"
        Estimator of tau^2: restricted maximum likelihood (metafor's default, less biased when
        tau^2 is large) or DerSimonian-Laird (closed form).  It is also reported, as a
        diagnostic, for the other methods.
    influence : bool, default True
        Also refit without each group in turn and at each of ``sensitivity_cuts``
        (``result.influence``).
    sensitivity_cuts : sequence of int, default (20, 30, 50, 100)
        The min_group_size values of the sensitivity analysis (``min_group_size`` is added).

    Returns
    -------
    GLSResult

    Raises
    ------
    InputError
        Missing columns or values, negative counts, ``correct`` disagreeing with ``accuracy``,
        fewer than 3 groups left, a non-positive covariate under the log, a constant
        covariate, or identical accuracy in every group.

    Examples
    --------
    >>> import numpy as np
    >>> from geoaudit.audit import gls_test
    >>> g = np.array([500., 2000., 8000., 30000., 60000.])
    >>> res = gls_test({"accuracy": [0.5, 0.58, 0.66, 0.7, 0.75], "covariate": g, "n": [80] * 5},
    ...                variance="paper")
    >>> round(res.beta, 3), res.df_num, res.df_denom
    (0.05, 1, 3)
    """
    import statsmodels.api as sm

    caller = "gls_test"
    min_group_size = check_interval("min_group_size", min_group_size, 1, None, caller=caller, integer=True)
    check_options("variance", variance, VARIANCES, caller=caller)
    check_options("tau2_method", tau2_method, TAU2_METHODS, caller=caller)
    alpha = check_interval("alpha", alpha, 0, 1, caller=caller, closed="neither")
    if not isinstance(log_covariate, (bool, np.bool_)):
        raise InputError(f"The 'log_covariate' parameter of {caller} must be a bool. Got {log_covariate!r} instead.")
    groups, acc, cov, n, correct = _as_arrays(table, caller=caller)
    if log_covariate:
        bad = cov <= 0
        if bad.any():
            raise InputError(_MSG_NONPOSITIVE.format(groups=_example_list(groups[bad])))
    all_x = np.log(cov) if log_covariate else cov
    all_table = (groups, acc, n, correct, all_x)
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

    X = sm.add_constant(x, has_constant="add")
    v = sampling_variance(y, n, x)[0]
    est = tau2_reml if tau2_method == "REML" else tau2_dl
    tau2 = float(est(y[None, :], v[None, :], design(x))[0])
    if variance == "hc3":
        res = sm.OLS(y, X).fit(cov_type="HC3", use_t=True)
    elif variance == "random-effects":
        # Knapp-Hartung: WLS with weights 1/(v + tau^2) and its estimated scale is exactly the
        # test metafor calls "knha".
        res = sm.WLS(y, X, weights=1.0 / (v + tau2)).fit()
    else:
        res = sm.GLS(y, X, sigma=sigma_for(n, correct, variance)).fit()
    if np.max(np.abs(res.resid)) <= 1e-12:
        raise InputError(f"Accuracy lies exactly on a line in the {m} groups used; the residual variance is zero "
                         "and the F-test is undefined.")
    het = heterogeneity(y, n, x)
    ci = res.conf_int(alpha=alpha)
    beta, bse = float(res.params[1]), float(res.bse[1])
    pvalue = float(res.f_pvalue) if variance != "hc3" else float(res.pvalues[1])
    fvalue = float(res.tvalues[1]) ** 2
    df_num, df_denom = 1, m - 2
    infl = None
    if influence:
        a_groups, a_y, a_n, a_c, a_x = all_table
        infl = _influence(variance, groups, y, n, correct, x, (a_groups, a_y, a_n, a_c, a_x), alpha=alpha,
                          tau2_method=tau2_method, cuts=tuple(sensitivity_cuts), min_group_size=min_group_size,
                          beta=beta, significant=pvalue < alpha)
    return GLSResult(
        beta=beta,
        intercept=float(res.params[0]),
        bse=bse,
        intercept_bse=float(res.bse[0]),
        tvalue=float(res.tvalues[1]),
        fvalue=fvalue,
        df_num=df_num,
        df_denom=df_denom,
        pvalue=pvalue,
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
        tau2=tau2,
        tau2_method=tau2_method,
        q=float(het["q"][0]),
        q_df=int(het["q_df"]),
        q_pvalue=float(het["q_pvalue"][0]),
        i2=float(i_squared(tau2, het["typical_v"][0])),
        influence=infl,
    )
