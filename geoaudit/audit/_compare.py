"""Comparing the betas of two model populations (section 4 of the paper).

H1 by default: the mean beta of population A is smaller than that of B (A is fairer).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options
from geoaudit.audit._results import REPORT_FORMAT, CompareResult

TESTS = ("welch", "student", "paired", "permutation")
ALTERNATIVES = ("less", "greater", "two-sided")
DEFAULT_RESAMPLES = 9999


def t_test_pvalue(t_stat, df, alternative="less"):
    """The p-value of a t statistic on ``df`` degrees of freedom for the given alternative."""
    from scipy import stats

    check_options("alternative", alternative, ALTERNATIVES, caller="t_test_pvalue")
    if alternative == "less":
        return float(stats.t.cdf(t_stat, df))
    if alternative == "greater":
        return float(stats.t.sf(t_stat, df))
    return float(2 * stats.t.sf(abs(t_stat), df))


def _betas(name, values, *, caller):
    """(names or None, float array) from a sequence or a mapping name -> beta."""
    if isinstance(values, dict):
        keys = [str(k) for k in values]
        arr = np.asarray(list(values.values()), dtype=float)
    else:
        keys = None
        try:
            arr = np.asarray(values, dtype=float).ravel()
        except (TypeError, ValueError) as e:
            raise InputError(f"{name} of {caller} must be numbers: {e}") from e
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} of {caller} holds NaN or infinite values.")
    return keys, arr


_SEED_RE = re.compile(r"(\d+)\D*$")


def _pair(keys_a, keys_b, seeds_a=None, seeds_b=None):
    """Index pairs (i, j) matching models of A and B by seed, or by name, or by the trailing
    number in their names ("plain_seed3" <-> "dro_seed3").  None when no rule pairs all of them."""
    def by(ka, kb):
        if ka is None or kb is None or len(set(ka)) != len(ka) or len(set(kb)) != len(kb):
            return None
        if set(ka) != set(kb):
            return None
        pos = {k: j for j, k in enumerate(kb)}
        return [(i, pos[k]) for i, k in enumerate(ka)]

    if seeds_a is not None and seeds_b is not None and None not in seeds_a and None not in seeds_b:
        pairs = by([str(s) for s in seeds_a], [str(s) for s in seeds_b])
        if pairs:
            return pairs, "seed"
    pairs = by(keys_a, keys_b)
    if pairs:
        return pairs, "name"
    if keys_a is not None and keys_b is not None:
        num = lambda ks: [m.group(1).lstrip("0") or "0" if (m := _SEED_RE.search(k)) else None for k in ks]  # noqa: E731
        na, nb = num(keys_a), num(keys_b)
        if None not in na and None not in nb:
            pairs = by(na, nb)
            if pairs:
                return pairs, "number in the model name"
    return None, None


def compare_populations(betas_a, betas_b, *, test="welch", alternative="less", alpha=0.05,
                        n_resamples=DEFAULT_RESAMPLES, random_state=0, label_a="A", label_b="B",
                        seeds_a=None, seeds_b=None) -> CompareResult:
    """Test whether the mean beta of population A differs from that of B.

    Parameters
    ----------
    betas_a, betas_b : sequence of float or dict of str -> float
        One beta per model (dicts name them, which the paired test needs unless the
        sequences are already in matching order).
    test : {"welch", "student", "paired", "permutation"}, default "welch"
        Welch's t-test (unequal variances), Student's t-test (pooled variance), the paired
        t-test (the two populations share seeds: models are matched by seed, by name, or by
        the number their names end with; sequences of equal length pair by position), or a
        two-sample permutation test of the difference of means (distribution-free).
    alternative : {"less", "greater", "two-sided"}, default "less"
        H1: mean beta of A < (>, !=) mean beta of B.
    alpha : float, default 0.05
    n_resamples : int, default 9999
        Random relabellings of the permutation test; when there are no more distinct
        relabellings than this (C(n_a + n_b, n_a) <= n_resamples), the test is exact.
    random_state : int or None, default 0
        Seed of the permutation test.
    label_a, label_b : str
        Names of the populations in the result.
    seeds_a, seeds_b : sequence, optional
        Training seeds of the models, used first to pair them.

    Returns
    -------
    CompareResult
        ``statistic`` is the t statistic of A - B (the mean difference for the permutation
        test); ``df`` the test's degrees of freedom (Welch-Satterthwaite for Welch; None for
        the permutation test); Cohen's d and Hedges' g of A - B (d_z for the paired test).
    """
    from scipy import stats

    caller = "compare_populations"
    check_options("test", test, TESTS, caller=caller)
    check_options("alternative", alternative, ALTERNATIVES, caller=caller)
    alpha = check_interval("alpha", alpha, 0, 1, caller=caller, closed="neither")
    keys_a, a = _betas("betas_a", betas_a, caller=caller)
    keys_b, b = _betas("betas_b", betas_b, caller=caller)
    need = 1 if test == "permutation" else 2
    for lab, arr in ((label_a, a), (label_b, b)):
        if len(arr) < need:
            raise InputError(f"Population {lab!r} has {len(arr)} model(s); the {test} test needs at least "
                             f"{need} per population (a population is several models trained alike).")

    pairs = ()
    n_res = exact = None
    if test == "paired":
        idx, rule = _pair(keys_a, keys_b, seeds_a, seeds_b)
        if idx is None:
            if keys_a is None and keys_b is None and len(a) == len(b):
                idx = [(i, i) for i in range(len(a))]
            else:
                raise InputError(
                    "The paired test needs the two populations to share seeds, but their models cannot be "
                    f"matched one to one (A: {_names(keys_a, a)}; B: {_names(keys_b, b)}). Models are matched "
                    "by seed, by identical names, or by the number their names end with; use --test welch "
                    "for populations that do not share seeds."
                )
        ia, ib = zip(*idx)
        a, b = a[list(ia)], b[list(ib)]
        if keys_a is not None and keys_b is not None:
            pairs = tuple((keys_a[i], keys_b[j]) for i, j in idx)
        if np.all(a - b == (a - b)[0]):
            raise InputError("Every paired difference of betas is identical; the paired t-test is undefined.")
        r = stats.ttest_rel(a, b, alternative=alternative)
        stat, df, p = float(r.statistic), float(r.df), float(r.pvalue)
    elif test in ("welch", "student"):
        if np.ptp(np.concatenate([a - a.mean(), b - b.mean()])) == 0:
            raise InputError("Both populations have zero spread of beta; the t-test is undefined.")
        r = stats.ttest_ind(a, b, equal_var=(test == "student"), alternative=alternative)
        stat, df, p = float(r.statistic), float(r.df), float(r.pvalue)
    else:
        n_res = check_interval("n_resamples", n_resamples, 1, None, caller=caller, integer=True)
        r = stats.permutation_test(
            (a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
            permutation_type="independent", vectorized=True, n_resamples=n_res,
            alternative=alternative, random_state=random_state,
        )
        stat, df, p = float(r.statistic), None, float(r.pvalue)
        n_distinct = math.comb(len(a) + len(b), len(a))
        exact = n_distinct <= n_res  # scipy then enumerates every relabelling
        if exact:
            n_res = n_distinct

    d, g = _effect_size(a, b, paired=(test == "paired"))
    sd = lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else None  # noqa: E731
    return CompareResult(
        test=test, alternative=alternative, statistic=stat, df=df, p_value=p,
        mean_a=float(a.mean()), mean_b=float(b.mean()), sd_a=sd(a), sd_b=sd(b),
        n_a=len(a), n_b=len(b), cohens_d=d, hedges_g=g, alpha=alpha,
        label_a=str(label_a), label_b=str(label_b),
        n_resamples=n_res, random_state=random_state if test == "permutation" and not exact else None,
        exact=exact,
        pairs=pairs, betas_a=tuple(float(x) for x in a), betas_b=tuple(float(x) for x in b),
    )


def _names(keys, arr):
    if keys is None:
        return f"{len(arr)} unnamed betas"
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def _effect_size(a, b, *, paired):
    """Cohen's d of A - B (pooled SD; d_z = mean/SD of the differences when paired) and Hedges'
    small-sample correction g = d * (1 - 3 / (4 df - 1))."""
    if paired:
        diff = a - b
        sd = np.std(diff, ddof=1) if len(diff) > 1 else 0.0
        df = len(diff) - 1
        d = diff.mean() / sd if sd > 0 else None
    else:
        na, nb = len(a), len(b)
        df = na + nb - 2
        if df < 1:
            return None, None
        pooled = np.sqrt(((na - 1) * np.var(a, ddof=1 if na > 1 else 0) +
                          (nb - 1) * np.var(b, ddof=1 if nb > 1 else 0)) / df)
        d = (a.mean() - b.mean()) / pooled if pooled > 0 else None
    if d is None or df < 1:
        return (None if d is None else float(d)), None
    return float(d), float(d * (1 - 3 / (4 * df - 1)))


def load_report(path) -> dict:
    """Read and check an audit ``report.json`` (as written by :func:`write_report`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        raise InputError(f"Report file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not a geoaudit audit report (not valid JSON: {e}).") from e
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        kind = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"{str(path)!r} is not a geoaudit audit report (expected \"format\": \"{REPORT_FORMAT}\", "
            f"got {kind!r}); pass the report.json written by 'geoaudit audit'."
        )
    models = data.get("models")
    if not isinstance(models, list) or not models or not all(
            isinstance(m, dict) and "model" in m and isinstance(m.get("beta"), (int, float)) for m in models):
        raise InputError(f"Audit report {str(path)!r} has no usable 'models' list with a beta per model.")
    return data


def report_betas(report: dict) -> dict:
    """Model name -> beta of a loaded audit report."""
    return {str(m["model"]): float(m["beta"]) for m in report["models"]}


def report_seeds(report: dict):
    """The models' seeds when the report records them for every model, else None."""
    seeds = [m.get("seed") for m in report["models"]]
    return None if any(s is None for s in seeds) else seeds
