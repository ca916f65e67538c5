"""The audit and comparison reports: report.json, a self-contained report.html and PNG figures.

Everything is rendered in memory first and written (atomically, file by file) only once all of
it succeeded, so a failure never leaves a half-written report.
"""
from __future__ import annotations

import logging
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
    "For each group i (n_i images, accuracy p_i, covariate g_i) the audit fits by generalized least "
    "squares p_i = intercept + beta * {reg} + e_i with error covariance {sigma}, and tests "
    "H0: beta = 0 against beta != 0 with an F-test on (1, m - 2) degrees of freedom for m groups "
    "(section 4 of the paper). Groups with fewer than {k} images are dropped. A population of models "
    "trained alike gives one beta per model; compare populations with 'geoaudit compare'."
)


def _verdict(report) -> tuple[str, str]:
    s = report.settings
    fits = report.fits
    reg = f"ln({s['covariate']})" if s["log_covariate"] else s["covariate"]
    if len(fits) == 1:
        f = next(iter(fits.values()))
        direction = "rises" if f.beta > 0 else "falls"
        if f.significant:
            return "reject", (
                f"Accuracy {direction} with {reg}: beta = {f.beta:.4g} per unit, F(1, {f.df_denom}) = "
                f"{f.f_stat:.4g}, p = {f.p_value:.3g} < {f.alpha:g}. H0 (no linear relationship) is "
                "rejected: by this test the model is not group-fair."
            )
        return "keep", (
            f"No significant linear relationship between accuracy and {reg}: beta = {f.beta:.4g}, "
            f"F(1, {f.df_denom}) = {f.f_stat:.4g}, p = {f.p_value:.3g} >= {f.alpha:g}."
        )
    return report.population.verdict_sentence()


def render_audit(report, *, title=None):
    """Render an :class:`AuditReport`: ``(html, figures)`` with figures a dict file name -> PNG bytes."""
    s = report.settings
    figs = {}
    fig = plot_accuracy_vs_covariate(
        report.groups if len(report.fits) > 1 else next(iter(report.model_groups.values())).assign(
            dropped=lambda t: t["group"].isin(report.dropped_groups)),
        report.fits, log_covariate=s["log_covariate"], covariate_label=s["covariate"],
        title=f"Accuracy per {s['group']} against {s['covariate']}")
    figs["accuracy_vs_covariate.png"] = fig_to_png(fig)
    iso = looks_like_iso3(report.groups["group"])
    if iso:
        figs["world_map.png"] = fig_to_png(plot_world_map(
            report.groups, value="accuracy", label="accuracy",
            title="Accuracy by country" + (" (pooled over models)" if len(report.fits) > 1 else "")))
    if len(report.fits) > 1:
        figs["model_betas.png"] = fig_to_png(plot_model_betas(report.fits))
        figs["betas.png"] = fig_to_png(plot_beta_distributions({"this population": list(report.betas.values())}))

    cls, verdict = _verdict(report)
    reg = f"ln({s['covariate']})" if s["log_covariate"] else s["covariate"]
    sigma = ("diag(1/sqrt(n_i)), the paper's choice" if s["variance"] == "paper"
             else "diag(p_i(1-p_i)/n_i), the binomial variance, with p_i = (correct_i+0.5)/(n_i+1)")
    secs = [section("Result", f'<p class="verdict {cls}">{verdict}</p>' + pre(report.summary()))]
    uri = {k: png_to_data_uri(v) for k, v in figs.items()}
    secs.append(section("Accuracy against the covariate", figure_html(
        uri["accuracy_vs_covariate.png"], alt="accuracy against covariate",
        caption="Each dot is a group, sized and coloured by its number of images; the line is the GLS fit"
                + (" (thin lines: one per model; bold: the mean line)." if len(report.fits) > 1 else
                   " with its pointwise confidence band."))))
    if iso:
        secs.append(section("World map", figure_html(uri["world_map.png"], alt="world map of accuracy",
                                                     caption="Accuracy per country (Natural Earth 1:110m).")))
    models = report.to_dict()["models"]
    cols = ["model", "beta", "se", "ci_low", "ci_high", "intercept", "f_stat", "df_num", "df_denom",
            "p_value", "significant", "n_groups", "n_images"]
    extra = [c for c in ("seed", "method", "arch") if any(c in m for m in models)]
    body = table_html(models, columns=cols + extra)
    if len(report.fits) > 1:
        body += paragraph(report.population.summary())
        body += figure_html(uri["model_betas.png"], alt="beta per model",
                            caption="Each model's beta with its confidence interval.")
        body += figure_html(uri["betas.png"], alt="beta distribution",
                            caption="Distribution of beta over the population (box: quartiles; dotted: mean).")
    secs.append(section("Models" if len(report.fits) > 1 else "Regression", body))
    gcols = ["group", "n", "correct", "accuracy", "covariate", "n_models", "dropped"]
    secs.append(section(
        f"Groups ({len(report.groups)}; {len(report.dropped_groups)} dropped)",
        "<details open><summary>per-group accuracy, pooled over models (dropped groups greyed)</summary>"
        + table_html(report.groups.sort_values("covariate").to_dict("records"), columns=gcols,
                     muted=lambda r: bool(r.get("dropped")))
        + "</details>"))
    settings_rows = [{"setting": k, "value": "" if v is None else str(v)} for k, v in s.items()]
    if report.source:
        settings_rows.insert(0, {"setting": "source", "value": str(report.source)})
    secs.append(section("Method and settings",
                        paragraph(_METHOD.format(reg=reg, sigma=sigma, k=s["min_group_size"]))
                        + table_html(settings_rows)))
    html = html_page(title or "geoaudit: geographic fairness audit", secs,
                     subtitle=f"accuracy by {s['group']} against {reg}, {len(report.fits)} model(s)")
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

        raise InputError(f"--out {str(out)!r} is a file; pass a folder for the report.")
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
