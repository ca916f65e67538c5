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
    figure_html,
    fig_to_png,
    html_page,
    paragraph,
    png_to_data_uri,
    pre,
    section,
    table_html,
)
from geoaudit.report._plots import (
    looks_like_iso3,
    plot_accuracy_vs_covariate,
    plot_beta_distributions,
    plot_model_betas,
    plot_world_map,
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


def render_audit(report, *, title=None):
    """Render an :class:`AuditReport`: ``(html, figures)`` with figures a dict file name -> PNG bytes."""
    from geoaudit.audit._results import ASSUMPTIONS, WHY_NOT_PAPER
    from geoaudit.report._plots import plot_dispersion

    s = report.settings
    groups = report.groups
    model_groups = report.model_groups
    figs = {}
    fig = plot_accuracy_vs_covariate(
        groups if len(report.fits) > 1 else next(iter(model_groups.values())).assign(
            dropped=lambda t: t["group"].isin(report.dropped_groups)),
        dict(report.fits), log_covariate=s["log_covariate"], covariate_label=s["covariate"],
        title=f"Accuracy per {s['group']} against {s['covariate']}")
    figs["accuracy_vs_covariate.png"] = fig_to_png(fig)
    figs["dispersion.png"] = fig_to_png(plot_dispersion(model_groups, dict(report.fits)))
    iso = looks_like_iso3(groups["group"])
    if iso:
        figs["world_map.png"] = fig_to_png(plot_world_map(
            groups, value="accuracy", label="accuracy",
            title="Accuracy by country" + (" (pooled over models)" if len(report.fits) > 1 else "")))
    if len(report.fits) > 1:
        figs["model_betas.png"] = fig_to_png(plot_model_betas(dict(report.fits)))
        figs["betas.png"] = fig_to_png(plot_beta_distributions({"this population": list(report.betas.values())}))

    cls, verdict = _verdict(report)
    reg = f"ln({s['covariate']})" if s["log_covariate"] else s["covariate"]
    method_note = paragraph(f"Method: {report.method_description}.") + (
        paragraph(WHY_NOT_PAPER) if s["variance"] != "paper" else
        paragraph("This is the paper's method. It ignores between-country heterogeneity and is miscalibrated "
                  "when countries scatter around the line (docs/audit.md, Calibration); the default "
                  "variance='random-effects' is not."))
    secs = [section("Result", f'<p class="verdict {cls}">{verdict}</p>' + method_note + pre(report.summary()))]
    uri = {k: png_to_data_uri(v) for k, v in figs.items()}
    secs.append(section("Accuracy against the covariate", figure_html(
        uri["accuracy_vs_covariate.png"], alt="accuracy against covariate",
        caption="Each dot is a group, sized and coloured by its number of images; the line is the fit"
                + (" (thin lines: one per model; bold: the mean line)." if len(report.fits) > 1 else
                   " with its pointwise confidence band."))))
    if iso:
        secs.append(section("World map", figure_html(uri["world_map.png"], alt="world map of accuracy",
                                                     caption="Accuracy per country (Natural Earth 1:110m).")))
    models = report.to_dict()["models"]
    cols = ["model", "beta", "bse", "ci_low", "ci_high", "intercept", "fvalue", "df_num", "df_denom",
            "pvalue", "significant", "tau2", "i2", "n_groups", "n_images"]
    extra = [c for c in ("seed", "method", "arch") if any(c in m for m in models)]
    body = table_html(models, columns=cols + extra)
    if len(report.fits) > 1:
        body += paragraph(report.population.summary())
        body += figure_html(uri["model_betas.png"], alt="beta per model",
                            caption="Each model's beta with its confidence interval.")
        body += figure_html(uri["betas.png"], alt="beta distribution",
                            caption="Distribution of beta over the population (box: quartiles; dotted: mean).")
    secs.append(section("Models" if len(report.fits) > 1 else "Regression", body))
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
                      caption="Standardized residuals against images per group.")))
    gcols = ["group", "n", "correct", "accuracy", "covariate", "n_models", "dropped"]
    secs.append(section(
        f"Groups ({len(groups)}; {len(report.dropped_groups)} dropped)",
        "<details open><summary>per-group accuracy, pooled over models (dropped groups greyed)</summary>"
        + table_html(groups.sort_values("covariate").to_dict("records"), columns=gcols,
                     muted=lambda r: bool(r.get("dropped")))
        + "</details>"))
    settings_rows = [{"setting": k, "value": "" if v is None else str(v)} for k, v in s.items()]
    if report.source:
        settings_rows.insert(0, {"setting": "source", "value": str(report.source)})
    assumptions = "<ul>" + "".join(f"<li>{escape(a)}</li>" for a in ASSUMPTIONS) + (
        f"<li>Between-group variance tau^2 estimated by {s.get('tau2_method', 'REML')} "
        f"({'used in the weights' if s['variance'] == 'random-effects' else 'reported only; the method ignores it'}).</li>"
        "</ul>")
    secs.append(section("Method, assumptions and settings",
                        paragraph(_METHOD.format(reg=reg, method=report.method_description, k=s["min_group_size"]))
                        + paragraph("Assumptions:") + assumptions
                        + table_html(settings_rows)))
    html = html_page(title or "geoaudit: geographic fairness audit", secs,
                     subtitle=f"accuracy by {s['group']} against {reg}, {len(report.fits)} model(s), "
                              f"method {s['variance']}")
    return html, figs


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
    json_text = to_json(report.to_dict()) + "\n"
    html, figs = render_audit(report, title=title)
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
