"""Auditing a table of predictions: one GLS regression per model, and the population of betas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from geoaudit._errors import InputError
from geoaudit._validation import check_columns, check_interval, check_options
from geoaudit.audit._groups import _example_list, group_accuracy, pool_group_tables
from geoaudit.audit._gls import SENSITIVITY_CUTS, TAU2_METHODS, VARIANCES, gls_test
from geoaudit.audit._meta import DEFAULT_METHOD, DEFAULT_TAU2
from geoaudit.audit._adjust import adjusted_gls, class_adjusted_accuracy
from geoaudit.audit._compare_results import PopulationSummary
from geoaudit.audit._results import AuditReport
from geoaudit.audit._verdict import mean_accuracy_variance, population_verdict

DEFAULT_MODEL_COL = "model"
DEFAULT_ID_COL = "image_id"
SINGLE_MODEL = "model"


def _na_values(path, sep, text_cols):
    """pandas' missing-value strings for every column, except "NA" (Namibia's ISO code) etc. in
    ``text_cols``, whose only missing value is the empty field."""
    try:
        from pandas._libs.parsers import STR_NA_VALUES as default
    except ImportError:  # pragma: no cover - moved in a future pandas
        default = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                   "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
    columns = pd.read_csv(path, sep=sep, nrows=0).columns
    return {c: ([""] if c in text_cols else sorted(default)) for c in columns}


def load_predictions(path, *, text_columns=()) -> pd.DataFrame:
    """Read a predictions file: CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet (``.parquet``, ``.pq``).

    Parameters
    ----------
    path : str or Path
    text_columns : sequence of str, optional
        CSV columns read as text whose values "NA", "NULL", "None"... are data, not missing (a
        group column holding "NA", Namibia's ISO 3166 code); only an empty field is missing.

    Returns
    -------
    pandas.DataFrame
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Predictions file {str(path)!r} does not exist.")
    if path.is_dir():
        raise InputError(f"Expected a predictions file (CSV or Parquet), got the folder {str(path)!r}.")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else "," if name.endswith((".csv", ".csv.gz", ".txt")) \
            else None
        if sep is not None:
            columns = set(pd.read_csv(path, sep=sep, nrows=0).columns) if text_columns else set()
            text = [c for c in text_columns if c in columns]
            if not text:
                return pd.read_csv(path, sep=sep)
            return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=_na_values(path, sep, set(text)),
                               dtype={c: str for c in text})
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


def _check_duplicates(df, id_col, model_col, *, source, deduplicate):
    """Refuse (or, when asked, drop) rows that repeat an image for a model."""
    if id_col is None or id_col not in df.columns:
        return df, 0
    keys = [id_col] + ([model_col] if model_col else [])
    dup = df.duplicated(subset=keys, keep="first")
    k = int(dup.sum())
    if not k:
        return df, 0
    examples = _example_list(df.loc[dup, id_col].astype(str).unique(), k=3)
    if not deduplicate:
        per = " for one model" if model_col else ""
        raise InputError(
            f"{source}: {k} row(s) repeat an {id_col!r} already seen{per} (e.g. {examples}); each image would be "
            f"counted twice. Remove the duplicates"
            + (", check that two models do not share a name" if model_col else "")
            + ", or pass deduplicate=True to keep the first row of each.")
    cols = [c for c in df.columns if c not in keys]
    conflicting = df[df.duplicated(subset=keys, keep=False)].groupby(keys, sort=False)[cols].nunique(dropna=False)
    if (conflicting > 1).any(axis=None):
        raise InputError(f"{source}: {k} row(s) repeat an {id_col!r} with different values (e.g. {examples}); "
                         "they are not plain duplicates and cannot be dropped safely.")
    return df[~dup], k


def audit_predictions(df, *, group, covariate, label_col="label", pred_col="prediction", model_col=None,
                      min_group_size=50, variance=DEFAULT_METHOD, log_covariate=True, alpha=0.05,
                      source=None, model_info=None, drop_missing_covariate=False, tau2_method=DEFAULT_TAU2,
                      influence=True, sensitivity_cuts=SENSITIVITY_CUTS, id_col=DEFAULT_ID_COL,
                      deduplicate=False, adjust_classes=False) -> AuditReport:
    """Audit a table of predictions: per-group accuracy and the regression test, per model.

    Parameters
    ----------
    df : pandas.DataFrame or str or Path
        One row per (image, model) with the true label, the prediction, the group and the
        group's covariate; or the path of such a CSV/Parquet file (the group column is read as
        text, so "NA" is Namibia, not a missing value).
    group, covariate : str
        Columns holding the group (e.g. ``country_iso3``) and its covariate
        (e.g. ``gdp_per_capita_usd``; constant within a group).
    label_col, pred_col : str
        Columns of the true and predicted classes.
    model_col : str, optional
        Column naming the model of each row: one regression per model.  By default the column
        ``model`` is used when present; without it the whole table is one model.
    min_group_size, variance, log_covariate, alpha, tau2_method, influence, sensitivity_cuts
        As in :func:`gls_test` (default method: random-effects meta-regression).
    source : str, optional
        Where the predictions came from (recorded in the report).
    model_info : dict, optional
        Extra per-model fields for the report (e.g. checkpoint path, seed).
    drop_missing_covariate : bool, default False
        Drop rows whose covariate is missing (e.g. countries without World Bank GDP); groups
        left with no row are listed in ``settings["groups_without_covariate"]``, groups that
        kept some rows in ``settings["groups_partly_without_covariate"]``, and the number of
        rows dropped in ``settings["rows_without_covariate"]``.  By default they are an error.
    id_col : str or None, default "image_id"
        Column identifying an image; when present, an image repeated for one model is refused.
    deduplicate : bool, default False
        Keep the first of identical repeated rows instead (their count goes to
        ``settings["duplicate_rows_dropped"]``); repeats that disagree are always refused.

    Returns
    -------
    AuditReport

    Raises
    ------
    InputError
        Missing columns (naming those present), missing values, repeated images, and every
        error of :func:`gls_test` (prefixed with the model it concerns).
    """
    caller = "audit_predictions"
    if isinstance(df, (str, Path)):
        source = source or str(df)
        df = load_predictions(df, text_columns=(group,))
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{caller} expects a pandas DataFrame or a file path, got {type(df).__name__}.")
    min_group_size = check_interval("min_group_size", min_group_size, 1, None, caller=caller, integer=True)
    check_options("variance", variance, VARIANCES, caller=caller)
    check_options("tau2_method", tau2_method, TAU2_METHODS, caller=caller)
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
    df, n_dup = _check_duplicates(df, id_col, model_col, source=src, deduplicate=deduplicate)
    cov_missing = df[covariate].isna()
    no_cov, partly, n_missing = [], [], int(cov_missing.sum())
    if cov_missing.any():
        gcol = df[group].astype(str)
        groups_missing = sorted(gcol[cov_missing].unique())
        if not drop_missing_covariate:
            raise InputError(
                f"{src}: column {covariate!r} is missing (NaN) for {n_missing} row(s), in groups "
                f"{_example_list(groups_missing)}; remove those rows (e.g. countries without GDP data) or "
                "pass drop_missing_covariate=True."
            )
        with_value = set(gcol[~cov_missing].unique())
        no_cov = [g for g in groups_missing if g not in with_value]
        partly = [g for g in groups_missing if g in with_value]
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
        kw = dict(variance=variance, log_covariate=log_covariate, alpha=alpha, tau2_method=tau2_method,
                  influence=influence, sensitivity_cuts=sensitivity_cuts)
        try:
            if adjust_classes:
                table = class_adjusted_accuracy(*cols, covariate=part[covariate].to_numpy(),
                                                min_group_size=min_group_size, caller=caller)
                fit = adjusted_gls(table, min_group_size=min_group_size, **kw)
            else:
                table = group_accuracy(*cols, covariate=part[covariate].to_numpy(), caller=caller)
                fit = gls_test(table, min_group_size=min_group_size, **kw)
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
        "tau2_method": tau2_method,
        "alpha": alpha,
        "label_col": label_col,
        "pred_col": pred_col,
        "model_col": model_col,
        "adjust_classes": bool(adjust_classes),
    }
    if n_missing:
        settings["rows_without_covariate"] = n_missing
        settings["groups_without_covariate"] = no_cov
        settings["groups_partly_without_covariate"] = partly
    if n_dup:
        settings["duplicate_rows_dropped"] = n_dup
    return AuditReport(
        settings=settings,
        group_table=pooled,
        dropped_groups=tuple(dropped),
        fits=fits,
        model_group_tables=tables,
        population=PopulationSummary.from_fits(fits, verdict=population_verdict(
            {k: t[~t["group"].isin(dropped)] for k, t in tables.items()}, min_group_size=1,
            log_covariate=log_covariate, alpha=alpha, variance=variance,
            sampling_variance=None if adjust_classes else mean_accuracy_variance(
                parts, group=group, label_col=label_col, pred_col=pred_col))),
        source=source,
        model_info=dict(model_info or {}),
    )
