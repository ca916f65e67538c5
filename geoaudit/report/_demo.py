"""The demo's combined report, composed from the audit report's building blocks
(:mod:`geoaudit.report._html` and the audit figures of :mod:`geoaudit.report._plots`).

Everything is rendered in memory: :func:`render_demo` returns the page and the PNGs, and the
caller writes them.
"""
from __future__ import annotations

import logging
from html import escape

from geoaudit._io import to_json
from geoaudit.report._html import fig_to_png, figure_html, html_page, paragraph, png_to_data_uri, pre, section, table_html
from geoaudit.report._plots import plot_accuracy_vs_covariate, plot_world_map

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
        A comparison or its ``to_dict()``; a row of the demo's comparison table (with its own
        ``verdict``) is returned as that verdict.

    Returns
    -------
    str
    """
    d = comparison if isinstance(comparison, dict) else comparison.to_dict()
    if d.get("verdict"):
        return f"{d['key']}: {d['verdict']}" if d.get("key") else d["verdict"]
    word = "fairer (lower mean slope)" if d["significant"] else "not shown to be fairer"
    df = "" if d.get("df") is None else ", df = %.1f" % d["df"]
    return (f"{d['label_a']} vs {d['label_b']}: mean beta {d['mean_a']:.4f} vs {d['mean_b']:.4f}, "
            f"{d['test']} statistic = {d['statistic']:.3f}{df}, one-sided p = {_stat(d, 'pvalue', 'p_value'):.4g}: "
            f"{d['label_a']} is {word} at alpha = {d['alpha']}")


_SHORT = {"capture": "capture quality falls with income", "colour": "colour shortcut in rich countries",
          "null": "no bias"}
_METHOD_COLOURS = {"plain": "C0", "pgd": "C1", "perceptual": "C2", "oracle": "C3"}


def _colour(method, i):
    """One colour per training method in every panel."""
    return _METHOD_COLOURS.get(method, f"C{4 + i}")


_ROLE_ORDER = ("primary", "positive control", "secondary", "negative check")


def plot_demo_slopes(result):
    """The slope (beta) of every model, one panel per mechanism, lines joining models of one seed.

    Parameters
    ----------
    result : dict
        The demo's JSON report (``mechanisms`` -> ``populations`` -> ``label``, ``betas``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np
    from matplotlib.figure import Figure

    mechs = list(result["mechanisms"])
    widths = [len(result["mechanisms"][m]["populations"]) for m in mechs]
    fig = Figure(figsize=(1.6 + 1.55 * sum(widths), 4.4))
    axes = fig.subplots(1, len(mechs), squeeze=False, sharey=True, gridspec_kw={"width_ratios": widths})[0]
    for ax, mech in zip(axes, mechs):
        pops = result["mechanisms"][mech]["populations"]
        names = list(pops)
        seeds = sorted({k for p in pops.values() for k in p["betas"]})
        for k in seeds:  # paired design: one grey line per seed across populations
            ys = [pops[n]["betas"].get(k, np.nan) for n in names]
            ax.plot(range(len(names)), ys, color="0.75", lw=0.8, zorder=1)
        for i, n in enumerate(names):
            b = np.asarray(list(pops[n]["betas"].values()), float)
            ax.scatter(np.full(len(b), i), b, s=18, color=_colour(n, i), zorder=3)
            ax.plot([i - 0.25, i + 0.25], [b.mean()] * 2, color="k", lw=2, zorder=4)
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), [pops[n]["label"].replace(" (", "\n(") for n in names], fontsize=7.5)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(f"{mech}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("GLS slope beta (accuracy per unit log GDP)")
    fig.suptitle("Slope per model by training method (bar: mean; grey lines join models of one seed)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_demo_accuracy(result):
    """Per-country accuracy (mean over each population's models) against GDP, one panel per
    mechanism, with each population's mean GLS line.

    Parameters
    ----------
    result : dict
        The demo's JSON report (``mechanisms`` -> ``populations`` -> ``groups``,
        ``intercept_mean``, ``beta_mean``, ``label``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    mechs = list(result["mechanisms"])
    fig = Figure(figsize=(4.4 * len(mechs) + 0.6, 4.2))
    axes = fig.subplots(1, len(mechs), squeeze=False, sharey=True)[0]
    for ax, mech in zip(axes, mechs):
        pops = result["mechanisms"][mech]["populations"]
        for i, (name, p) in enumerate(pops.items()):
            g = p.get("groups") or []
            if not g:
                continue
            x = np.array([r["covariate"] for r in g], float)
            y = np.array([r["accuracy"] for r in g], float)
            ax.scatter(x, y, s=14, color=_colour(name, i), alpha=0.7)
            xs = np.geomspace(x.min(), x.max(), 50)
            ax.plot(xs, p["intercept_mean"] + p["beta_mean"] * np.log(xs), color=_colour(name, i), lw=1.8,
                    label=f"{p['label']}: beta {p['beta_mean']:+.3f}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("GDP per capita (US$, log scale)")
        ax.set_title(f"{mech}: {_SHORT.get(mech, mech)}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy per country (mean over models)")
    fig.tight_layout()
    return fig


def _comparison_rows(comparisons):
    rows = []
    for c in sorted(comparisons, key=lambda c: _ROLE_ORDER.index(c["role"]) if c["role"] in _ROLE_ORDER else 9):
        rows.append({
            "role": c["role"], "dataset": c["mechanism"], "A": c["label_a"], "B": c["label_b"],
            "mean beta A": c["mean_a"], "mean beta B": c["mean_b"], "difference A - B": c["difference"],
            f"{c.get('ci_level', 0.95):.0%} CI of difference": f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
            "paired t": c["statistic"], "df": c.get("df"), "p (one-sided)": c["pvalue"],
            "adjusted p": c["p_adjusted"], "adjustment": "Holm" if c["family"] == "secondary" else "none",
            "A fairer?": "yes" if c["rejected"] else "not shown"})
    return rows


def _population_rows(mech):
    return [{"method": p["label"], "models": p["n_models"], "mean beta": p["beta_mean"], "beta sd": p.get("beta_sd"),
             "models with p < 0.05": p.get("n_significant"), "mean accuracy": p.get("mean_accuracy"),
             "D size": (p.get("weighted_dataset") or {}).get("size")}
            for p in mech["populations"].values()]


def render_demo(result, *, reference_groups, reference_fit, attack_rows=(), attack_grid_png=None, samples_png=None,
                title="geoaudit demo: does robust training make a classifier fairer?", labels=None):
    """The demo's page: the verdicts, the comparison table, the slopes per mechanism, each
    population, the reference model's audit, the settings against the paper's, attack quality.

    Parameters
    ----------
    result : dict
        The demo's JSON report (``quick``, ``settings``, ``paper_settings``, ``reference``,
        ``mechanisms``, ``comparisons``, ``verdicts``, ``attacks``, ``timings_seconds``).
    reference_groups : pandas.DataFrame
        Per-country rows of the reference model (group, n, accuracy, covariate).
    reference_fit : GLSResult
        The reference model's fit.
    attack_rows : list of dict
        One row per attack for the attack-quality table.
    attack_grid_png, samples_png : bytes, optional
        The attack example grid and the dataset sample figure.
    title : str
    labels : ignored
        Kept for callers of the earlier signature.

    Returns
    -------
    html : str
        A self-contained page.
    figures : dict of str -> bytes
        File name (without ``.png``) -> PNG of each figure drawn here.
    """
    ref = result["reference"]
    figs, sections = {}, []
    comps = list(result["comparisons"])
    verdicts = result.get("verdicts", {})

    head = []
    if result.get("quick"):
        head.append(paragraph("QUICK RUN: a smoke test with tiny populations on the capture dataset only; "
                              "its statistics are not evidence.", cls="warn"))
    mechs = result["mechanisms"]
    sizes = {m: next(iter(v["populations"].values()), {}).get("n_models") for m, v in mechs.items()}
    k = (str(next(iter(sizes.values()))) if len(set(sizes.values())) == 1
         else ", ".join(f"{n} ({m})" for m, n in sizes.items()))
    head.append(paragraph(
        f"Design: {len(mechs)} GeoShapes dataset(s) that differ only in the planted bias ("
        + "; ".join(f"{m}: {v['planted']}" for m, v in mechs.items())
        + f"). On each, populations of {k} models that differ only in their training method, with the same "
        "seeds (paired). Every model is audited (GLS slope beta of per-country accuracy on log GDP per capita; "
        "lower is fairer). The comparisons were fixed before training: one primary (the paper's claim), tested "
        "alone at alpha = 0.05; a positive control (an oracle built to remove the capture bias), a check of the "
        "experiment rather than a claim, also tested alone at alpha = 0.05; and secondary ones with Holm's "
        "adjustment, including negative checks (where no improvement is expected)."))
    for key, label in (("primary", "Primary comparison"), ("positive_control", "Positive control"),
                       ("negative_checks", "Negative checks")):
        if key in verdicts:
            cls = "verdict"
            head.append(paragraph(f"{label}: {verdicts[key]}", cls=cls))
    sections.append(section("Summary", "".join(head)))

    body = table_html(_comparison_rows(comps), floatfmt=".4g")
    body += paragraph("H1 of every row: mean beta of A < mean beta of B. Paired t-test over models of the same "
                      "seed; 'difference' is the mean of the paired differences A - B, with a two-sided "
                      "confidence interval; the adjusted p of secondary rows is Holm's over all secondary rows (the primary "
                      "comparison and the positive control are each tested alone).")
    body += "<ul>" + "".join(f"<li>{escape(comparison_verdict(c))}</li>" for c in comps) + "</ul>"
    sections.append(section("Comparisons", body))

    figs["slopes_by_mechanism"] = fig_to_png(plot_demo_slopes(result))
    sections.append(section("Slopes per population", figure_html(
        png_to_data_uri(figs["slopes_by_mechanism"]),
        caption="One dot per model; lower beta: accuracy depends less on GDP (fairer).")))
    figs["accuracy_by_mechanism"] = fig_to_png(plot_demo_accuracy(result))
    sections.append(section("Accuracy against GDP per population", figure_html(
        png_to_data_uri(figs["accuracy_by_mechanism"]),
        caption="Per-country test accuracy averaged over each population's models (countries with enough "
                "test images for the GLS); lines: the population's mean GLS fit.")))

    for mech, m in mechs.items():
        sections.append(section(f"Dataset '{mech}'", paragraph(f"Planted: {m['planted']}. Data: {m['data']} "
                                                               f"(splits {m['splits']}).")
                                + table_html(_population_rows(m))))

    beta, pvalue, fvalue = ref["beta"], _stat(ref, "pvalue", "p_value"), _stat(ref, "fvalue", "f_stat")
    name = ref.get("model", "reference")
    figs["accuracy_vs_gdp"] = fig_to_png(plot_accuracy_vs_covariate(
        reference_groups, {name: reference_fit}, covariate_label="GDP per capita (US$)",
        title=f"Reference model ({ref.get('mechanism', '')}, plain, seed 0): accuracy per country, GLS line"))
    body = paragraph(f"Reference model ({name} of the plain population on '{ref.get('mechanism', '')}'): "
                     f"beta = {beta:.4f} per unit log GDP, F = {fvalue:.3f} with df (1, {ref['df_denom']:.0f}), "
                     f"p = {pvalue:.4g}.")
    body += figure_html(png_to_data_uri(figs["accuracy_vs_gdp"]),
                        caption="Each dot is a country (size and colour: test images); line: the GLS fit.")
    try:
        figs["world_map"] = fig_to_png(plot_world_map(reference_groups, title="Reference model: accuracy per country"))
        body += figure_html(png_to_data_uri(figs["world_map"]))
    except Exception as e:  # the map is a nicety (it needs geopandas' boundaries); the report stands without it
        log.warning("world map skipped: %s", e)
    sections.append(section("Reference model", body))

    sections.append(section("Settings: the paper's and this run's", table_html(
        list(result.get("paper_settings", [])), columns=["setting", "paper", "demo", "why"])))

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
            caption=f"Test images of the '{ref.get('mechanism', '')}' dataset, one row per World Bank income group.")))
    this_run = result.get("timings_this_run_seconds", {})
    runs = result.get("runs", 1)
    sections.append(section("Run", pre(to_json(result["settings"])) + paragraph(
        f"Stage times: all {runs} call(s) of the command on this folder together (a resumed run "
        "continues the work of the calls before it), and this call alone.") + table_html(
        [{"stage": k, "seconds, all calls": v, "seconds, this call": this_run.get(k)}
         for k, v in result["timings_seconds"].items()])))
    html = html_page(title, sections, subtitle="Hua, Xu, Blanchet and Nguyen's experiment, with a positive "
                                               "control and negative checks")
    return html, figs
