"""The demo's comparisons, named before any model is trained, and how they are tested.

One primary comparison (the paper's claim) is tested alone at alpha; the positive control
(the oracle must be seen to reduce the capture bias) is a check of the experimental system and
is also tested alone at alpha; the remaining comparisons form the secondary family, adjusted
by Holm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05
METHODS = ("plain", "pgd", "perceptual", "oracle")
METHOD_LABELS = {"plain": "plain", "pgd": "PGD-DRO", "perceptual": "perceptual-DRO",
                 "oracle": "oracle (capture augmentation)"}
#: Mechanism -> (what is planted, in words).
MECHANISMS = {
    "capture": "capture quality falls with income (blur, low light, sensor noise, JPEG)",
    "colour": "a colour shortcut that holds in high-income countries only",
    "null": "no bias: nothing in an image depends on its country",
}


@dataclass(frozen=True)
class PlannedComparison:
    """One comparison of the demo, named before any model is trained.

    H1 is always "mean beta of ``a`` < mean beta of ``b``" (``a`` is fairer), tested with the
    paired t-test (the populations share seeds).

    Attributes
    ----------
    mechanism : str
        The dataset (``capture``, ``colour`` or ``null``).
    a, b : str
        Training methods (keys of :data:`METHOD_LABELS`).
    role : str
        ``primary``, ``positive control``, ``secondary`` or ``negative check``.
    expectation : str
        What a working test should say, and why.
    """

    mechanism: str
    a: str
    b: str
    role: str
    expectation: str

    @property
    def key(self) -> str:
        """``"<mechanism>: <a> < <b>"``."""
        return f"{self.mechanism}: {self.a} < {self.b}"

    @property
    def family(self) -> str:
        """``primary`` (the claim, tested alone at alpha), ``control`` (the positive control, a
        check of the experiment, tested alone at alpha) or ``secondary`` (Holm-adjusted together)."""
        return {"primary": "primary", "positive control": "control"}.get(self.role, "secondary")


#: Every comparison the demo may make, in report order; those whose populations a run does not
#: train are left out (see :func:`comparison_plan`).
COMPARISON_PLAN = (
    PlannedComparison("capture", "perceptual", "pgd", "primary",
                      "the paper's claim: perceptual-DRO makes models fairer than PGD-DRO"),
    PlannedComparison("capture", "oracle", "plain", "positive control",
                      "should be detected: training with the bias's own corruption as augmentation is the "
                      "standard remedy for a shift in image quality; a test that misses it cannot see an "
                      "improvement of this size"),
    PlannedComparison("capture", "perceptual", "plain", "secondary",
                      "unknown: does perceptual-DRO reduce a bias robust training may help with?"),
    PlannedComparison("capture", "pgd", "plain", "secondary",
                      "unknown: does PGD-DRO reduce a bias robust training may help with?"),
    PlannedComparison("colour", "perceptual", "plain", "negative check",
                      "expected silent: small perturbations do not remove a colour shortcut"),
    PlannedComparison("colour", "pgd", "plain", "negative check",
                      "expected silent: small perturbations do not remove a colour shortcut"),
    PlannedComparison("null", "perceptual", "plain", "negative check",
                      "must be silent (up to alpha): with no bias every method's true mean slope is 0"),
    PlannedComparison("null", "pgd", "plain", "negative check",
                      "must be silent (up to alpha): with no bias every method's true mean slope is 0"),
)


def comparison_plan(populations) -> tuple:
    """The planned comparisons that the trained populations allow, in report order.

    Parameters
    ----------
    populations : Mapping of str -> sequence of str
        Mechanism -> the training methods trained on it.

    Returns
    -------
    tuple of PlannedComparison
    """
    return tuple(c for c in COMPARISON_PLAN
                 if c.mechanism in populations and c.a in populations[c.mechanism]
                 and c.b in populations[c.mechanism])


def holm_adjust(pvalues):
    """Holm's step-down adjusted p-values, in the given order (:func:`geoaudit.audit.holm`).

    Parameters
    ----------
    pvalues : sequence of float

    Returns
    -------
    list of float
        Reject hypothesis i at family-wise level alpha when ``adjusted[i] < alpha``.
    """
    from geoaudit.audit import holm

    return [float(x) for x in holm(pvalues)]


def paired_difference_ci(betas_a, betas_b, *, level=0.95):
    """Two-sided t confidence interval of the mean paired difference ``a - b``.

    Parameters
    ----------
    betas_a, betas_b : sequence of float
        Paired values, in matching order.
    level : float

    Returns
    -------
    (mean difference, low, high) : tuple of float
    """
    import numpy as np
    from scipy import stats

    d = np.asarray(betas_a, float) - np.asarray(betas_b, float)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def stat(d, new, old):
    """A statistic under its statsmodels name, or under the name older results used.

    Parameters
    ----------
    d : Mapping
    new, old : str
        The statsmodels name (``pvalue``) and the older one (``p_value``).

    Returns
    -------
    object
        ``d[new]`` when present and not None, else ``d.get(old)``.
    """
    return d[new] if d.get(new) is not None else d.get(old)


def run_comparisons(betas, plan, *, alpha=ALPHA):
    """Test each planned comparison (paired, one-sided) and adjust the secondary ones by Holm.

    Parameters
    ----------
    betas : Mapping of str -> Mapping of str -> Mapping of str -> float
        Mechanism -> method -> model name -> beta (names shared across methods pair models).
    plan : sequence of PlannedComparison
    alpha : float

    Returns
    -------
    list of dict
        One row per comparison: its plan (``key``, ``mechanism``, ``a``, ``b``, ``role``,
        ``family``, ``expectation``), the test (``test``, ``statistic``, ``df``, ``pvalue``),
        ``p_adjusted`` (Holm within the secondary family; its own p for the primary comparison and
        the positive control, each tested alone), the means, the
        mean paired difference and its two-sided ``1 - alpha`` CI (``difference``, ``ci_low``,
        ``ci_high``), ``n_pairs``, ``rejected`` (``p_adjusted < alpha``) and ``verdict`` (words).
    """
    from geoaudit.audit import compare_populations

    rows = []
    for c in plan:
        ba, bb = betas[c.mechanism][c.a], betas[c.mechanism][c.b]
        res = compare_populations(ba, bb, test="paired", alternative="less", alpha=alpha,
                                  label_a=METHOD_LABELS[c.a], label_b=METHOD_LABELS[c.b]).to_dict()
        pairs = res.get("pairs") or [[k, k] for k in ba if k in bb]
        diff, lo, hi = paired_difference_ci([ba[x] for x, _ in pairs], [bb[y] for _, y in pairs],
                                            level=1 - alpha)
        rows.append({"key": c.key, "mechanism": c.mechanism, "a": c.a, "b": c.b,
                     "label_a": METHOD_LABELS[c.a], "label_b": METHOD_LABELS[c.b], "role": c.role,
                     "family": c.family, "expectation": c.expectation, "test": res["test"],
                     "alternative": res["alternative"], "statistic": res["statistic"], "df": res.get("df"),
                     "pvalue": stat(res, "pvalue", "p_value"), "mean_a": res["mean_a"], "mean_b": res["mean_b"],
                     "difference": diff, "ci_low": lo, "ci_high": hi, "ci_level": 1 - alpha,
                     "n_pairs": len(pairs), "alpha": alpha})
    secondary = [r for r in rows if r["family"] == "secondary"]
    for r, p in zip(secondary, holm_adjust([r["pvalue"] for r in secondary])):
        r["p_adjusted"] = p
    alone = {"primary": "none (the one primary comparison)",
             "control": "none (a check of the experiment, not a claim: tested alone, at the primary's level)"}
    for r in rows:
        if r["family"] in alone:
            r["p_adjusted"] = r["pvalue"]
        r["adjustment"] = alone.get(r["family"], f"Holm over {len(secondary)} secondary comparisons")
        r["rejected"] = bool(r["p_adjusted"] < alpha)
        r["verdict"] = _verdict(r)
    return rows


def _verdict(r) -> str:
    a, b = r["label_a"], r["label_b"]
    ci = f"mean difference {r['difference']:+.4f} ({r['ci_level']:.0%} CI [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}])"
    p = f"p = {r['p_adjusted']:.3g}" + (" Holm-adjusted" if r["family"] == "secondary" else "")
    # the test is one-sided at alpha, the interval two-sided at 1 - alpha: a rejection whose
    # interval still reaches 0 is narrow evidence, and the report says so
    narrow = ("; narrowly: the two-sided CI still reaches 0 (the one-sided test at alpha matches a "
              f"{1 - 2 * r['alpha']:.0%} interval)") if r["rejected"] and r["ci_high"] >= 0 else ""
    if r["role"] == "positive control":
        return (f"DETECTED: {a} is fairer than {b}, {p}, {ci}{narrow}; the comparison test sees an improvement "
                "that is there." if r["rejected"] else
                f"NOT DETECTED: {a} is not shown fairer than {b} ({p}, {ci}), although it was built to remove "
                "this bias; at these sizes the test does not see an improvement of this size, so its "
                "silence elsewhere is no evidence of no effect.")
    if r["role"] == "negative check":
        return (f"silent, as it should be: {a} not shown fairer than {b} ({p}, {ci})." if not r["rejected"] else
                f"FIRED: {a} came out fairer than {b} ({p}, {ci}) where no improvement was expected; "
                "either a false positive or the method does act on this mechanism.")
    return (f"{a} is fairer than {b} ({p}, {ci}{narrow})." if r["rejected"] else
            f"{a} is not shown fairer than {b} ({p}, {ci}).")


def verdicts(comparisons) -> dict:
    """The report's verdicts in words: the primary comparison, the positive control, the negative checks.

    Parameters
    ----------
    comparisons : sequence of dict
        Rows of :func:`run_comparisons`.

    Returns
    -------
    dict
        ``primary``, ``positive_control``, ``negative_checks`` (those the plan holds).
    """
    out = {}
    prim = [c for c in comparisons if c["role"] == "primary"]
    if prim:
        out["primary"] = f"{prim[0]['key']}: {prim[0]['verdict']}"
    pos = [c for c in comparisons if c["role"] == "positive control"]
    if pos:
        out["positive_control"] = pos[0]["verdict"]
    neg = [c for c in comparisons if c["role"] == "negative check"]
    if neg:
        fired = [c["key"] for c in neg if c["rejected"]]
        out["negative_checks"] = (f"all {len(neg)} negative checks stayed silent (Holm-adjusted p >= {ALPHA})."
                                  if not fired else
                                  f"{len(fired)} of {len(neg)} negative checks fired: {', '.join(fired)}.")
    return out

