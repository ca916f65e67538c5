"""Result types of model populations: their summary and verdict, and comparisons of populations."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoaudit._results import Result, deprecated_alias, json_safe

COMPARE_FORMAT = "geoaudit-compare"
COMPARE_MANY_FORMAT = "geoaudit-compare-many"
COMPARE_FORMAT_VERSION = 2

TEST_NAMES = {
    "welch": "Welch two-sample t-test",
    "student": "Student two-sample t-test",
    "paired": "paired t-test",
    "permutation": "permutation test (difference of means)",
}


def _fmt_p(p):
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def _fmt_ci(low, high):
    lo = "-inf" if low is None or low == -math.inf else f"{low:.4g}"
    hi = "inf" if high is None or high == math.inf else f"{high:.4g}"
    return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class PopulationVerdict(Result):
    """The population-level test: is the population's mean beta zero?

    The accuracy of every group is averaged over the population's models (they share one
    test set, so their tests are not independent and their votes are no test), and that
    mean accuracy per group is regressed on the covariate with the audit's calibrated test.

    Attributes
    ----------
    beta : float
        Slope of the population-mean accuracy (about the mean of the models' betas).
    bse : float
        Its standard error.
    ci_low, ci_high : float
        ``1 - alpha`` confidence interval of the population's mean beta.
    statistic : float
        The test statistic of H0: beta = 0 (t, or F = t**2 as the method reports it).
    df : float
        Denominator degrees of freedom of the test.
    pvalue : float
        Two-sided p-value of H0: mean beta = 0.
    method : str
        The regression method (the ``variance`` of :func:`gls_test`).
    n_models, n_groups : int
        Models averaged and groups regressed (groups every model kept).
    alpha : float
    image_agreement : bool
        True when the mean accuracy's sampling variance came from the models' agreement on
        each image (they predicted the same images); False when the models were taken to
        predict independent images (conservative if they in fact share them).
    """

    beta: float
    bse: float
    ci_low: float
    ci_high: float
    statistic: float
    df: float
    pvalue: float
    method: str
    n_models: int
    n_groups: int
    alpha: float = 0.05
    image_agreement: bool = True

    p_value = deprecated_alias("pvalue", "p_value")

    @property
    def significant(self) -> bool:
        """Whether H0: mean beta = 0 is rejected at level ``alpha``."""
        return bool(self.pvalue < self.alpha)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["significant"] = self.significant
        return d

    def summary(self) -> str:
        lvl = int(round((1 - self.alpha) * 100))
        verdict = "reject" if self.significant else "do not reject"
        return (f"population verdict (mean accuracy of {self.n_models} models per group, {self.n_groups} groups, "
                f"method {self.method}): mean beta = {self.beta:.4g} (se {self.bse:.3g}, {lvl}% CI "
                f"[{self.ci_low:.4g}, {self.ci_high:.4g}]), p = {_fmt_p(self.pvalue)}: {verdict} "
                f"H0 mean beta = 0 at alpha = {self.alpha:g}"
                + ("" if self.image_agreement else
                   "; its sampling variance treats the models' images as independent (conservative when "
                   "they share a test set)"))


@dataclass(frozen=True)
class PopulationSummary(Result):
    """The betas of a model population: their mean and spread, the population verdict, and
    (descriptively) how many models' own tests rejected.

    Attributes
    ----------
    n_models : int
    beta_mean, beta_sd, beta_median, beta_min, beta_max : float
        Over the models' betas (``beta_sd`` is None for one model).
    n_significant : int
        Models whose own test rejects beta = 0.  A count, not a verdict: the models share one
        test set, so their tests are correlated; see ``verdict``.
    alpha : float
    verdict : PopulationVerdict or None
        The population-level test (None for a single model, whose own test is the verdict,
        or when it could not be computed).
    """

    n_models: int
    beta_mean: float
    beta_sd: float | None
    beta_median: float
    beta_min: float
    beta_max: float
    n_significant: int
    alpha: float = 0.05
    verdict: PopulationVerdict | None = None

    @classmethod
    def from_fits(cls, fits: dict, *, verdict: PopulationVerdict | None = None) -> "PopulationSummary":
        """Summarise the fits (one per model) of a population.

        Parameters
        ----------
        fits : dict of str -> GLSResult
        verdict : PopulationVerdict, optional

        Returns
        -------
        PopulationSummary
        """
        betas = np.array([f.beta for f in fits.values()], dtype=float)
        alpha = next(iter(fits.values())).alpha
        return cls(
            n_models=len(betas),
            beta_mean=float(betas.mean()),
            beta_sd=float(betas.std(ddof=1)) if len(betas) > 1 else None,
            beta_median=float(np.median(betas)),
            beta_min=float(betas.min()),
            beta_max=float(betas.max()),
            n_significant=int(sum(bool(f.significant) for f in fits.values())),
            alpha=alpha,
            verdict=verdict,
        )

    @property
    def significant(self) -> bool | None:
        """The population verdict (None without one)."""
        return None if self.verdict is None else self.verdict.significant

    def verdict_sentence(self) -> tuple[str, str]:
        """("reject" or "keep", one sentence) for reports: the population verdict, with the
        models' own tests as a count."""
        sd = "n/a" if self.beta_sd is None else f"{self.beta_sd:.3g}"
        count = (f"{self.n_models} models: mean beta = {self.beta_mean:.4g} (sd {sd}); "
                 f"{self.n_significant} of {self.n_models} models' own tests reject beta = 0 at alpha = "
                 f"{self.alpha:g} (a count, not a verdict).")
        v = self.verdict
        if v is None:
            return "keep", count + " No population verdict could be computed."
        lvl = int(round((1 - v.alpha) * 100))
        head = ("The population's accuracy depends on the covariate" if v.significant
                else "No significant dependence of the population's accuracy on the covariate")
        return ("reject" if v.significant else "keep"), (
            f"{head}: mean beta = {v.beta:.4g}, {lvl}% CI [{v.ci_low:.4g}, {v.ci_high:.4g}], p = {_fmt_p(v.pvalue)} "
            f"(one {v.method} test on each group's accuracy averaged over the models). " + count)

    def to_dict(self) -> dict:
        return {
            "n_models": int(self.n_models),
            "beta_mean": json_safe(self.beta_mean),
            "beta_sd": json_safe(self.beta_sd),
            "beta_median": json_safe(self.beta_median),
            "beta_min": json_safe(self.beta_min),
            "beta_max": json_safe(self.beta_max),
            "n_significant": int(self.n_significant),
            "fraction_significant": float(self.n_significant / self.n_models),
            "alpha": float(self.alpha),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }

    def summary(self) -> str:
        sd = "n/a (one model)" if self.beta_sd is None else f"{self.beta_sd:.4g}"
        text = (
            f"population of {self.n_models} model(s): beta mean {self.beta_mean:.4g}, sd {sd}, "
            f"range [{self.beta_min:.4g}, {self.beta_max:.4g}]; "
            f"{self.n_significant}/{self.n_models} models' own tests reject at alpha = {self.alpha:g}"
            + (" (a count, not a verdict)" if self.n_models > 1 else "")
        )
        if self.verdict is not None:
            text += "\n  " + self.verdict.summary()
        return text


@dataclass(frozen=True)
class CompareResult(Result):
    """A comparison of the betas of two model populations.

    Attributes
    ----------
    test : str
        The test run: "welch", "student", "paired" or "permutation" (never "auto": the
        test "auto" chose is named here, and ``requested_test`` keeps what was asked).
    alternative : {"less", "greater", "two-sided"}
    statistic : float
        The t statistic of mean(A) - mean(B) for the t-tests; the difference of means itself
        for the permutation test.
    df : float or None
        Degrees of freedom (Welch-Satterthwaite for Welch, n - 1 paired); None for permutation.
    pvalue : float
    difference : float
        mean(A) - mean(B) (the mean of the paired differences for the paired test).
    ci_low, ci_high : float or None
        ``1 - alpha`` confidence interval of the difference, matching the alternative (one
        bound infinite for one-sided tests, given as None in JSON); None for permutation.
    mean_a, mean_b, sd_a, sd_b, n_a, n_b
        The two populations (after pairing, for the paired test).
    cohens_d, hedges_g : float or None
        Effect sizes of A - B (d_z for the paired test).
    """

    test: str
    alternative: str
    statistic: float
    df: float | None
    pvalue: float
    mean_a: float
    mean_b: float
    sd_a: float | None
    sd_b: float | None
    n_a: int
    n_b: int
    cohens_d: float | None
    hedges_g: float | None
    alpha: float = 0.05
    label_a: str = "A"
    label_b: str = "B"
    n_resamples: int | None = None
    random_state: int | None = None
    exact: bool | None = None
    pairs: tuple = ()
    betas_a: tuple = ()
    betas_b: tuple = ()
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    requested_test: str | None = None
    pairing: str | None = None

    p_value = deprecated_alias("pvalue", "p_value")

    @property
    def significant(self) -> bool:
        """Whether H0 is rejected at level ``alpha``."""
        return bool(self.pvalue < self.alpha)

    @property
    def hypotheses(self) -> tuple[str, str]:
        """(H0, H1) in words."""
        a, b = "mean beta of A", "mean beta of B"
        return {
            "less": (f"{a} >= {b}", f"{a} < {b}"),
            "greater": (f"{a} <= {b}", f"{a} > {b}"),
            "two-sided": (f"{a} = {b}", f"{a} != {b}"),
        }[self.alternative]

    def to_dict(self) -> dict:
        h0, h1 = self.hypotheses
        d = {"format": COMPARE_FORMAT, "format_version": COMPARE_FORMAT_VERSION}
        d.update(super().to_dict())
        d["pairs"] = [list(p) for p in self.pairs]
        d.update(h0=h0, h1=h1, significant=self.significant, p_value=d["pvalue"])  # p_value: older readers
        return d

    def summary(self) -> str:
        h0, h1 = self.hypotheses
        stat = (f"t({self.df:.4g}) = {self.statistic:.4g}" if self.df is not None
                else f"mean(A) - mean(B) = {self.statistic:.4g}, "
                + (f"exact over all {self.n_resamples} relabellings" if self.exact
                   else f"{self.n_resamples} random relabellings"))
        sd = lambda s: "n/a" if s is None else f"{s:.4g}"  # noqa: E731
        g = "n/a" if self.hedges_g is None else f"{self.hedges_g:.3g}"
        verdict = "reject H0" if self.significant else "do not reject H0"
        chosen = ""
        if self.requested_test == "auto":
            chosen = (f" (chosen by 'auto': models paired by {self.pairing})" if self.test == "paired"
                      else " (chosen by 'auto': the populations do not share seeds)")
        lines = [
            f"{TEST_NAMES[self.test]}{chosen}, H0: {h0} vs H1: {h1}",
            f"  A ({self.label_a}): n = {self.n_a}, mean beta = {self.mean_a:.4g}, sd = {sd(self.sd_a)}",
            f"  B ({self.label_b}): n = {self.n_b}, mean beta = {self.mean_b:.4g}, sd = {sd(self.sd_b)}",
        ]
        if self.difference is not None and self.ci_low is not None:
            lvl = int(round((1 - self.alpha) * 100))
            lines.append(f"  difference A - B = {self.difference:.4g}, {lvl}% CI {_fmt_ci(self.ci_low, self.ci_high)}")
        lines.append(f"  {stat}, p = {_fmt_p(self.pvalue)}, Hedges' g = {g}: {verdict} at alpha = {self.alpha:g}")
        if self.test == "permutation":
            lines.append("  (valid when the betas of A and B are exchangeable under H0: equal distributions, "
                         "not only equal means; at unequal spreads prefer Welch)")
        return "\n".join(lines)


@dataclass(frozen=True)
class MultiCompareResult(Result):
    """One primary comparison named up front, and secondary comparisons Holm-adjusted.

    Attributes
    ----------
    primary : CompareResult
        Tested at ``alpha`` on its own.
    secondary : tuple of CompareResult
        The other comparisons, each with its raw p-value.
    adjusted_pvalues : tuple of float
        Holm-adjusted p-values of ``secondary`` (family: the secondary comparisons).
    alpha : float
    """

    primary: CompareResult
    secondary: tuple = ()
    adjusted_pvalues: tuple = ()
    alpha: float = 0.05

    @property
    def results(self) -> tuple:
        """Every comparison, the primary first."""
        return (self.primary,) + tuple(self.secondary)

    def to_dict(self) -> dict:
        return {
            "format": COMPARE_MANY_FORMAT,
            "format_version": COMPARE_FORMAT_VERSION,
            "alpha": float(self.alpha),
            "adjustment": "holm (secondary comparisons only; the primary is tested at alpha)",
            "primary": self.primary.to_dict(),
            "secondary": [dict(r.to_dict(), pvalue_holm=json_safe(p), significant_holm=bool(p < self.alpha))
                          for r, p in zip(self.secondary, self.adjusted_pvalues)],
        }

    def summary(self) -> str:
        lines = [f"primary comparison: {self.primary.label_a} vs {self.primary.label_b}",
                 "  " + self.primary.summary().replace("\n", "\n  ")]
        if self.secondary:
            lines.append(f"secondary comparisons ({len(self.secondary)}), Holm-adjusted:")
            width = max(len(f"{r.label_a} vs {r.label_b}") for r in self.secondary)
            for r, p in zip(self.secondary, self.adjusted_pvalues):
                name = f"{r.label_a} vs {r.label_b}"
                lines.append(f"  {name:<{width}}  {r.test:<11}  diff {r.mean_a - r.mean_b:>9.4g}  "
                             f"p = {_fmt_p(r.pvalue):>9}  Holm p = {_fmt_p(p):>9}"
                             + ("  *" if p < self.alpha else ""))
        return "\n".join(lines)
