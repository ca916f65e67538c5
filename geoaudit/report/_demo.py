"""The demo's combined report, composed from the audit report's building blocks
(:mod:`geoaudit.report._html` and the audit figures of :mod:`geoaudit.report._plots`).

Everything is rendered in memory: :func:`render_demo` returns the page and the PNGs, and the
caller writes them.
"""
from __future__ import annotations

import logging

from geoaudit._io import to_json
from geoaudit.report._html import fig_to_png, figure_html, html_page, paragraph, png_to_data_uri, pre, section, table_html
from geoaudit.report._plots import plot_accuracy_vs_covariate, plot_beta_distributions, plot_world_map

log = logging.getLogger(__name__)


def _stat(d, new, old):
    """A statistic under its statsmodels name, or under the name older results used."""
    return d[new] if d.get(new) is not None else d.get(old)


def plot_attack_grid(images, examples, *, n=6):
    """Original | adversarial | amplified difference, per attack, for the first ``n`` images.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` originals in [0, 1] (on the CPU).
    examples : dict of str -> torch.Tensor
        Attack name -> adversarial images of the same shape.
    n : int
        Rows to draw.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    names = list(examples)
    cols = 1 + 2 * len(names)
    n = min(n, images.shape[0])
    fig = Figure(figsize=(1.6 * cols, 1.6 * n + 0.4))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        for j, name in enumerate(names):
            adv = examples[name][i]
            # signed difference around grey, scaled per image so small attacks stay visible
            diff = adv - images[i]
            diff = 0.5 + 0.5 * diff / max(float(diff.abs().max()), 1e-8)
            axes[i, 1 + 2 * j].imshow(adv.permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, 2 + 2 * j].imshow(diff.permute(1, 2, 0).clamp(0, 1).numpy())
            if i == 0:
                axes[0, 1 + 2 * j].set_title(name, fontsize=7)
                axes[0, 2 + 2 * j].set_title("difference, amplified", fontsize=7)
    axes[0, 0].set_title("original", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def comparison_verdict(comparison) -> str:
    """One sentence stating a population comparison's result.

    Parameters
    ----------
    comparison : CompareResult or dict
        A comparison or its ``to_dict()``.

    Returns
    -------
    str
    """
    d = comparison if isinstance(comparison, dict) else comparison.to_dict()
    word = "fairer (lower mean slope)" if d["significant"] else "not shown to be fairer"
    df = "" if d.get("df") is None else ", df = %.1f" % d["df"]
    return (f"{d['label_a']} vs {d['label_b']}: mean beta {d['mean_a']:.4f} vs {d['mean_b']:.4f}, "
            f"{d['test']} statistic = {d['statistic']:.3f}{df}, one-sided p = {_stat(d, 'pvalue', 'p_value'):.4g}: "
            f"{d['label_a']} is {word} at alpha = {d['alpha']}")


def _population_rows(result, labels, mean_accuracy):
    return [{"method": labels[m], "models": p["n_models"], "beta mean": p["beta_mean"], "beta sd": p["beta_sd"],
             "mean accuracy": mean_accuracy.get(m), "report": f"audits/{m}/report.html"}
            for m, p in result["populations"].items()]


def _comparison_rows(comparisons):
    return [{"A": c["label_a"], "B": c["label_b"], "test": c["test"], "alternative": c["alternative"],
             "statistic": c["statistic"], "df": c.get("df"), "p": _stat(c, "pvalue", "p_value"),
             "Hedges' g": c.get("hedges_g"), "reject H0": c.get("significant")} for c in comparisons]


def render_demo(result, *, reference_groups, reference_fit, labels, mean_accuracy=None, attack_rows=(),
                attack_grid_png=None, samples_png=None, title="geoaudit demo: geographic fairness on GeoShapes"):
    """The demo's page: summary, the reference model's audit figures, the populations' slopes
    and comparisons, attack quality, samples and the run's settings.

    Parameters
    ----------
    result : dict
        The demo's JSON report (``quick``, ``settings``, ``reference``, ``populations`` with
        ``betas``, ``comparisons``, ``attacks``, ``timings_seconds``).
    reference_groups : pandas.DataFrame
        Per-country rows of the reference model (group, n, accuracy, covariate).
    reference_fit : GLSResult
        The reference model's fit.
    labels : dict of str -> str
        Training method -> display name, in the order to show.
    mean_accuracy : dict of str -> float, optional
        Training method -> mean test accuracy of its models.
    attack_rows : list of dict
        One row per attack for the attack-quality table.
    attack_grid_png, samples_png : bytes, optional
        The attack example grid and the dataset sample grid.
    title : str

    Returns
    -------
    html : str
        A self-contained page.
    figures : dict of str -> bytes
        File name (without ``.png``) -> PNG of each figure drawn here.
    """
    ref = result["reference"]
    beta, pvalue, fvalue = ref["beta"], _stat(ref, "pvalue", "p_value"), _stat(ref, "fvalue", "f_stat")
    name = ref.get("model", "reference")
    figs, sections = {}, []

    headline = []
    if result.get("quick"):
        headline.append(paragraph("QUICK RUN: a smoke test with tiny populations; its statistics are not evidence.",
                                  cls="warn"))
    sig = pvalue < 0.05
    headline.append(paragraph(
        f"Reference model ({name}, plain training, seed 0): beta = {beta:.4f} per unit log GDP, "
        f"F = {fvalue:.3f} with df (1, {ref['df_denom']:.0f}), p = {pvalue:.4g} "
        f"({'significant' if sig else 'not significant'} at 0.05): accuracy "
        f"{'depends' if sig else 'is not shown to depend'} on log GDP per capita."))
    for c in result["comparisons"]:
        if c["test"] == "welch":
            headline.append(paragraph(comparison_verdict(c)))
    sections.append(section("Summary", "".join(headline)))

    figs["accuracy_vs_gdp"] = fig_to_png(plot_accuracy_vs_covariate(
        reference_groups, {name: reference_fit}, covariate_label="GDP per capita (US$)",
        title="Reference model: accuracy per country against log GDP, GLS line"))
    sections.append(section("Accuracy against log GDP", figure_html(
        png_to_data_uri(figs["accuracy_vs_gdp"]),
        caption="Each dot is a country (size and colour: test images); line: the GLS fit.")))
    try:
        figs["world_map"] = fig_to_png(plot_world_map(reference_groups, title="Reference model: accuracy per country"))
        sections.append(section("World map", figure_html(png_to_data_uri(figs["world_map"]))))
    except Exception as e:  # the map is a nicety (it needs geopandas' boundaries); the report stands without it
        log.warning("world map skipped: %s", e)
    betas = {labels[m]: list(result["populations"][m]["betas"].values()) for m in labels}
    figs["slopes_by_method"] = fig_to_png(plot_beta_distributions(
        betas, reference=beta, title="GLS slope (beta) per model, by training method"))
    sections.append(section("Slopes per training method", figure_html(
        png_to_data_uri(figs["slopes_by_method"]),
        caption="Lower beta: accuracy depends less on GDP (fairer). Dashed: the reference model.")))
    sections.append(section("Populations", table_html(_population_rows(result, labels, mean_accuracy or {}))))
    sections.append(section("Population comparisons (H1: mean beta of A < mean beta of B)",
                            table_html(_comparison_rows(result["comparisons"]))))
    cost = result["settings"].get("perceptual_cost", "ssim")
    body = (paragraph(f"Attacks on the reference model, {result['attacks']['n_images']} test images; "
                      "success = correct before and wrong after, over correct before. "
                      f"Perceptual cost: {cost}{'' if cost == 'pieapp' else ' (PieAPP weights not given)'}.")
            + table_html(list(attack_rows)))
    if attack_grid_png is not None:
        body += figure_html(png_to_data_uri(attack_grid_png),
                            caption="Original, adversarial and amplified difference per attack.")
    sections.append(section("Attack quality", body))
    if samples_png is not None:
        sections.append(section("GeoShapes samples", figure_html(
            png_to_data_uri(samples_png),
            caption="Left: well-represented countries (the colour cue holds); right: the rest.")))
    sections.append(section("Run", pre(to_json(result["settings"])) + table_html(
        [{"stage": k, "seconds": v} for k, v in result["timings_seconds"].items()])))
    html = html_page(title, sections, subtitle="Hua, Xu, Blanchet and Nguyen's experiment, end to end")
    return html, figs
