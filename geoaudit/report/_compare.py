"""The comparison report: JSON, a self-contained HTML page and the beta distributions figure."""
from __future__ import annotations

from html import escape
from pathlib import Path

from geoaudit._io import atomic_write_bytes, atomic_write_text, to_json
from geoaudit.report._html import (
    fig_to_png,
    figure_html,
    html_page,
    link_html,
    png_to_data_uri,
    pre,
    section,
    table_html,
)
from geoaudit.report._plots import plot_beta_distributions

_ROWS = ("test", "requested_test", "pairing", "alternative", "h0", "h1", "statistic", "df", "pvalue", "difference",
         "ci_low", "ci_high", "mean_a", "mean_b", "sd_a", "sd_b", "n_a", "n_b", "cohens_d", "hedges_g",
         "n_resamples", "random_state")


_LABELS = {"statistic": "t statistic", "difference": "mean difference A - B (beta)", "df": "t degrees of freedom"}


def _is_t(d):
    """Whether the comparison's statistic is a t value (a permutation test's is the mean difference)."""
    return d.get("df") is not None


def _populations(result):
    """Population label -> betas, over every comparison of the result."""
    out = {}
    for r in getattr(result, "results", (result,)):
        out.setdefault(r.label_a, r.betas_a)
        out.setdefault(r.label_b, r.betas_b)
    return out


def _sources_section(sources, base):
    """Each population's audit report, linked relative to the comparison page."""
    rows = []
    for label, path in sources.items():
        p = Path(path)
        html = p / "report.html" if p.is_dir() else p.with_name("report.html")
        target = html if html.exists() else p
        rows.append(f"<li>{escape(str(label))}: {link_html(target, base)}</li>")
    return section("Audit reports compared", "<ul>" + "".join(rows) + "</ul>", anchor="sources")


def render_compare(result, *, title=None, reference=None, sources=None, base=None):
    """Render a comparison: ``(html, png)`` with the beta distributions figure.

    Parameters
    ----------
    result : CompareResult or MultiCompareResult
    title : str, optional
    reference : float, optional
        A reference beta drawn as a horizontal line (e.g. one model's).
    sources : dict of str -> str or Path, optional
        Population label -> its audit report (report.json or its folder), listed as links.
    base : str or Path, optional
        The folder of the page, for relative links.

    Returns
    -------
    (str, bytes)
    """
    many = hasattr(result, "primary")
    if many:
        pops = _populations(result)
    else:
        pops = {f"A: {result.label_a}": result.betas_a, f"B: {result.label_b}": result.betas_b}
    png = fig_to_png(plot_beta_distributions(pops, reference=reference))
    main = result.primary if many else result
    d = main.to_dict()
    rows = [{"": _LABELS.get(k, k), "value": d.get(k)} for k in _ROWS
            if not (k == "statistic" and not _is_t(d))]
    cls = "reject" if main.significant else "keep"
    head = "primary comparison: " if many else ""
    what = (f"{d.get('h1')} (A: {main.label_a}, B: {main.label_b})" if main.significant
            else f"{d.get('h0')} is kept (A: {main.label_a}, B: {main.label_b})")
    verdict = (f'{head}{"H0 rejected" if main.significant else "H0 not rejected"} at alpha = {main.alpha:g}: '
               f"{what}; {main.test} test, p = {main.pvalue:.3g}.")
    secs = [section("Result", f'<p class="verdict {cls}">{escape(verdict)}</p>' + pre(result.summary())
                    + table_html(rows), anchor="result")]
    if many and result.secondary:
        secs.append(section("Secondary comparisons (Holm-adjusted)", table_html([
            {"A": r.label_a, "B": r.label_b, "test": r.test, "t": r.statistic if r.df is not None else None,
             "df": r.df, "mean difference A - B": r.difference, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "pvalue": r.pvalue, "pvalue_holm": p, "significant_holm": p < result.alpha}
            for r, p in zip(result.secondary, result.adjusted_pvalues)])))
    secs.append(section("Distribution of beta", figure_html(
        png_to_data_uri(png), alt="beta distributions",
        caption="Each dot is one model's beta. Box: the middle half of the betas (25th to 75th percentile); red "
                "line: median; dotted line: mean; whiskers: the furthest beta within 1.5 box lengths of the box.")))
    if sources:
        secs.append(_sources_section(sources, base))
    if not many and result.pairs:
        secs.append(section("Pairs", table_html([{"A": a, "B": b} for a, b in result.pairs])))
    subtitle = (f"{len(_populations(result))} populations, primary {main.label_a} vs {main.label_b}" if many
                else f"{result.label_a} vs {result.label_b}")
    return html_page(title or "geoaudit: comparison of model populations", secs, subtitle=subtitle), png


def write_compare(result, path, *, reference=None, sources=None) -> dict:
    """Write the comparison as JSON at ``path``, with ``<stem>.html`` and ``<stem>_betas.png`` beside it.

    Parameters
    ----------
    result : CompareResult or MultiCompareResult
    path : str or Path
        The JSON file (``compare.json`` inside it when it is a folder).
    reference, sources : optional
        As in :func:`render_compare`.

    Returns
    -------
    dict of str -> Path
        Keys json, html and figure.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "compare.json"
    json_text = to_json(result.to_dict()) + "\n"
    html, png = render_compare(result, reference=reference, sources=sources, base=path.parent)
    stem = path.with_suffix("") if path.suffix else path
    html_path, png_path = Path(f"{stem}.html"), Path(f"{stem}_betas.png")
    if html_path == path:
        html_path = Path(f"{stem}.report.html")
    atomic_write_bytes(png_path, png)
    atomic_write_text(html_path, html)
    atomic_write_text(path, json_text)
    return {"json": path, "html": html_path, "figure": png_path}
