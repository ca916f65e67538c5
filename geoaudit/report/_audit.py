"""The audit and comparison reports: report.json, a self-contained report.html and PNG figures.

Everything is rendered in memory first and written (atomically, file by file) only once all of
it succeeded, so a failure never leaves a half-written report.
"""
from __future__ import annotations

import logging
from html import escape
from pathlib import Path

from geoaudit._io import atomic_write_bytes, atomic_write_text, to_json
from geoaudit.report._html import (
    fig_to_png,
    figure_html,
    html_page,
    link_html,
    paragraph,
    png_to_data_uri,
    pre,
    section,
    table_html,
)
from geoaudit.report._plots import (
    beta_axis_label,
    covariate_label,
    looks_like_iso3,
    plot_accuracy_vs_covariate,
    plot_beta_distributions,
    plot_model_betas,
    plot_world_map,
    regressor_label,
)

log = logging.getLogger(__name__)

_METHOD = (
    "For each group i (n_i images, accuracy p_i, covariate g_i) the audit fits p_i = intercept + beta * {reg} "
    "+ e_i and tests H0: beta = 0 against beta != 0 with an F-test on (1, m - 2) degrees of freedom for m "
    "groups (section 4 of the paper). Method: {method}. Groups with fewer than {k} images are dropped. A "
    "population of models trained alike gives one beta per model; compare populations with 'geoaudit compare'."
)


def _verdict(report) -> tuple[str, str]:
    s = report.settings
    fits = report.fits
    reg = f"ln({s['covariate']})" if s["log_covariate"] else s["covariate"]
    by = f" (method: {s['variance']})"
    if len(fits) == 1:
        f = next(iter(fits.values()))
        direction = "rises" if f.beta > 0 else "falls"
        fragile = ""
        if f.influence is not None and f.influence.fragile:
            fragile = " Caution, the verdict is fragile: " + "; ".join(f.influence.warnings()) + "."
        if f.significant:
            return "reject", (
                f"Accuracy {direction} with {reg}: beta = {f.beta:.4g} per unit, F(1, {f.df_denom}) = "
                f"{f.fvalue:.4g}, p = {f.pvalue:.3g} < {f.alpha:g}{by}. H0 (no linear relationship) is "
                "rejected: by this test the model is not group-fair." + fragile
            )
        return "keep", (
            f"No significant linear relationship between accuracy and {reg}: beta = {f.beta:.4g}, "
            f"F(1, {f.df_denom}) = {f.fvalue:.4g}, p = {f.pvalue:.3g} >= {f.alpha:g}{by}." + fragile
        )
    return report.population.verdict_sentence()


def _influence_section(report):
    """Leave-one-group-out and min_group_size sensitivity, per model."""
    from html import escape as escape_text

    body = paragraph(
        "Each model is refitted without each group in turn, and at several min_group_size cuts. A verdict "
        "that flips when one group is left out, or at another cut, hinges on that group or on the cut and "
        "should not be reported without it.")
    rows = []
    for name, fit in report.fits.items():
        inf = fit.influence
        if inf is None:
            continue
        rows.append({"model": name, "verdict": "reject" if fit.significant else "keep",
                     "max |change of beta|": inf.max_change, "by leaving out": inf.max_change_group,
                     "groups that flip it": ", ".join(inf.flipping_groups) or "none",
                     "flips with the cut": inf.hinges_on_cut})
    if not rows:
        return None
    body += table_html(rows)
    warn = report.warnings()
    if warn:
        body += f'<p class="verdict reject">Fragile: {escape_text("; ".join(warn))}</p>'
    else:
        body += '<p class="verdict keep">Robust: no single group and no cut flips any verdict.</p>'
    first_name, first = next(iter(report.fits.items()))
    if first.influence is not None:
        cuts = first.influence.by_cut
        body += paragraph(f"By min_group_size{' (model ' + first_name + ')' if len(report.fits) > 1 else ''}:")
        body += table_html(cuts.to_dict("records"))
        loo = first.influence.leave_one_out
        loo = loo.assign(change=(loo["beta"] - first.beta).abs()).sort_values("change", ascending=False)
        body += ("<details><summary>leave-one-group-out refits, largest change first</summary>"
                 + table_html(loo.to_dict("records"), max_rows=60) + "</details>")
    return section("Influence and sensitivity", body)


SOFTWARE = ("geoaudit", "torch", "datasets", "statsmodels", "scipy", "numpy", "pandas", "matplotlib")


def software_versions() -> dict:
    """Versions of geoaudit, Python and the libraries behind a report (None when not installed).

    Returns
    -------
    dict of str -> str or None
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    if out["geoaudit"] is None:
        import geoaudit

        out["geoaudit"] = getattr(geoaudit, "__version__", None)
    return out


def _group_years(report, predictions):
    """Group -> year of its covariate (a range "2019-2022" when images disagree), from a per-image table."""
    if predictions is None or not hasattr(predictions, "columns"):
        return {}
    s = report.settings
    cov = str(s["covariate"])
    cands = ["gdp_year"] if cov.startswith("gdp") else []
    cands += [f"{cov}_year", cov.rsplit("_", 1)[0] + "_year"]
    col = next((c for c in cands if c in predictions.columns), None)
    if col is None or s["group"] not in predictions.columns:
        return {}
    out = {}
    for g, years in predictions[[s["group"], col]].dropna().groupby(s["group"])[col]:
        lo, hi = int(years.min()), int(years.max())
        out[str(g)] = str(lo) if lo == hi else f"{lo}-{hi}"
    return out


def _snapshot_years(groups, settings):
    """Group -> year for ISO3 groups whose GDP per capita is the shipped World Bank snapshot's value
    (to 1e-4): the year is then known even when the input did not carry it."""
    if not str(settings["covariate"]).startswith("gdp") or not looks_like_iso3(groups["group"]):
        return {}
    import numpy as np

    from geoaudit.data import gdp_per_capita

    wb = gdp_per_capita()
    out = {}
    for g, c in zip(groups["group"].astype(str), groups["covariate"].astype(float)):
        if g in wb.index:
            v, y = wb.at[g, "gdp_per_capita_usd"], wb.at[g, "gdp_year"]
            if np.isfinite(v) and np.isfinite(y) and np.isclose(c, float(v), rtol=1e-4, atol=0.01):
                out[g] = f"{int(y)} (World Bank)"
    return out


def _covariate_years(report):
    """The covariate's year(s) for the whole report when it says so (model_info, source), else None."""
    import re

    for info in report.model_info.values():
        y = info.get("covariate_years") if hasattr(info, "get") else None
        if y:
            return str(y)
    m = re.search(r"years? (\d{4}(?:-\d{4})?)", str(report.source or ""))
    return m.group(1) if m else None


def country_table(report, predictions=None):
    """One row per group: covariate (and its year), images per model, each model's accuracy.

    ``n`` counts one model's images (never summed over models); a group is dropped when any
    model has fewer than ``min_group_size`` images in it, as in the fit.

    Parameters
    ----------
    report : AuditReport
    predictions : pandas.DataFrame, optional
        The per-image table; a ``gdp_year`` (or ``<covariate>_year``) column gives each group's year.

    Returns
    -------
    pandas.DataFrame
        Columns group, covariate, year, n (images per model; the smallest when models differ),
        n_max, accuracy (mean over models), dropped, and one ``accuracy: <model>`` column per model.
    """
    import pandas as pd

    tables = report.model_groups
    frames = []
    for name, t in tables.items():
        frames.append(t[["group", "n", "accuracy", "covariate"]].assign(model=str(name)))
    long = pd.concat(frames, ignore_index=True)
    long["group"] = long["group"].astype(str)
    out = long.groupby("group", sort=False).agg(covariate=("covariate", "first"), n=("n", "min"),
                                                n_max=("n", "max"), accuracy=("accuracy", "mean")).reset_index()
    wide = long.pivot_table(index="group", columns="model", values="accuracy", aggfunc="first")
    for name in tables:
        out[f"accuracy: {name}"] = out["group"].map(wide[str(name)]) if str(name) in wide else float("nan")
    dropped = {str(g) for g in report.dropped_groups}
    out["dropped"] = out["group"].isin(dropped)
    years = _group_years(report, predictions)
    whole = _covariate_years(report)
    if not years and not whole:
        years = _snapshot_years(long.drop_duplicates("group"), report.settings)
    out["year"] = out["group"].map(years) if years else (whole or "")
    out["year"] = out["year"].fillna(whole or "")
    return out.sort_values("covariate", kind="stable").reset_index(drop=True)


def _country_section(report, table, k, base=None):
    s = report.settings
    cov = covariate_label(s["covariate"])
    many = len(report.fits) > 1
    show_models = len(report.fits) <= 12
    has_year = bool(table["year"].astype(bool).any())
    rows = []
    for r in table.to_dict("records"):
        row = {s["group"]: r["group"], cov: r["covariate"]}
        if has_year:
            row[f"{cov}: year"] = r["year"] or "not given"
        row.update({
               "images" + (" per model" if many else ""): int(r["n"]) if r["n"] == r["n_max"]
               else f"{int(r['n'])}-{int(r['n_max'])}"})
        if many:
            row["mean accuracy"] = r["accuracy"]
        if show_models or not many:
            for name in report.fits:
                row[f"accuracy: {name}" if many else "accuracy"] = r[f"accuracy: {name}"]
        else:
            accs = [r[f"accuracy: {name}"] for name in report.fits]
            row["lowest accuracy"], row["highest accuracy"] = min(accs), max(accs)
        row["in the fit"] = not r["dropped"]
        rows.append(row)
    n_drop = int(table["dropped"].sum())
    head = paragraph(
        f"{len(table)} groups: {len(table) - n_drop} in the fit, {n_drop} dropped for having fewer than {k} "
        f"images{' for a model' if many else ''} (greyed). 'images' counts the test images of the group"
        + (", once per model, not summed over models" if many else "")
        + f"; {cov} as given to the audit" + ("" if has_year else " (the input gave no year for it)") + ".")
    body = head + '<div class="scroll">' + table_html(rows, muted=lambda r: not r["in the fit"]) + "</div>"
    if many and not show_models:
        import pandas as pd

        per_model = pd.DataFrame({"group": table["group"],
                                  **{str(n): table[f"accuracy: {n}"] for n in report.fits}})
        body += ("<details><summary>accuracy of every model</summary><div class=\"scroll\">"
                 + table_html(per_model) + "</div></details>")
    what = "country" if looks_like_iso3(table["group"]) else "group"
    return section(f"Per-{what} results ({len(table)}; {n_drop} dropped)", body, anchor="groups")


def render_audit(report, *, title=None, predictions=None, base=None):
    """Render an :class:`AuditReport`: ``(html, figures)`` with figures a dict file name -> PNG bytes.

    Parameters
    ----------
    report : AuditReport
    title : str, optional
    predictions : pandas.DataFrame, optional
        The per-image table, for each group's covariate year.
    base : str or Path, optional
        The folder the page will be written to: file paths in it become links relative to it.

    Returns
    -------
    (str, dict of str -> bytes)
    """
    from geoaudit.audit._results import ASSUMPTIONS, WHY_NOT_PAPER
    from geoaudit.report._plots import plot_dispersion

    s = report.settings
    k = s["min_group_size"]
    model_groups = report.model_groups
    many = len(report.fits) > 1
    table = country_table(report, predictions)
    shown = table[["group", "n", "accuracy", "covariate", "dropped"]]
    n_drop = int(table["dropped"].sum())
    reg = regressor_label(s["covariate"], s["log_covariate"])
    unit = beta_axis_label(s["covariate"], s["log_covariate"])
    figs = {}
    fig = plot_accuracy_vs_covariate(
        shown, dict(report.fits), log_covariate=s["log_covariate"], covariate_label=s["covariate"],
        title=f"{'Mean accuracy' if many else 'Accuracy'} per {s['group']} against {covariate_label(s['covariate'])}")
    figs["accuracy_vs_covariate.png"] = fig_to_png(fig)
    figs["dispersion.png"] = fig_to_png(plot_dispersion(model_groups, dict(report.fits)))
    iso = looks_like_iso3(table["group"])
    if iso:
        figs["world_map.png"] = fig_to_png(plot_world_map(
            shown, value="accuracy", label="accuracy" + (" (mean)" if many else ""),
            min_group_size=k, title="Accuracy by country" + (" (mean over models)" if many else "")))
    if many:
        figs["model_betas.png"] = fig_to_png(plot_model_betas(dict(report.fits), xlabel=unit))
        figs["betas.png"] = fig_to_png(plot_beta_distributions({"this population": list(report.betas.values())},
                                                               ylabel=unit))

    cls, verdict = _verdict(report)
    method_note = paragraph(f"Method: {report.method_description}.") + (
        paragraph(WHY_NOT_PAPER) if s["variance"] != "paper" else
        paragraph("This is the paper's method. It ignores between-country heterogeneity and is miscalibrated "
                  "when countries scatter around the line (docs/audit.md, Calibration); the default "
                  "variance='random-effects' is not."))
    secs = [section("Result", f'<p class="verdict {cls}">{verdict}</p>'
                    + paragraph(f"beta is in accuracy (a fraction, 0 to 1) per unit of {reg}"
                                + (f": by the fit, each e-fold (2.7 times) higher {covariate_label(s['covariate'])} "
                                   "goes with beta more accuracy." if s["log_covariate"] else "."))
                    + method_note + pre(report.summary()), anchor="result")]
    uri = {name: png_to_data_uri(v) for name, v in figs.items()}
    secs.append(section("Accuracy against the covariate", figure_html(
        uri["accuracy_vs_covariate.png"], alt="accuracy against covariate",
        caption=f"Each filled dot is one of the {len(table) - n_drop} {s['group']} groups in the fit, sized and "
                f"coloured by its number of test images{' (per model)' if many else ''}"
                + (f"; mean accuracy over the {len(report.fits)} models" if many else "")
                + f". The {n_drop} hollow grey dots are groups with fewer than {k} images: shown, not fitted "
                  "(their accuracy rests on too few images). "
                + ("Thin grey lines: one fit per model; bold: the mean line." if many else
                   "The line is the fit over the groups it used, with its pointwise confidence band.")
                + " The accuracy axis follows the points within [0, 1]; the line is clipped to it."),
        anchor="scatter"))
    if iso:
        secs.append(section("World map", figure_html(
            uri["world_map.png"], alt="world map of accuracy",
            caption=f"Accuracy per country for the {len(table) - n_drop} countries in the fit (Natural Earth 1:110m). "
                    f"The {n_drop} countries with fewer than {k} images are painted one neutral 'too few images' "
                    "colour, not by their accuracy; light grey: no images."), anchor="map"))
    models = report.to_dict()["models"]
    cols = ["model", "beta", "bse", "ci_low", "ci_high", "intercept", "fvalue", "df_denom",
            "pvalue", "significant", "tau2", "i2", "n_groups", "n_images"]
    extra = [c for c in ("seed", "method", "arch") if any(c in m for m in models)]
    body = paragraph(f"beta and its confidence interval (ci_low, ci_high) in accuracy per unit of {reg}; bse its "
                     "standard error; fvalue the F statistic on (1, df_denom) degrees of freedom; n_images "
                     "the model's test images in the groups it used.")
    body += '<div class="scroll">' + table_html(models, columns=cols + extra) + "</div>"
    if many:
        body += paragraph(report.population.summary())
        body += figure_html(uri["model_betas.png"], alt="beta per model",
                            caption="Each model's beta with its confidence interval; red: the model's own test "
                                    "rejects beta = 0.")
        body += figure_html(uri["betas.png"], alt="beta distribution",
                            caption="Distribution of beta over the population. Dots: one model each; box: the "
                                    "middle half of the betas (25th to 75th percentile); red line: median; dotted "
                                    "line: mean; whiskers: the furthest beta within 1.5 box lengths of the box.")
    secs.append(section("Models" if many else "Regression", body, anchor="models"))
    infl = _influence_section(report)
    if infl is not None:
        secs.append(infl)
    het_rows = [{"model": name, "tau2": f.tau2, "tau2 estimator": f.tau2_method, "I2 (%)": f.i2, "Q": f.q,
                 "Q df": f.q_df, "Q p-value": f.q_pvalue} for name, f in report.fits.items()]
    secs.append(section("Dispersion", paragraph(
        "tau^2 is the between-group variance of true accuracy that the covariate does not explain; I^2 the share "
        "of the residual variance it makes up; Q tests H0: tau^2 = 0. Standardized residuals (residual / "
        "sqrt(v_i + tau^2)) should scatter within about +-2 at every n; a funnel or a trend shows misfit.")
        + table_html(het_rows, max_rows=40)
        + figure_html(uri["dispersion.png"], alt="standardized residuals against n",
                      caption="Standardized residuals against images per group (dashed: +-2)."), anchor="dispersion"))
    secs.append(_country_section(report, table, k, base))
    settings_rows = [{"setting": key, "value": "" if v is None else str(v)} for key, v in s.items()]
    src = ""
    if report.source:
        src_path = Path(str(report.source))
        if base is not None and src_path.exists():
            src = f"<p>Predictions: {link_html(src_path, base)}</p>"
        else:
            settings_rows.insert(0, {"setting": "source", "value": str(report.source)})
    assumptions = "<ul>" + "".join(f"<li>{escape(a)}</li>" for a in ASSUMPTIONS) + (
        f"<li>Between-group variance tau^2 estimated by {s.get('tau2_method', 'REML')} "
        f"({'used in the weights' if s['variance'] == 'random-effects' else 'reported only; the method ignores it'}).</li>"
        f"<li>Groups with fewer than {k} images are left out of every test; the influence section shows what "
        "other cuts give.</li></ul>")
    tests = ("<ul><li><b>Per model</b>: " + escape(_METHOD.format(reg=reg, method=report.method_description, k=k))
             + "</li><li><b>Heterogeneity</b>: Cochran's Q on m - 2 degrees of freedom tests tau^2 = 0; I^2 = "
             "(Q - df) / Q.</li><li><b>Influence</b>: each group left out in turn and the fit redone; the same "
             "test at other min_group_size cuts.</li>"
             + ("<li><b>Population</b>: the same test on each group's accuracy averaged over the models "
                "(groups every model kept); the per-model count of rejections is shown, not used as a verdict.</li>"
                if many else "") + "</ul>")
    secs.append(section("Method, assumptions and settings",
                        paragraph("Tests:") + tests + paragraph("Assumptions:") + assumptions
                        + src + table_html(settings_rows), anchor="method"))
    versions = software_versions()
    secs.append(section("Software", paragraph("The versions that produced this report.")
                        + table_html([{"package": name, "version": v or "not installed"}
                                      for name, v in versions.items()]), anchor="software"))
    html = html_page(title or "geoaudit: geographic fairness audit", secs,
                     subtitle=f"accuracy by {s['group']} against {reg}, {len(report.fits)} model(s), "
                              f"method {s['variance']}")
    return html, figs


def report_dict(report, *, predictions=None, base=None) -> dict:
    """What ``report.json`` holds: :meth:`AuditReport.to_dict` with per-model group tables, the
    software versions, and the source path relative to the report's folder.

    Parameters
    ----------
    report : AuditReport
    predictions : pandas.DataFrame, optional
        For each group's covariate year.
    base : str or Path, optional
        The report's folder.

    Returns
    -------
    dict
    """
    import os

    from geoaudit._results import json_safe

    data = report.to_dict()
    table = country_table(report, predictions)
    years = dict(zip(table["group"], table["year"]))
    data["model_groups"] = {}
    for name, t in report.model_groups.items():
        recs = json_safe(t[["group", "n", "correct", "accuracy", "covariate"]])
        for r in recs:
            r["covariate_year"] = years.get(str(r["group"])) or None
            r["dropped"] = str(r["group"]) in set(map(str, report.dropped_groups))
        data["model_groups"][str(name)] = recs
    data["groups_note"] = ("'groups' pools every model's predictions (n summed over models); 'model_groups' "
                           "holds each model's own n and accuracy.")
    data["software"] = software_versions()
    def relative(value):
        """A path that exists, relative to the report's folder; anything else as it was."""
        if not value or base is None or not isinstance(value, str) or not Path(value).exists():
            return value
        try:
            return os.path.relpath(Path(value).resolve(), Path(base).resolve()).replace(os.sep, "/")
        except ValueError:  # another drive on Windows
            return value

    data["source"] = relative(report.source)
    for m in data["models"]:
        if "checkpoint" in m:
            m["checkpoint"] = relative(m["checkpoint"])
    data["paths_relative_to"] = "the folder holding this report.json"
    return data


def write_report(report, out_dir, *, predictions=None, title=None) -> dict:
    """Write ``report.json``, ``report.html`` and the PNG figures into ``out_dir``.

    Parameters
    ----------
    report : AuditReport
    out_dir : str or Path
        Created when missing.  Nothing is written unless every file rendered.
    predictions : pandas.DataFrame, optional
        Also written as ``predictions.parquet`` (to re-audit with other settings).

    Returns
    -------
    dict of str -> Path
        What was written (keys json, html, predictions and the figure names).
    """
    import io

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        from geoaudit._errors import InputError

        raise InputError(f"The report folder {str(out)!r} is a file; pass a folder for the report.")
    json_text = to_json(report_dict(report, predictions=predictions, base=out)) + "\n"
    html, figs = render_audit(report, title=title, predictions=predictions, base=out)
    pq = None
    if predictions is not None:
        buf = io.BytesIO()
        predictions.to_parquet(buf, index=False)
        pq = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, png in figs.items():
        atomic_write_bytes(out / name, png)
        written[name] = out / name
    if pq is not None:
        atomic_write_bytes(out / "predictions.parquet", pq)
        written["predictions"] = out / "predictions.parquet"
    atomic_write_text(out / "report.html", html)
    atomic_write_text(out / "report.json", json_text)  # last: its presence means a complete report
    written["html"], written["json"] = out / "report.html", out / "report.json"
    log.debug("wrote %s", out)
    return written
