"""Vectorised fits of group accuracy on the covariate, for one audit or thousands of simulated ones.

Every method regresses the group accuracies y_i on x_i (ln covariate) with an intercept and
tests H0: beta = 0 with a t-test on m - 2 degrees of freedom (F = t^2 on (1, m - 2)):

``random-effects`` (the default)
    Random-effects meta-regression: y_i = a + b x_i + u_i + e_i, u_i ~ N(0, tau^2) (true
    between-group scatter that the covariate does not explain), e_i ~ N(0, v_i) with the
    binomial sampling variance v_i = f_i(1-f_i)/n_i at the fitted accuracy f_i of the
    image-weighted line (:func:`sampling_variance`).  tau^2 by REML (Fisher scoring, as
    ``metafor::rma(method="REML")``) or DerSimonian-Laird; weights 1/(v_i + tau^2); the
    Knapp-Hartung test (``test="knha"``), whose variance is the weighted residual mean square
    times (X'WX)^-1.
``hc3``
    Ordinary least squares with the HC3 heteroskedasticity-robust covariance (as
    ``sandwich::vcovHC(type="HC3")``), t on m - 2 df.
``paper``
    Weighted least squares with Sigma = diag(1/sqrt(n_i)) (weights sqrt(n_i)), the residual
    scale estimated: the method the paper's text states.
``binomial``
    Weighted least squares with Sigma = diag(v_i) (weights 1/v_i), the scale estimated.

Arrays are shaped (B, m) for B datasets of m groups; :func:`fit_batch` returns arrays of
shape (B,).  ``gls_test`` fits one audit through statsmodels and is tested equal to this code.
"""
from __future__ import annotations

import numpy as np

METHODS = ("random-effects", "hc3", "paper", "binomial")
TAU2_METHODS = ("REML", "DL")
DEFAULT_METHOD = "random-effects"
DEFAULT_TAU2 = "REML"


def binomial_variance(n, correct):
    """The sampling variance p(1-p)/n of each group's accuracy, p = (correct + 0.5)/(n + 1).

    The smoothing keeps a group with 0% or 100% accuracy at a positive variance (instead of an
    infinite weight); for n >= 30 and accuracy within [0.05, 0.95] it changes v by under 4%.
    """
    n = np.asarray(n, dtype=float)
    p = (np.asarray(correct, dtype=float) + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


def sampling_variance(y, n, x):
    """Binomial sampling variance at the fitted accuracy: v_i = f_i(1-f_i)/n_i.

    f_i is the line fitted by least squares weighted by n_i (the pooled-proportion fit),
    kept within [0.5/(n_i+1), 1 - 0.5/(n_i+1)].  Taking v_i at f_i rather than at the group's
    own accuracy p_i keeps the weights independent of the accuracies they weight: with
    p_i(1-p_i)/n_i, groups whose accuracy is high by chance get more weight, which biases the
    slope when image counts vary with the covariate (size 7.5-9% at a nominal 5% in
    benchmarks/calibration.py's "rising" design, 5.2-5.5% with f_i).
    """
    y = np.atleast_2d(np.asarray(y, dtype=float))
    n = np.atleast_2d(np.asarray(n, dtype=float))
    X = design(x)
    b, _, _ = _wls(y, n, X)
    lo = 0.5 / (n + 1.0)
    f = np.clip((X @ b[..., None])[..., 0], lo, 1.0 - lo)
    return f * (1.0 - f) / n


def design(x):
    """The design matrix [1, x] of shape (B, m, 2) for x of shape (B, m) or (m,)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    return np.stack([np.ones_like(x), x], axis=-1)


def _wls(y, w, X):
    """Weighted least squares per row: params (B, p), (X'WX)^-1 (B, p, p), residuals (B, m)."""
    XtW = np.swapaxes(X, 1, 2) * w[:, None, :]
    Ainv = np.linalg.inv(XtW @ X)
    b = (Ainv @ (XtW @ y[..., None]))[..., 0]
    r = y - (X @ b[..., None])[..., 0]
    return b, Ainv, r


def _trace_terms(w, X, Ainv):
    """tr(P) and tr(P P) for P = W - W X (X'WX)^-1 X'W, without forming the m x m matrix P."""
    Xt = np.swapaxes(X, 1, 2)
    B2 = (Xt * (w ** 2)[:, None, :]) @ X
    B3 = (Xt * (w ** 3)[:, None, :]) @ X
    C = Ainv @ B2
    tr_p = w.sum(-1) - np.trace(C, axis1=1, axis2=2)
    tr_pp = (w ** 2).sum(-1) - 2 * np.trace(Ainv @ B3, axis1=1, axis2=2) + np.einsum("bij,bji->b", C, C)
    return tr_p, tr_pp


def tau2_dl(y, v, X):
    """DerSimonian-Laird tau^2 of a meta-regression: max(0, (Q_E - (m - p)) / tr(P)), P at tau^2 = 0."""
    w = 1.0 / v
    _, Ainv, r = _wls(y, w, X)
    q = (w * r * r).sum(-1)
    tr_p, _ = _trace_terms(w, X, Ainv)
    return np.maximum(0.0, (q - (y.shape[1] - X.shape[2])) / tr_p)


def tau2_reml(y, v, X, *, tol=1e-12, maxiter=500):
    """REML tau^2 of a meta-regression by Fisher scoring with step halving at the zero bound.

    The same iteration as ``metafor::rma(method="REML")``: start from the Hedges (method of
    moments, OLS-based) estimate, then tau^2 += (y'PPy - tr(P)) / tr(PP) until the change is
    below ``tol``.
    """
    m, p = y.shape[1], X.shape[2]
    # Hedges' start: (RSS_OLS - sum(v) + tr((X'X)^-1 X' V X)) / (m - p), truncated at 0
    ones = np.ones_like(v)
    _, A0, r0 = _wls(y, ones, X)
    XtVX = (np.swapaxes(X, 1, 2) * v[:, None, :]) @ X
    tau2 = np.maximum(0.0, ((r0 * r0).sum(-1) - v.sum(-1) + np.trace(A0 @ XtVX, axis1=1, axis2=2)) / (m - p))
    active = np.ones(len(y), dtype=bool)
    for _ in range(maxiter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        t = tau2[idx]
        w = 1.0 / (v[idx] + t[:, None])
        _, Ainv, r = _wls(y[idx], w, X[idx])
        py = w * r  # P y
        tr_p, tr_pp = _trace_terms(w, X[idx], Ainv)
        adj = ((py * py).sum(-1) - tr_p) / tr_pp
        while True:  # step halving keeps tau^2 >= 0, as metafor does
            neg = t + adj < 0
            if not neg.any():
                break
            adj = np.where(neg, adj / 2, adj)
        new = t + adj
        tau2[idx] = new
        active[idx] = np.abs(adj) >= tol
    return tau2


def fit_batch(method, y, n, correct, x, *, tau2_method=DEFAULT_TAU2):
    """Fit ``method`` to B datasets at once.

    Parameters
    ----------
    method : {"random-effects", "hc3", "paper", "binomial"}
    y, n, correct, x : numpy.ndarray of shape (B, m) or (m,)
        Accuracy, images, correct predictions and regressor (ln covariate) of each group.
    tau2_method : {"REML", "DL"}, default "REML"
        The between-group variance estimator of ``random-effects``.

    Returns
    -------
    dict of str -> numpy.ndarray
        ``beta``, ``intercept``, ``bse``, ``intercept_bse``, ``tvalue``, ``pvalue``, ``df``
        (m - 2), ``tau2`` (0 for the other methods), ``cov`` (B, 2, 2) and ``weights`` (B, m).
    """
    from scipy import stats

    y = np.atleast_2d(np.asarray(y, dtype=float))
    n = np.atleast_2d(np.asarray(n, dtype=float))
    correct = np.atleast_2d(np.asarray(correct, dtype=float))
    X = design(x)
    m = y.shape[1]
    df = m - 2
    tau2 = np.zeros(len(y))
    if method == "hc3":
        w = np.ones_like(y)
        b, Ainv, r = _wls(y, w, X)
        h = np.einsum("bmi,bij,bmj->bm", X, Ainv, X)
        u = r / (1.0 - h)
        meat = (np.swapaxes(X, 1, 2) * (u * u)[:, None, :]) @ X
        cov = Ainv @ meat @ Ainv
    else:
        if method == "paper":
            w = np.sqrt(n)
        elif method == "random-effects":
            v = sampling_variance(y, n, x)
            tau2 = (tau2_reml if tau2_method == "REML" else tau2_dl)(y, v, X)
            w = 1.0 / (v + tau2[:, None])
        elif method == "binomial":
            w = 1.0 / binomial_variance(n, correct)
        else:
            raise ValueError(f"unknown method {method!r}")
        b, Ainv, r = _wls(y, w, X)
        s2 = (w * r * r).sum(-1) / df  # estimated scale; for random-effects, the Knapp-Hartung factor
        cov = s2[:, None, None] * Ainv
    bse = np.sqrt(cov[:, 1, 1])
    t = b[:, 1] / bse
    return {
        "beta": b[:, 1], "intercept": b[:, 0], "bse": bse, "intercept_bse": np.sqrt(cov[:, 0, 0]),
        "tvalue": t, "pvalue": 2 * stats.t.sf(np.abs(t), df), "df": np.full(len(y), df),
        "tau2": tau2, "cov": cov, "weights": w,
    }


def heterogeneity(y, n, x):
    """Residual heterogeneity of the fixed-effect fit (weights 1/v_i, v_i from :func:`sampling_variance`).

    Returns Q_E (the weighted residual sum of squares), its df m - 2 and chi-square p-value
    (H0: no between-group variance beyond sampling), and the typical sampling variance
    s^2 = (m - 2) / tr(P) that :func:`i_squared` compares tau^2 with, as metafor does.
    """
    from scipy import stats

    y = np.atleast_2d(np.asarray(y, dtype=float))
    v = sampling_variance(y, n, x)
    X = design(x)
    w = 1.0 / v
    _, Ainv, r = _wls(y, w, X)
    q = (w * r * r).sum(-1)
    df = y.shape[1] - X.shape[2]
    tr_p, _ = _trace_terms(w, X, Ainv)
    typical_v = df / tr_p
    return {"q": q, "q_df": df, "q_pvalue": stats.chi2.sf(q, df), "typical_v": typical_v}


def i_squared(tau2, typical_v):
    """I^2 in percent: the share of residual variance that is between-group, tau^2 / (tau^2 + s^2)."""
    return 100.0 * tau2 / (tau2 + typical_v)
