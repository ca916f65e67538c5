"""Result types of the audit.  Frozen dataclasses following geoaudit's result protocol
(:mod:`geoaudit._results`): ``to_dict()`` gives JSON-safe Python data, ``summary()`` a short
text.  The same type comes back whatever form the input took."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from geoaudit._results import FrozenFrame, Result, deprecated_alias, frozen_mapping, json_safe

REPORT_FORMAT = "geoaudit-audit-report"
COMPARE_FORMAT = "geoaudit-compare"
# 2: statsmodels names (bse, tvalue, fvalue, pvalue), the method's tau^2 and heterogeneity, influence.
# Version 1 files name them se, t_stat, f_stat, p_value; everything else means the same.
REPORT_FORMAT_VERSION = 2
FORMAT_VERSION = 1  # of the comparison file
V1_KEYS = {"se": "bse", "intercept_se": "intercept_bse", "t_stat": "tvalue", "f_stat": "fvalue",
           "p_value": "pvalue"}

VARIANCE_DESCRIPTIONS = {
    "random-effects": "random-effects meta-regression: Var(e_i) = tau^2 + f_i(1-f_i)/n_i (f_i: fitted "
                      "accuracy), tau^2 by {tau2}, Knapp-Hartung t-test on m - 2 df",
    "hc3": "ordinary least squares with HC3 heteroskedasticity-robust standard errors, t-test on m - 2 df",
    "paper": "GLS with Sigma = diag(1/sqrt(n_i)) (the paper's choice)",
    "binomial": "GLS with Sigma = diag(p_i(1-p_i)/n_i), p_i smoothed as (correct_i+0.5)/(n_i+1)",
}

WHY_NOT_PAPER = (
    "The default differs from the paper's method (Sigma = diag(1/sqrt(n_i))): true country accuracies "
    "scatter around any line for reasons unrelated to the covariate (between-country heterogeneity, "
    "tau^2), and a test that ignores it is miscalibrated. In simulation (benchmarks/calibration.py) the "
    "paper's weights reject a true H0 8-12% of the time at a nominal 5% when tau = 0.05-0.1, and 1-3% "
    "without heterogeneity; binomial weights up to 42%. The random-effects meta-regression estimates "
    "tau^2 and keeps its size within 3.8-6.1% in every simulated design (docs/audit.md, Calibration). "
    "variance='paper' reproduces the paper."
)

ASSUMPTIONS = (
    "Groups are independent of each other (no shared images, no spatial correlation between countries).",
    "Accuracy is linear in the regressor (ln covariate by default) within the observed range.",
    "Inference is conditional on this test set: the images per country are taken as given, and the "
    "verdict speaks of this model on these images, not of the population of all images of a country.",
    "Each group's accuracy has binomial sampling variance p(1-p)/n (images classified independently).",
)


def upgrade_report(data: dict) -> dict:
    """A loaded report.json in the current format: version 1 keys renamed, nothing else changed.

    Version 1 named the per-model statistics ``se``, ``intercept_se``, ``t_stat``, ``f_stat`` and
    ``p_value`` (now ``bse``, ``intercept_bse``, ``tvalue``, ``fvalue``, ``pvalue``, same values) and
    had no method fields: its method is ``settings["variance"]`` ("paper" unless set).

    Parameters
    ----------
    data : dict
        The parsed JSON of a report.json.

    Returns
    -------
    dict
        A new dict; ``format_version`` is kept as read (the version of the file).
    """
    out = dict(data)
    if int(data.get("format_version", 1)) >= 2:
        return out
    out["models"] = [{V1_KEYS.get(k, k): v for k, v in m.items()} if isinstance(m, dict) else m
                     for m in data.get("models", [])]
    settings = dict(data.get("settings") or {})
    settings.setdefault("variance", "paper")
    settings.setdefault("paper_method", settings["variance"] == "paper")
    out["settings"] = settings
    return out


def describe_method(variance, tau2_method="REML") -> str:
    """One line naming the method that produced a verdict."""
    return VARIANCE_DESCRIPTIONS[variance].format(tau2=tau2_method)


def _f(x):
    """A JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt_p(p):
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


def group_records(table: pd.DataFrame) -> list[dict]:
    """A group table as JSON-safe records."""
    return json_safe(table)


@dataclass(frozen=True)
class Influence(Result):
    """How much a verdict depends on single groups and on the min_group_size cut.

    Attributes
    ----------
    loo : FrozenFrame
        Leave-one-group-out refits: group, n, beta, pvalue, significant (without that group);
        ``leave_one_out`` returns it as a DataFrame.
    cuts : FrozenFrame
        Refits at several min_group_size cuts: min_group_size, n_groups, beta, pvalue,
        significant (None where fewer than 3 groups are left); ``by_cut`` as a DataFrame.
    max_change : float
        Largest |beta without a group - beta|.
    max_change_group : str or None
        The group whose removal changes beta most.
    flipping_groups : tuple of str
        Groups whose removal alone flips the verdict at ``alpha``.
    hinges_on_one_group, hinges_on_cut : bool
        Whether leaving one group out, or another cut, flips the verdict.
    """

    loo: FrozenFrame
    cuts: FrozenFrame
    max_change: float
    max_change_group: str | None
    flipping_groups: tuple
    hinges_on_one_group: bool
    hinges_on_cut: bool
    min_group_size: int = 50
    alpha: float = 0.05

    @classmethod
    def build(cls, loo, cuts, *, beta, significant, min_group_size, alpha):
        """From the leave-one-out and cut tables and the full fit's beta and verdict."""
        change = (loo["beta"] - beta).abs()
        if len(loo) and change.notna().any():
            i = int(change.fillna(-1).to_numpy().argmax())
            max_change, max_group = float(change.iloc[i]), str(loo["group"].iloc[i])
        else:
            max_change, max_group = float("nan"), None
        flips = tuple(str(g) for g, s in zip(loo["group"], loo["significant"]) if s is not None and s != significant)
        verdicts = {bool(s) for s in cuts["significant"] if s is not None}
        return cls(loo=FrozenFrame(loo), cuts=FrozenFrame(cuts), max_change=max_change, max_change_group=max_group,
                   flipping_groups=flips, hinges_on_one_group=bool(flips), hinges_on_cut=len(verdicts) > 1,
                   min_group_size=int(min_group_size), alpha=float(alpha))

    @property
    def leave_one_out(self) -> pd.DataFrame:
        """The leave-one-group-out refits as a DataFrame."""
        return self.loo.to_frame()

    @property
    def by_cut(self) -> pd.DataFrame:
        """The refits at each min_group_size cut as a DataFrame."""
        return self.cuts.to_frame()

    @property
    def fragile(self) -> bool:
        """Whether the verdict hinges on one group or on the cut."""
        return self.hinges_on_one_group or self.hinges_on_cut

    def warnings(self) -> list[str]:
        """Plain-language flags of a fragile verdict (empty when it is robust)."""
        out = []
        if self.hinges_on_one_group:
            out.append(f"the verdict flips when {_list(self.flipping_groups)} is left out "
                       f"({len(self.flipping_groups)} group(s))")
        if self.hinges_on_cut:
            c = self.by_cut.dropna(subset=["pvalue"])
            out.append("the verdict depends on min_group_size: "
                       + ", ".join(f"p = {_fmt_p(p)} at {k}" for k, p in zip(c["min_group_size"], c["pvalue"])))
        return out

    def summary(self) -> str:
        lines = []
        if self.max_change_group is not None:
            lines.append(f"leave-one-group-out: beta changes by at most {self.max_change:.3g} "
                         f"(without {self.max_change_group})")
        c = self.by_cut
        lines.append("by min_group_size: " + "; ".join(
            f"{k}: {'n/a' if not math.isfinite(p) else f'beta {b:.3g}, p {_fmt_p(p)}'} ({m} groups)"
            for k, m, b, p in zip(c["min_group_size"], c["n_groups"], c["beta"], c["pvalue"])))
        w = self.warnings()
        lines.append("FRAGILE: " + "; ".join(w) if w else
                     "robust: no single group and no cut flips the verdict")
        return "\n".join(lines)


def _list(values, k=5):
    values = list(values)
    return ", ".join(values[:k]) + (f" and {len(values) - k} more" if len(values) > k else "")


@dataclass(frozen=True)
class GLSResult(Result):
    """The regression of group accuracy on the covariate and its F-test of H0: beta = 0.

    Attributes
    ----------
    beta, intercept : float
        Slope (accuracy per unit of the regressor, i.e. per unit of ln(covariate) when
        ``log_covariate``) and intercept.
    bse, intercept_bse : float
        Their standard errors (``se``/``intercept_se`` are deprecated aliases).
    tvalue : float
        beta / bse (its square is ``fvalue``).
    fvalue, df_num, df_denom, pvalue : float, int, int, float
        F-test of H0: beta = 0 against beta != 0, df (1, m - 2) for m groups.
    ci_low, ci_high : float
        The ``1 - alpha`` confidence interval of beta.
    n_groups : int
        Groups in the regression (after dropping small ones).
    n_images : int
        Images in those groups.
    r_squared : float
        (Weighted) R^2 of the fitted line.
    groups, dropped_groups : tuple of str
        Groups used, and groups dropped for having fewer than ``min_group_size`` images.
    variance : str
        The method (``method`` is the same): "random-effects", "hc3", "paper" or "binomial".
    log_covariate, min_group_size, alpha
        The settings that produced the result.
    cov_params : tuple
        The 2x2 covariance matrix of (intercept, beta), for confidence bands.
    tau2, tau2_method : float, str
        The between-group variance estimated by REML or DL (the weights use it only under
        random-effects; for the other methods it is a diagnostic).
    q, q_df, q_pvalue, i2 : float, int, float, float
        Residual heterogeneity: Cochran's Q_E of the fixed-effect fit (weights 1/v_i), its df
        and chi-square p-value, and I^2 (percent of residual variance between groups).
    influence : Influence or None
        Leave-one-group-out and min_group_size sensitivity.
    """

    beta: float
    intercept: float
    bse: float
    intercept_bse: float
    tvalue: float
    fvalue: float
    df_num: int
    df_denom: int
    pvalue: float
    ci_low: float
    ci_high: float
    n_groups: int
    n_images: int
    r_squared: float
    groups: tuple = ()
    dropped_groups: tuple = ()
    variance: str = "random-effects"
    log_covariate: bool = True
    min_group_size: int = 50
    alpha: float = 0.05
    cov_params: tuple = ((float("nan"), float("nan")), (float("nan"), float("nan")))
    tau2: float = float("nan")
    tau2_method: str = "REML"
    q: float = float("nan")
    q_df: int = 0
    q_pvalue: float = float("nan")
    i2: float = float("nan")
    influence: Influence | None = None

    se = deprecated_alias("bse", "se")
    intercept_se = deprecated_alias("intercept_bse", "intercept_se")
    t_stat = deprecated_alias("tvalue", "t_stat")
    f_stat = deprecated_alias("fvalue", "f_stat")
    p_value = deprecated_alias("pvalue", "p_value")

    @property
    def method(self) -> str:
        """The method's name (the same as ``variance``)."""
        return self.variance

    @property
    def method_description(self) -> str:
        """One line describing the method."""
        return describe_method(self.variance, self.tau2_method)

    @property
    def significant(self) -> bool:
        """Whether H0: beta = 0 is rejected at level ``alpha``."""
        return self.pvalue < self.alpha

    def predict(self, covariate):
        """Fitted accuracy at covariate values (on the covariate's own scale, not logged)."""
        x = np.asarray(covariate, dtype=float)
        x = np.log(x) if self.log_covariate else x
        return self.intercept + self.beta * x

    def confidence_band(self, covariate):
        """(low, high) pointwise ``1 - alpha`` band of the fitted line at ``covariate``."""
        from scipy import stats

        x = np.asarray(covariate, dtype=float)
        x = np.log(x) if self.log_covariate else x
        c = np.asarray(self.cov_params, dtype=float)
        var = c[0, 0] + 2 * x * c[0, 1] + x * x * c[1, 1]
        q = stats.t.ppf(1 - self.alpha / 2, self.df_denom)
        mid = self.intercept + self.beta * x
        half = q * np.sqrt(np.maximum(var, 0.0))
        return mid - half, mid + half

    def to_dict(self) -> dict:
        return {
            "beta": _f(self.beta),
            "intercept": _f(self.intercept),
            "bse": _f(self.bse),
            "intercept_bse": _f(self.intercept_bse),
            "tvalue": _f(self.tvalue),
            "fvalue": _f(self.fvalue),
            "df_num": int(self.df_num),
            "df_denom": int(self.df_denom),
            "pvalue": _f(self.pvalue),
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "alpha": float(self.alpha),
            "significant": bool(self.significant),
            "n_groups": int(self.n_groups),
            "n_images": int(self.n_images),
            "r_squared": _f(self.r_squared),
            "variance": self.variance,
            "method": self.method_description,
            "tau2": _f(self.tau2),
            "tau2_method": self.tau2_method,
            "q": _f(self.q),
            "q_df": int(self.q_df),
            "q_pvalue": _f(self.q_pvalue),
            "i2": _f(self.i2),
            "log_covariate": bool(self.log_covariate),
            "min_group_size": int(self.min_group_size),
            "groups": [str(g) for g in self.groups],
            "dropped_groups": [str(g) for g in self.dropped_groups],
            "cov_params": [[_f(v) for v in row] for row in self.cov_params],
            "influence": None if self.influence is None else self.influence.to_dict(),
        }

    def summary(self) -> str:
        reg = "ln(covariate)" if self.log_covariate else "covariate"
        verdict = "reject" if self.significant else "do not reject"
        lvl = int(round((1 - self.alpha) * 100))
        text = (
            f"accuracy ~ {reg}, {self.n_groups} groups ({self.n_images} images), variance={self.variance}\n"
            f"  method: {self.method_description}\n"
            f"  beta = {self.beta:.4g} (se {self.bse:.3g}, {lvl}% CI [{self.ci_low:.4g}, {self.ci_high:.4g}]), "
            f"intercept = {self.intercept:.4g}\n"
            f"  F({self.df_num}, {self.df_denom}) = {self.fvalue:.4g}, p = {_fmt_p(self.pvalue)}: "
            f"{verdict} H0 beta = 0 at alpha = {self.alpha:g}\n"
            f"  heterogeneity: tau^2 = {self.tau2:.3g} ({self.tau2_method}), I^2 = {self.i2:.1f}%, "
            f"Q({self.q_df}) = {self.q:.4g}, p = {_fmt_p(self.q_pvalue)}"
            + (f"\n  dropped {len(self.dropped_groups)} groups with n < {self.min_group_size}"
               if self.dropped_groups else "")
        )
        if self.influence is not None:
            text += "\n  " + self.influence.summary().replace("\n", "\n  ")
        return text


@dataclass(frozen=True)
class AuditReport(Result):
    """A whole audit: settings, pooled per-group accuracy, one fit per model, the population.

    Immutable: ``groups`` and ``model_groups`` hand out fresh DataFrames built from frozen tables.

    Attributes
    ----------
    settings : Mapping
        group, covariate, log_covariate, min_group_size, variance, tau2_method, alpha,
        label_col, pred_col, model_col (read-only).
    group_table : FrozenFrame
        Pooled over models: group, n, correct, accuracy, covariate, n_models, dropped
        (``groups`` returns it as a DataFrame).
    dropped_groups : tuple of str
        Groups with fewer than ``min_group_size`` images (for any model).
    fits : Mapping of str -> GLSResult
        One regression per model, in model order.
    model_group_tables : Mapping of str -> FrozenFrame
        Each model's own group table (``model_groups`` returns DataFrames).
    population : PopulationSummary
    source : str or None
        Where the predictions came from.
    model_info : Mapping
        Extra per-model fields (checkpoint, seed, ...).
    """

    settings: Mapping
    group_table: FrozenFrame
    dropped_groups: tuple
    fits: Mapping
    model_group_tables: Mapping
    population: object
    source: str | None = None
    model_info: Mapping = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "settings", frozen_mapping(self.settings))
        if not isinstance(self.group_table, FrozenFrame):
            set_(self, "group_table", FrozenFrame(self.group_table))
        set_(self, "fits", frozen_mapping(dict(self.fits)))
        set_(self, "model_group_tables", frozen_mapping(
            {k: (t if isinstance(t, FrozenFrame) else FrozenFrame(t)) for k, t in self.model_group_tables.items()}))
        set_(self, "dropped_groups", tuple(self.dropped_groups))
        set_(self, "model_info", frozen_mapping(dict(self.model_info or {})))

    @property
    def groups(self) -> pd.DataFrame:
        """The pooled per-group table as a new DataFrame."""
        return self.group_table.to_frame()

    @property
    def model_groups(self) -> dict:
        """Model name -> its group table as a new DataFrame."""
        return {k: t.to_frame() for k, t in self.model_group_tables.items()}

    @property
    def betas(self) -> dict:
        """Model name -> beta."""
        return {name: fit.beta for name, fit in self.fits.items()}

    @property
    def method_description(self) -> str:
        """One line naming the method behind every verdict of the report."""
        return describe_method(self.settings["variance"], self.settings.get("tau2_method", "REML"))

    def to_dict(self) -> dict:
        models = []
        for name, fit in self.fits.items():
            d = {"model": str(name)}
            d.update(fit.to_dict())
            for k in ("groups", "dropped_groups", "variance", "log_covariate", "min_group_size", "method",
                      "tau2_method"):
                d.pop(k)  # held once in settings / dropped_groups
            d.update(json_safe(self.model_info.get(name, {})))
            models.append(d)
        settings = json_safe(self.settings)
        settings["method"] = self.method_description
        settings["paper_method"] = self.settings["variance"] == "paper"
        if self.settings["variance"] != "paper":
            settings["why_not_paper"] = WHY_NOT_PAPER
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "source": self.source,
            "settings": settings,
            "assumptions": list(ASSUMPTIONS),
            "groups": group_records(self.groups),
            "dropped_groups": [str(g) for g in self.dropped_groups],
            "models": models,
            "population": self.population.to_dict(),
        }

    def warnings(self) -> list[str]:
        """Fragile verdicts, per model: '<model>: <what flips it>'."""
        out = []
        for name, fit in self.fits.items():
            if fit.influence is not None:
                out.extend(f"{name}: {w}" for w in fit.influence.warnings())
        return out

    def summary(self) -> str:
        s = self.settings
        groups = self.groups
        kept = int((~groups["dropped"].astype(bool)).sum())
        lines = [
            f"Audit of {len(self.fits)} model(s): accuracy by {s['group']!r} against "
            f"{'ln ' if s['log_covariate'] else ''}{s['covariate']!r}, variance={s['variance']}",
            f"  method: {self.method_description}"
            + ("" if s["variance"] == "paper" else " (not the paper's diag(1/sqrt(n)); variance='paper' gives it)"),
            f"  {kept} groups kept, {len(self.dropped_groups)} dropped (n < {s['min_group_size']})",
        ]
        width = max(5, max(len(str(n)) for n in self.fits))
        lines.append(f"  {'model':<{width}}  {'beta':>9}  {'se':>8}  {'F':>8}  {'df':>7}  {'p':>9}  {'tau^2':>8}")
        for name, fit in self.fits.items():
            lines.append(
                f"  {str(name):<{width}}  {fit.beta:>9.4f}  {fit.bse:>8.4f}  {fit.fvalue:>8.3f}  "
                f"{f'1,{fit.df_denom}':>7}  {_fmt_p(fit.pvalue):>9}  {fit.tau2:>8.2g}{' *' if fit.significant else ''}"
            )
        lines.append("  " + self.population.summary())
        fragile = []
        for name, fit in self.fits.items():
            inf = fit.influence
            if inf is not None and inf.fragile:
                why = (["without " + _list(inf.flipping_groups, 3)] if inf.hinges_on_one_group else []) + (
                    ["min_group_size"] if inf.hinges_on_cut else [])
                fragile.append(f"{name} ({'; '.join(why)})")
        if fragile:
            lines.append("  FRAGILE verdicts, they flip " + ("with: " if len(fragile) > 1 else "with ")
                         + "; ".join(fragile[:6]) + (f"; and {len(fragile) - 6} more" if len(fragile) > 6 else "")
                         + " (see influence in the report)")
        return "\n".join(lines)
