"""Result types of the audit.  Frozen dataclasses: ``to_dict()`` gives JSON-safe Python
scalars, ``summary()`` a short text.  The same type comes back whatever form the input took."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REPORT_FORMAT = "geoaudit-audit-report"
COMPARE_FORMAT = "geoaudit-compare"
FORMAT_VERSION = 1

VARIANCE_DESCRIPTIONS = {
    "paper": "Sigma = diag(1/sqrt(n_i)) (the paper's choice)",
    "binomial": "Sigma = diag(p_i(1-p_i)/n_i), p_i smoothed as (correct_i+0.5)/(n_i+1)",
}


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
    out = []
    for row in table.to_dict("records"):
        rec = {}
        for k, v in row.items():
            if isinstance(v, (bool, np.bool_)):
                rec[k] = bool(v)
            elif isinstance(v, (int, np.integer)):
                rec[k] = int(v)
            elif isinstance(v, (float, np.floating)):
                rec[k] = _f(v)
            else:
                rec[k] = None if v is None else str(v)
        out.append(rec)
    return out


@dataclass(frozen=True)
class GLSResult:
    """The GLS regression of group accuracy on the covariate and its F-test of H0: beta = 0.

    Attributes
    ----------
    beta, intercept : float
        Slope (accuracy per unit of the regressor, i.e. per unit of ln(covariate) when
        ``log_covariate``) and intercept.
    se, intercept_se : float
        Their standard errors.
    t_stat : float
        beta / se (its square is ``f_stat``).
    f_stat, df_num, df_denom, p_value : float, int, int, float
        F-test of H0: beta = 0 against beta != 0, df (1, m - 2) for m groups.
    ci_low, ci_high : float
        The ``1 - alpha`` confidence interval of beta.
    n_groups : int
        Groups in the regression (after dropping small ones).
    n_images : int
        Images in those groups.
    groups, dropped_groups : tuple of str
        Groups used, and groups dropped for having fewer than ``min_group_size`` images.
    variance, log_covariate, min_group_size, alpha
        The settings that produced the result.
    cov_params : tuple
        The 2x2 covariance matrix of (intercept, beta), for confidence bands.
    """

    beta: float
    intercept: float
    se: float
    intercept_se: float
    t_stat: float
    f_stat: float
    df_num: int
    df_denom: int
    p_value: float
    ci_low: float
    ci_high: float
    n_groups: int
    n_images: int
    r_squared: float
    groups: tuple = ()
    dropped_groups: tuple = ()
    variance: str = "paper"
    log_covariate: bool = True
    min_group_size: int = 50
    alpha: float = 0.05
    cov_params: tuple = ((float("nan"), float("nan")), (float("nan"), float("nan")))

    @property
    def significant(self) -> bool:
        """Whether H0: beta = 0 is rejected at level ``alpha``."""
        return self.p_value < self.alpha

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
            "se": _f(self.se),
            "intercept_se": _f(self.intercept_se),
            "t_stat": _f(self.t_stat),
            "f_stat": _f(self.f_stat),
            "df_num": int(self.df_num),
            "df_denom": int(self.df_denom),
            "p_value": _f(self.p_value),
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "alpha": float(self.alpha),
            "significant": bool(self.significant),
            "n_groups": int(self.n_groups),
            "n_images": int(self.n_images),
            "r_squared": _f(self.r_squared),
            "variance": self.variance,
            "log_covariate": bool(self.log_covariate),
            "min_group_size": int(self.min_group_size),
            "groups": [str(g) for g in self.groups],
            "dropped_groups": [str(g) for g in self.dropped_groups],
            "cov_params": [[_f(v) for v in row] for row in self.cov_params],
        }

    def summary(self) -> str:
        reg = "ln(covariate)" if self.log_covariate else "covariate"
        verdict = "reject" if self.significant else "do not reject"
        lvl = int(round((1 - self.alpha) * 100))
        return (
            f"GLS accuracy ~ {reg}, {self.n_groups} groups ({self.n_images} images), "
            f"variance={self.variance}\n"
            f"  beta = {self.beta:.4g} (se {self.se:.3g}, {lvl}% CI [{self.ci_low:.4g}, {self.ci_high:.4g}]), "
            f"intercept = {self.intercept:.4g}\n"
            f"  F({self.df_num}, {self.df_denom}) = {self.f_stat:.4g}, p = {_fmt_p(self.p_value)}: "
            f"{verdict} H0 beta = 0 at alpha = {self.alpha:g}"
            + (f"\n  dropped {len(self.dropped_groups)} groups with n < {self.min_group_size}"
               if self.dropped_groups else "")
        )

    def _repr_html_(self):
        from html import escape

        return f"<pre>{escape(self.summary())}</pre>"


@dataclass(frozen=True)
class AuditReport:
    """A whole audit: settings, pooled per-group accuracy, one GLS fit per model, the population.

    Attributes
    ----------
    settings : dict
        group, covariate, log_covariate, min_group_size, variance, alpha, label_col, pred_col,
        model_col.
    groups : pandas.DataFrame
        Pooled over models: group, n, correct, accuracy, covariate, n_models, dropped.
    dropped_groups : tuple of str
        Groups with fewer than ``min_group_size`` images (for any model).
    fits : dict of str -> GLSResult
        One regression per model, in model order.
    model_groups : dict of str -> pandas.DataFrame
        Each model's own group table.
    population : PopulationSummary
    source : str or None
        Where the predictions came from.
    """

    settings: dict
    groups: pd.DataFrame
    dropped_groups: tuple
    fits: dict
    model_groups: dict
    population: PopulationSummary
    source: str | None = None
    model_info: dict = field(default_factory=dict)

    @property
    def betas(self) -> dict:
        """Model name -> beta."""
        return {name: fit.beta for name, fit in self.fits.items()}

    def to_dict(self) -> dict:
        models = []
        for name, fit in self.fits.items():
            d = {"model": str(name)}
            d.update(fit.to_dict())
            for k in ("groups", "dropped_groups", "variance", "log_covariate", "min_group_size"):
                d.pop(k)  # held once in settings / dropped_groups
            d.update(self.model_info.get(name, {}))
            models.append(d)
        return {
            "format": REPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "settings": dict(self.settings),
            "groups": group_records(self.groups),
            "dropped_groups": [str(g) for g in self.dropped_groups],
            "models": models,
            "population": self.population.to_dict(),
        }

    def summary(self) -> str:
        s = self.settings
        kept = int((~self.groups["dropped"]).sum())
        lines = [
            f"Audit of {len(self.fits)} model(s): accuracy by {s['group']!r} against "
            f"{'ln ' if s['log_covariate'] else ''}{s['covariate']!r}, variance={s['variance']}",
            f"  {kept} groups kept, {len(self.dropped_groups)} dropped (n < {s['min_group_size']})",
        ]
        width = max(5, max(len(str(n)) for n in self.fits))
        lines.append(f"  {'model':<{width}}  {'beta':>9}  {'se':>8}  {'F':>8}  {'df':>7}  {'p':>9}")
        for name, fit in self.fits.items():
            lines.append(
                f"  {str(name):<{width}}  {fit.beta:>9.4f}  {fit.se:>8.4f}  {fit.f_stat:>8.3f}  "
                f"{f'1,{fit.df_denom}':>7}  {_fmt_p(fit.p_value):>9}{' *' if fit.significant else ''}"
            )
        lines.append("  " + self.population.summary())
        return "\n".join(lines)

    def _repr_html_(self):
        from html import escape

        return f"<pre>{escape(self.summary())}</pre>"
