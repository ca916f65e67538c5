"""Comparing the betas of two model populations (section 4 of the paper).

H1 by default: the mean beta of population A is smaller than that of B (A is fairer).  The
default test pairs the models when the two populations share seeds (the paired t-test on the
per-seed differences) and uses Welch's t-test otherwise.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options
from geoaudit.audit._compare_results import CompareResult, MultiCompareResult
from geoaudit.audit._results import REPORT_FORMAT

TESTS = ("welch", "student", "paired", "permutation", "auto")
ALTERNATIVES = ("less", "greater", "two-sided")
DEFAULT_RESAMPLES = 9999
# betas whose spread is below this fraction of their size are equal up to floating-point rounding
_REL_TOL = 1e-9


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
            arr = np.asarray(values, dtype=float)
        except (TypeError, ValueError) as e:
            raise InputError(f"{name} of {caller} must be numbers: {e}") from e
        if arr.ndim > 1 and sum(d > 1 for d in arr.shape) > 1:  # one beta per model, never a table
            raise InputError(f"{name} of {caller} must be one beta per model (1-D); got shape {arr.shape}.")
        arr = arr.ravel()
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


def _degenerate(values, scale_of):
    """Whether ``values`` are all equal up to rounding, relative to the size of the betas."""
    scale = max(float(np.max(np.abs(scale_of))), np.finfo(float).tiny)
    return float(np.ptp(values)) <= _REL_TOL * scale


def compare_populations(betas_a, betas_b, *, test="auto", alternative="less", alpha=0.05,
                        n_resamples=DEFAULT_RESAMPLES, random_state=0, label_a="A", label_b="B",
                        seeds_a=None, seeds_b=None) -> CompareResult:
    """Test whether the mean beta of population A differs from that of B.

    Parameters
    ----------
    betas_a, betas_b : sequence of float or dict of str -> float
        One beta per model (dicts name them, which pairing needs unless ``seeds_*`` are given).
    test : {"auto", "welch", "student", "paired", "permutation"}, default "auto"
        "auto" runs the paired t-test when the models of A and B can be matched one to one
        (the two populations share seeds: matched by seed, by name, or by the number their
        names end with) and Welch's t-test otherwise; the test run is named in the result.
        "welch" (unequal variances), "student" (pooled variance), "paired" (refused when the
        models cannot be matched; sequences of equal length pair by position), or
        "permutation": a two-sample permutation test of the difference of means.  Its
        assumption is exchangeability: under H0 the betas of A and B come from one
        distribution.  When the populations differ in spread it is not valid (measured in
        ``benchmarks/calibration_populations.py``); use Welch there.
    alternative : {"less", "greater", "two-sided"}, default "less"
        H1: mean beta of A < (>, !=) mean beta of B.
    alpha : float, default 0.05
        Level of the verdict and of the confidence interval of the difference.
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
        the permutation test); ``ci_low``/``ci_high`` the ``1 - alpha`` confidence interval of
        the difference matching the alternative (None for the permutation test); Cohen's d
        and Hedges' g of A - B (d_z for the paired test).

    Raises
    ------
    InputError
        Fewer than 2 models in a population, NaN betas, unmatched models for "paired", or
        betas constant within each population up to rounding (the t statistic is then
        undefined; equal values relative to the betas' size within ``1e-9``).

    Examples
    --------
    >>> r = compare_populations({"s0": 0.01, "s1": 0.02, "s2": 0.015}, {"s0": 0.03, "s1": 0.05, "s2": 0.04})
    >>> r.test, r.df
    ('paired', 2.0)
    """
    from scipy import stats

    caller = "compare_populations"
    check_options("test", test, TESTS, caller=caller)
    check_options("alternative", alternative, ALTERNATIVES, caller=caller)
    alpha = check_interval("alpha", alpha, 0, 1, caller=caller, closed="neither")
    keys_a, a = _betas("betas_a", betas_a, caller=caller)
    keys_b, b = _betas("betas_b", betas_b, caller=caller)
    for lab, arr in ((label_a, a), (label_b, b)):
        if len(arr) < 2:
            shown = "the t-test" if test != "permutation" else "the permutation test"
            raise InputError(f"Population {lab!r} has {len(arr)} model(s); {shown} needs at least 2 per "
                             "population (a population is several models trained alike).")

    requested = test
    pairs = ()
    n_res = exact = None
    rule = None
    idx = None
    if test in ("auto", "paired"):
        idx, rule = _pair(keys_a, keys_b, seeds_a, seeds_b)
        if idx is None and test == "paired":
            if keys_a is None and keys_b is None and len(a) == len(b):
                idx, rule = [(i, i) for i in range(len(a))], "position"
            else:
                raise InputError(
                    "The paired test needs the two populations to share seeds, but their models cannot be "
                    f"matched one to one (A: {_names(keys_a, a)}; B: {_names(keys_b, b)}). Models are matched "
                    "by seed, by identical names, or by the number their names end with; use the Welch test "
                    "for populations that do not share seeds."
                )
        test = "paired" if idx is not None else "welch"
    ci = (None, None)
    if test == "paired":
        ia, ib = zip(*idx)
        a, b = a[list(ia)], b[list(ib)]
        if keys_a is not None and keys_b is not None:
            pairs = tuple((keys_a[i], keys_b[j]) for i, j in idx)
        if _degenerate(a - b, np.concatenate([a, b])):
            raise InputError("Every paired difference of betas is the same (up to rounding); the paired t-test "
                             "is undefined.")
        r = stats.ttest_rel(a, b, alternative=alternative)
        stat, df, p = float(r.statistic), float(r.df), float(r.pvalue)
        ci = r.confidence_interval(1 - alpha)
    elif test in ("welch", "student"):
        if _degenerate(np.concatenate([a - a.mean(), b - b.mean()]), np.concatenate([a, b])):
            raise InputError("The betas are constant within each population (up to rounding); the t-test is "
                             "undefined.")
        r = stats.ttest_ind(a, b, equal_var=(test == "student"), alternative=alternative)
        stat, df, p = float(r.statistic), float(r.df), float(r.pvalue)
        ci = r.confidence_interval(1 - alpha)
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
        test=test, alternative=alternative, statistic=stat, df=df, pvalue=p,
        mean_a=float(a.mean()), mean_b=float(b.mean()), sd_a=sd(a), sd_b=sd(b),
        n_a=len(a), n_b=len(b), cohens_d=d, hedges_g=g, alpha=alpha,
        label_a=str(label_a), label_b=str(label_b),
        n_resamples=n_res, random_state=random_state if test == "permutation" and not exact else None,
        exact=exact,
        pairs=pairs, betas_a=tuple(float(x) for x in a), betas_b=tuple(float(x) for x in b),
        difference=float(np.mean(a - b) if test == "paired" else a.mean() - b.mean()),
        ci_low=None if ci[0] is None else float(ci[0]), ci_high=None if ci[1] is None else float(ci[1]),
        requested_test=requested, pairing=rule if test == "paired" else None,
    )


def holm(pvalues):
    """Holm's step-down adjusted p-values (family-wise error control), in the given order.

    Parameters
    ----------
    pvalues : sequence of float

    Returns
    -------
    numpy.ndarray
        Adjusted p-values: reject hypothesis i at level alpha when ``adjusted[i] < alpha``.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def compare_many(populations, *, primary, others=None, test="auto", alternative="less", alpha=0.05,
                 n_resamples=DEFAULT_RESAMPLES, random_state=0, seeds=None) -> MultiCompareResult:
    """One primary comparison named up front, and secondary comparisons with Holm's adjustment.

    Parameters
    ----------
    populations : dict of str -> (sequence or dict of str -> float)
        Each population's betas, by population name.
    primary : tuple of (str, str)
        (A, B): the comparison the study is about, tested at ``alpha`` on its own.
    others : sequence of (str, str), optional
        Secondary comparisons; by default every other pair (A, B) of ``populations`` with A
        before B in their order.  Their p-values are Holm-adjusted as one family.
    test, alternative, alpha, n_resamples, random_state
        As in :func:`compare_populations` (H1 for a pair (A, B): mean beta of A < B by default).
    seeds : dict of str -> sequence, optional
        Each population's model seeds, for pairing.

    Returns
    -------
    MultiCompareResult
    """
    caller = "compare_many"
    if not isinstance(populations, dict) or len(populations) < 2:
        raise InputError(f"{caller} needs a dict of at least two populations (name -> betas).")
    names = list(populations)

    def pair(p, what):
        if not isinstance(p, (tuple, list)) or len(p) != 2 or any(x not in populations for x in p) or p[0] == p[1]:
            raise InputError(f"The {what} comparison of {caller} must be a pair of two different population names "
                             f"among {', '.join(map(repr, names))}; got {p!r}.")
        return tuple(p)

    primary = pair(primary, "primary")
    if others is None:
        others = [(x, y) for i, x in enumerate(names) for y in names[i + 1:]
                  if {x, y} != set(primary)]
    others = [pair(p, "secondary") for p in others]
    seeds = seeds or {}

    def run(p):
        return compare_populations(populations[p[0]], populations[p[1]], test=test, alternative=alternative,
                                   alpha=alpha, n_resamples=n_resamples, random_state=random_state,
                                   label_a=p[0], label_b=p[1], seeds_a=seeds.get(p[0]), seeds_b=seeds.get(p[1]))

    sec = tuple(run(p) for p in others)
    return MultiCompareResult(primary=run(primary), secondary=sec,
                              adjusted_pvalues=tuple(float(x) for x in holm([r.pvalue for r in sec])), alpha=alpha)


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


# report.json key spellings: format_version 1 wrote the left names, later versions the right ones
_KEY_ALIASES = (("p_value", "pvalue"), ("f_stat", "fvalue"), ("se", "bse"), ("t_stat", "tvalue"))


def load_report(path) -> dict:
    """Read and check an audit ``report.json`` (as written by :func:`write_report`).

    Reads every format version: the statistics' older names (``p_value``, ``f_stat``, ``se``,
    ``t_stat``) and newer ones (``pvalue``, ``fvalue``, ``bse``, ``tvalue``) are both filled in
    each model's entry, whichever the file used.

    Parameters
    ----------
    path : str or Path
        The report.json, or the folder holding it.

    Returns
    -------
    dict
        The report, with both spellings of each model's statistics.

    Raises
    ------
    InputError
        A missing or unreadable file, another kind of JSON, no model with a beta, or a model
        name listed twice (its betas could not be told apart).
    """
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
            isinstance(m, dict) and "model" in m and isinstance(m.get("beta"), (int, float))
            and not isinstance(m.get("beta"), bool) for m in models):
        raise InputError(f"Audit report {str(path)!r} has no usable 'models' list with a beta per model.")
    names = [str(m["model"]) for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"Audit report {str(path)!r} lists model(s) {', '.join(map(repr, dup[:5]))} more than "
                         "once; give every model its own name so that no beta is lost.")
    for m in models:
        for old, new in _KEY_ALIASES:
            if new not in m and old in m:
                m[new] = m[old]
            elif old not in m and new in m:
                m[old] = m[new]
    return data


def report_betas(report: dict) -> dict:
    """Model name -> beta of a loaded audit report.

    Parameters
    ----------
    report : dict
        As :func:`load_report` returns.

    Returns
    -------
    dict of str -> float

    Raises
    ------
    InputError
        When two models share a name (a dict would keep only one beta).
    """
    out = {}
    for m in report["models"]:
        name = str(m["model"])
        if name in out:
            raise InputError(f"The report lists model {name!r} more than once; give every model its own name.")
        out[name] = float(m["beta"])
    return out


def report_seeds(report: dict):
    """The models' seeds when the report records them for every model, else None."""
    seeds = [m.get("seed") for m in report["models"]]
    return None if any(s is None for s in seeds) else seeds
