"""The fairness audit: per-group accuracy, a calibrated test of accuracy on log GDP, model
populations and their comparison.

The question (section 4 of the paper): does a classifier's accuracy in a group (a country)
depend on the group's covariate (GDP per capita)?  For m groups with n_i images, accuracy p_i
and covariate g_i, :func:`gls_test` fits ``p_i = intercept + beta * ln(g_i)`` and tests
H0: beta = 0 on (1, m - 2) degrees of freedom.  The default method is a random-effects
meta-regression (binomial sampling variance plus between-country heterogeneity tau^2 by REML,
Knapp-Hartung test), whose size is measured to hold on realistic data; the paper's GLS with
Sigma = diag(1/sqrt(n_i)) stays available as ``variance="paper"``, with ``"hc3"`` and
``"binomial"``.  A population of models trained alike gets one verdict of its own
(:func:`population_verdict`, on the models' mean accuracy per country), and two populations
are compared on their betas (:func:`compare_populations`: paired when they share seeds, Welch
otherwise; :func:`compare_many` names a primary comparison and Holm-adjusts the rest).

Predictions can come from arrays (:func:`group_accuracy`), a table or CSV/Parquet file
(:func:`audit_predictions`), a torch module or any callable over a ``datasets`` split
(:func:`predict`, :func:`audit_model`), geoaudit checkpoints (:func:`audit_checkpoints`) or
models by name on any dataset with a country column (:func:`audit_classifier`).
"""
from geoaudit.audit._compare import (
    ALTERNATIVES,
    TESTS,
    compare_many,
    compare_populations,
    holm,
    load_report,
    report_betas,
    report_seeds,
    t_test_pvalue,
)
from geoaudit.audit._external import GROUP_BY, audit_classifier, group_frame, predict_topk, resolve_model
from geoaudit.audit._gls import VARIANCES, f_test_pvalue, gls_test, sigma_for
from geoaudit.audit._groups import group_accuracy
from geoaudit.audit._population import audit_predictions, load_predictions
from geoaudit.audit._predict import (
    audit_checkpoints,
    audit_model,
    find_checkpoints,
    predict,
    predict_many,
    predictions_frame,
)
from geoaudit.audit._adjust import class_adjusted_accuracy
from geoaudit.audit._compare_results import CompareResult, MultiCompareResult, PopulationSummary, PopulationVerdict
from geoaudit.audit._results import AuditReport, GLSResult, Influence
from geoaudit.audit._verdict import mean_accuracy_table, mean_accuracy_variance, population_verdict


def write_report(report, out_dir, *, predictions=None, title=None):
    """Write ``report.json``, ``report.html`` and PNG figures into ``out_dir`` (see
    :func:`geoaudit.report.write_report`)."""
    from geoaudit.report import write_report as _write

    return _write(report, out_dir, predictions=predictions, title=title)


__all__ = [
    "GROUP_BY",
    "audit_classifier",
    "group_frame",
    "predict_topk",
    "resolve_model",
    "ALTERNATIVES",
    "TESTS",
    "VARIANCES",
    "AuditReport",
    "CompareResult",
    "GLSResult",
    "MultiCompareResult",
    "PopulationVerdict",
    "Influence",
    "PopulationSummary",
    "audit_checkpoints",
    "audit_model",
    "audit_predictions",
    "class_adjusted_accuracy",
    "compare_many",
    "compare_populations",
    "holm",
    "mean_accuracy_table",
    "mean_accuracy_variance",
    "population_verdict",
    "f_test_pvalue",
    "find_checkpoints",
    "gls_test",
    "group_accuracy",
    "load_predictions",
    "load_report",
    "predict",
    "predict_many",
    "predictions_frame",
    "report_betas",
    "report_seeds",
    "sigma_for",
    "t_test_pvalue",
    "write_report",
]
