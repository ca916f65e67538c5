"""Auditing a table of predictions: one GLS regression per model, and the population of betas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns, check_interval, check_options
from geoaudit.audit._groups import _example_list, group_accuracy, pool_group_tables
from geoaudit.audit._adjust import adjusted_gls, class_adjusted_accuracy
from geoaudit.audit._gls import VARIANCES, gls_test
from geoaudit.audit._compare_results import PopulationSummary
from geoaudit.audit._results import AuditReport
from geoaudit.audit._verdict import mean_accuracy_variance, population_verdict

DEFAULT_MODEL_COL = "model"
SINGLE_MODEL = "model"


def load_predictions(path) -> pd.DataFrame:
    """Read a predictions file: CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet (``.parquet``, ``.pq``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Predictions file {str(path)!r} does not exist.")
    if path.is_dir():
        raise InputError(f"Expected a predictions file (CSV or Parquet), got the folder {str(path)!r}.")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".txt")):
            return pd.read_csv(path)
        if name.endswith((".tsv", ".tsv.gz")):
            return pd.read_csv(path, sep="\t")
    except Exception as e:  # pandas/pyarrow raise many types for a malformed file
        raise InputError(f"Could not read predictions file {str(path)!r}: {type(e).__name__}: {e}") from e
    raise InputError(
        f"Predictions file {str(path)!r} must be CSV (.csv, .csv.gz, .tsv) or Parquet (.parquet, .pq)."
    )


def _check_no_nan(df, cols, *, source):
    for col in cols:
        bad = df[col].isna()
        if bad.any():
            raise InputError(f"{source}: column {col!r} has {int(bad.sum())} missing (NaN) value(s) "
                             f"(first at row {int(np.flatnonzero(bad.to_numpy())[0])}); remove or fill them.")


def audit_predictions(df, *, group, covariate, label_col="label", pred_col="prediction", model_col=None,
                      min_group_size=50, variance="paper", log_covariate=True, alpha=0.05,
                      source=None, model_info=None, drop_missing_covariate=False,
                      adjust_classes=False) -> AuditReport:
    """Audit a table of predictions: per-group accuracy and the GLS test, per model.

    Parameters
    ----------
    df : pandas.DataFrame or str or Path
        One row per (image, model) with the true label, the prediction, the group and the
        group's covariate; or the path of such a CSV/Parquet file.
    group, covariate : str
        Columns holding the group (e.g. ``country_iso3``) and its covariate
        (e.g. ``gdp_per_capita_usd``; constant within a group).
    label_col, pred_col : str
        Columns of the true and predicted classes.
    model_col : str, optional
        Column naming the model of each row: one regression per model.  By default the column
        ``model`` is used when present; without it the whole table is one model.
    min_group_size, variance, log_covariate, alpha
        As in :func:`gls_test`.
    source : str, optional
        Where the predictions came from (recorded in the report).
    model_info : dict, optional
        Extra per-model fields for the report (e.g. checkpoint path, seed).
    drop_missing_covariate : bool, default False
        Drop rows whose covariate is missing (e.g. countries without World Bank GDP) and list
        their groups in ``settings["groups_without_covariate"]``; by default they are an error.
    adjust_classes : bool, default False
        Standardise each group's accuracy to the pooled class mix before the regression
        (:func:`class_adjusted_accuracy`), so that a class mix that varies with the covariate
        is not read as a covariate effect.

    Returns
    -------
    AuditReport

    Raises
    ------
    InputError
        Missing columns (naming those present), missing values, and every error of
        :func:`gls_test` (prefixed with the model it concerns).
    """
    caller = "audit_predictions"
    if isinstance(df, (str, Path)):
        source = source or str(df)
        df = load_predictions(df)
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{caller} expects a pandas DataFrame or a file path, got {type(df).__name__}.")
    min_group_size = check_interval("min_group_size", min_group_size, 1, None, caller=caller, integer=True)
    check_options("variance", variance, VARIANCES, caller=caller)
    alpha = check_interval("alpha", alpha, 0, 1, caller=caller, closed="neither")
    src = f"Predictions {source!r}" if source else "The predictions table"
    explicit_model = model_col is not None
    if model_col is None and DEFAULT_MODEL_COL in df.columns:
        model_col = DEFAULT_MODEL_COL
    required = [label_col, pred_col, group, covariate] + ([model_col] if model_col else [])
    check_columns(list(df.columns), list(dict.fromkeys(required)), source=src)
    if len(df) == 0:
        raise InputError(f"{src} has no rows.")
    _check_no_nan(df, [label_col, pred_col, group] + ([model_col] if model_col else []), source=src)
    cov_missing = df[covariate].isna()
    no_cov = []
    if cov_missing.any():
        groups_missing = sorted(df.loc[cov_missing, group].astype(str).unique())
        if not drop_missing_covariate:
            raise InputError(
                f"{src}: column {covariate!r} is missing (NaN) for {int(cov_missing.sum())} row(s), in groups "
                f"{_example_list(groups_missing)}; remove those rows (e.g. countries without GDP data) or "
                "pass drop_missing_covariate=True (--drop-missing-covariate)."
            )
        no_cov = groups_missing
        df = df[~cov_missing]
        if len(df) == 0:
            raise InputError(f"{src}: column {covariate!r} is missing in every row.")
    if not pd.api.types.is_numeric_dtype(df[covariate]):
        raise InputError(f"{src}: column {covariate!r} must be numeric, got dtype {df[covariate].dtype}.")

    if model_col:
        names = pd.unique(df[model_col].astype(str))
        parts = {name: df[df[model_col].astype(str) == name] for name in names}
    else:
        parts = {SINGLE_MODEL: df}

    tables, fits = {}, {}
    for name, part in parts.items():
        cols = (part[label_col].to_numpy(), part[pred_col].to_numpy(), part[group].to_numpy())
        try:
            if adjust_classes:
                table = class_adjusted_accuracy(*cols, covariate=part[covariate].to_numpy(),
                                                min_group_size=min_group_size, caller=caller)
                fit = adjusted_gls(table, min_group_size=min_group_size, variance=variance,
                                   log_covariate=log_covariate, alpha=alpha)
            else:
                table = group_accuracy(*cols, covariate=part[covariate].to_numpy(), caller=caller)
                fit = gls_test(table, min_group_size=min_group_size, variance=variance,
                               log_covariate=log_covariate, alpha=alpha)
        except InputError as e:
            if len(parts) > 1 or explicit_model:
                raise InputError(f"model {name!r}: {e}") from e
            raise
        tables[name], fits[name] = table, fit

    pooled = pool_group_tables(tables)
    dropped = sorted(set().union(*(f.dropped_groups for f in fits.values())))
    pooled["dropped"] = pooled["group"].isin(dropped)
    settings = {
        "group": group,
        "covariate": covariate,
        "log_covariate": bool(log_covariate),
        "min_group_size": min_group_size,
        "variance": variance,
        "alpha": alpha,
        "label_col": label_col,
        "pred_col": pred_col,
        "model_col": model_col,
        "adjust_classes": bool(adjust_classes),
    }
    if no_cov:
        settings["groups_without_covariate"] = no_cov
    return AuditReport(
        settings=settings,
        groups=pooled,
        dropped_groups=tuple(dropped),
        fits=fits,
        model_groups=tables,
        population=PopulationSummary.from_fits(fits, verdict=population_verdict(
            {k: t[~t["group"].isin(dropped)] for k, t in tables.items()}, min_group_size=1,
            log_covariate=log_covariate, alpha=alpha, variance=variance,
            sampling_variance=None if adjust_classes else mean_accuracy_variance(
                parts, group=group, label_col=label_col, pred_col=pred_col))),
        source=source,
        model_info=dict(model_info or {}),
    )
