"""The audit's figures.  Each function returns a matplotlib ``Figure`` built without pyplot (no
global state, renders with the Agg backend), to embed with :func:`fig_to_data_uri` or save."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

_ISO3 = re.compile(r"^[A-Z]{3}$")


def _figure(w=7.5, h=4.8):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))  # no constrained layout: savefig(bbox_inches="tight") suffices, at half the cost


_COVARIATE_LABELS = {
    "gdp_per_capita_usd": "GDP per capita, US$",
    "gdp": "GDP per capita, US$",
    "log_gdp_per_capita": "ln(GDP per capita, US$)",
}

# Colours of countries the map cannot rate: no images at all, or fewer than min_group_size.
NO_DATA_COLOUR = "#e6e6e6"
TOO_FEW_COLOUR = "#c9b99a"


def covariate_label(covariate) -> str:
    """A reader's name for a covariate column ("GDP per capita, US$" for gdp_per_capita_usd).

    Parameters
    ----------
    covariate : str

    Returns
    -------
    str
    """
    return _COVARIATE_LABELS.get(str(covariate), str(covariate))


def regressor_label(covariate="gdp_per_capita_usd", log_covariate=True) -> str:
    """What beta's unit is: ``ln(GDP per capita, US$)`` for the default audit.

    Parameters
    ----------
    covariate : str
    log_covariate : bool

    Returns
    -------
    str
    """
    label = covariate_label(covariate)
    return f"ln({label})" if log_covariate else label


def beta_axis_label(covariate="gdp_per_capita_usd", log_covariate=True) -> str:
    """The axis label of a slope: ``beta (accuracy per unit of ln(GDP per capita, US$))``.

    Parameters
    ----------
    covariate : str
    log_covariate : bool

    Returns
    -------
    str
    """
    return f"beta (accuracy per unit of {regressor_label(covariate, log_covariate)})"


def _as_fits(fits):
    if fits is None:
        return {}
    from collections.abc import Mapping

    if isinstance(fits, Mapping):
        return dict(fits)
    return {"model": fits}


def plot_accuracy_vs_covariate(groups, fits=None, *, log_covariate=True, covariate_label="covariate",
                               title=None, annotate=None):
    """Per-group accuracy against the covariate, with the GLS line.

    Parameters
    ----------
    groups : pandas.DataFrame
        Columns group, n, accuracy, covariate, and optionally ``dropped`` (bool): dropped groups
        are drawn as hollow grey markers.
    fits : GLSResult or dict of str -> GLSResult, optional
        One fit: its line and pointwise confidence band.  Several (a population): a thin line
        per model and a bold line with the mean intercept and mean beta.
    log_covariate : bool
        Draw the x axis on a log scale (the GLS line is straight there).
    annotate : bool, optional
        Label points with group names (default: when there are at most 60 groups).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm, Normalize

    fits = _as_fits(fits)
    g = groups.copy()
    if "dropped" not in g:
        g["dropped"] = False
    g = g[np.isfinite(g["covariate"].astype(float)) & np.isfinite(g["accuracy"].astype(float))]
    if log_covariate:
        g = g[g["covariate"] > 0]
    kept, dropped = g[~g["dropped"]], g[g["dropped"]]
    fig = _figure()
    ax = fig.add_subplot()
    n = kept["n"].to_numpy(float)
    norm = LogNorm(vmin=max(n.min(), 1), vmax=max(n.max(), 2)) if len(n) and n.max() > n.min() \
        else Normalize(vmin=0, vmax=max(n.max(), 1) if len(n) else 1)
    sizes = 15 + 185 * np.sqrt(n / n.max()) if len(n) else []
    sc = ax.scatter(kept["covariate"], kept["accuracy"], s=sizes, c=n, cmap="viridis", norm=norm,
                    edgecolors="k", linewidths=0.4, alpha=0.85, zorder=3, label="group")
    if len(n):
        from matplotlib.ticker import FuncFormatter

        cb = fig.colorbar(sc, ax=ax, label="images per group (n)")
        nice = [v * 10 ** e for e in range(8) for v in (1, 2, 5)]
        inner = [v for v in nice if norm.vmin * 1.25 <= v <= norm.vmax / 1.25]
        ticks = sorted({round(norm.vmin), *inner, round(norm.vmax)})  # the ends name the range
        cb.set_ticks(ticks)
        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if len(dropped):
        k = fits and next(iter(fits.values())).min_group_size
        what = f"{len(dropped)} dropped, not in the fit" + (f" (n < {k})" if k else "")
        ax.scatter(dropped["covariate"], dropped["accuracy"], s=22, marker="o", facecolors="none",
                   edgecolors="0.55", linewidths=0.9, zorder=2, label=what)
    if len(g):
        lo, hi = g["covariate"].min(), g["covariate"].max()
        xs = np.geomspace(lo, hi, 200) if log_covariate and lo > 0 else np.linspace(lo, hi, 200)
        if len(fits) == 1:
            fit = next(iter(fits.values()))
            kept_cov = kept["covariate"] if len(kept) else g["covariate"]
            xs = (np.geomspace(kept_cov.min(), kept_cov.max(), 200) if log_covariate
                  else np.linspace(kept_cov.min(), kept_cov.max(), 200))  # the line spans the fitted groups only
            band = fit.confidence_band(xs)
            ax.fill_between(xs, band[0], band[1], color="C3", alpha=0.15, lw=0,
                            label=f"{round((1 - fit.alpha) * 100)}% confidence band")
            ax.plot(xs, fit.predict(xs), color="C3", lw=2, zorder=4,
                    label=f"{fit.variance}: beta = {fit.beta:.3g}, F(1,{fit.df_denom}) = {fit.fvalue:.3g}, "
                          f"p = {fit.pvalue:.3g}")
        elif fits:
            for fit in fits.values():
                ax.plot(xs, fit.predict(xs), color="0.5", lw=0.7, alpha=0.5, zorder=2)
            b = np.mean([f.beta for f in fits.values()])
            a = np.mean([f.intercept for f in fits.values()])
            xr = np.log(xs) if log_covariate else xs
            sig = sum(f.significant for f in fits.values())
            ax.plot(xs, a + b * xr, color="C3", lw=2.2, zorder=4,
                    label=f"mean GLS line of {len(fits)} models: beta = {b:.3g} ({sig} significant)")
    if log_covariate:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    if annotate is None:
        annotate = len(g) <= 60
    if annotate:
        for _, r in g.iterrows():
            ax.annotate(str(r["group"]), (r["covariate"], r["accuracy"]), fontsize=6, color="0.3",
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(_COVARIATE_LABELS.get(covariate_label, covariate_label) + (" (log scale)" if log_covariate else ""))
    ax.set_ylabel("accuracy (fraction of images right)")
    # The axis follows the points, within [0, 1]: a fit line or band running past them is clipped.
    if len(g):
        acc = g["accuracy"].astype(float)
        pad = max(0.03, 0.08 * float(acc.max() - acc.min()))
        ax.set_ylim(max(-0.02, float(acc.min()) - pad), min(1.02, float(acc.max()) + pad))
    else:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "Accuracy per group against the covariate")
    return fig


def looks_like_iso3(groups, *, min_fraction=0.5) -> bool:
    """Whether group names are ISO3 country codes (all three capitals, most of them known)."""
    names = [str(x) for x in groups]
    if not names or not all(_ISO3.match(x) for x in names):
        return False
    from geoaudit.data import load_boundaries

    known = set(load_boundaries("110m")["iso3"])
    return sum(x in known for x in names) >= min_fraction * len(names)


def plot_world_map(groups, *, value="accuracy", title=None, label=None, cmap="viridis", min_group_size=None):
    """A world map of a per-country value (default accuracy), groups being ISO3 codes.

    Uses the Natural Earth 1:110m boundaries shipped with geoaudit.  Only countries that enter
    the fit are coloured by value: countries with fewer than ``min_group_size`` images (a
    ``dropped`` column) are painted one neutral "too few images" colour, since an accuracy from
    a handful of images says nothing; countries without images are light grey.

    Parameters
    ----------
    groups : pandas.DataFrame
        Columns group (ISO3), ``value`` and optionally ``dropped`` (bool).
    value : str
        The column to colour by.
    title, label : str, optional
        Title and colour-bar label.
    cmap : str
    min_group_size : int, optional
        Named in the legend of the "too few images" colour.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import warnings

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    from geoaudit.data import load_boundaries

    world = load_boundaries("110m")
    g = groups.copy()
    g["group"] = g["group"].astype(str)
    merged = world.merge(g, left_on="iso3", right_on="group", how="left")
    fig = _figure(10, 5.2)
    ax = fig.add_subplot()
    world.plot(ax=ax, color=NO_DATA_COLOUR, edgecolor="white", linewidth=0.3)
    have = merged[merged[value].notna()]
    if "dropped" in have:
        shown, dropped = have[~have["dropped"].astype(bool)], have[have["dropped"].astype(bool)]
    else:
        shown, dropped = have, have.iloc[:0]
    vals = shown[value].astype(float)
    norm = Normalize(vmin=float(vals.min()) if len(vals) else 0, vmax=float(vals.max()) if len(vals) else 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(shown):
            shown.plot(ax=ax, column=value, cmap=cmap, norm=norm, edgecolor="white", linewidth=0.3)
        if len(dropped):
            dropped.plot(ax=ax, color=TOO_FEW_COLOUR, edgecolor="white", linewidth=0.3)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, shrink=0.7, label=label or value)
    missing = sorted(set(g["group"]) - set(world["iso3"]))
    ax.set_axis_off()
    ax.set_title(title or f"{label or value} by country")
    k = f" (< {min_group_size})" if min_group_size else ""
    n_dropped = int(g["dropped"].astype(bool).sum()) if "dropped" in g else 0
    handles = [Patch(facecolor=TOO_FEW_COLOUR, label=f"too few images{k}: {n_dropped} countries, not rated"),
               Patch(facecolor=NO_DATA_COLOUR, label="no images")]
    ax.legend(handles=handles, loc="lower left", fontsize=7.5, frameon=False)
    if missing:
        ax.text(0.99, 0.01, f"{len(missing)} group(s) too small to draw at 1:110m: {', '.join(missing[:8])}",
                transform=ax.transAxes, fontsize=7, color="0.35", ha="right")
    return fig


def plot_beta_distributions(populations, *, reference=None, reference_label="reference beta", title=None,
                            seed=0, ylabel=None):
    """Box plots with the individual betas of one or more model populations.

    Parameters
    ----------
    populations : dict of str -> sequence of float
        Population name -> one beta per model.
    reference : float, optional
        A reference beta (e.g. the pretrained model's beta_0), drawn as a dashed blue line.
    ylabel : str, optional
        Default: beta per unit of ln(GDP per capita, US$) (see :func:`beta_axis_label`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from geoaudit._errors import InputError

    rng = np.random.default_rng(seed)
    names = list(populations)
    data = [np.asarray(list(populations[k]), dtype=float) for k in names]
    for k, d in zip(names, data):
        if d.ndim != 1:
            raise InputError(f"The betas of population {k!r} must be one number per model (1-D), got shape {d.shape}.")
    fig = _figure(max(4.0, 1.6 + 1.7 * len(names)), 4.6)
    ax = fig.add_subplot()
    ax.boxplot(data, positions=range(1, len(names) + 1), widths=0.5, showfliers=False,
               medianprops={"color": "C3"})
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=16, alpha=0.7, color=f"C{i - 1}", zorder=3)
        ax.plot([i - 0.28, i + 0.28], [d.mean()] * 2, color="k", lw=1.2, ls=":", zorder=4)
    ax.set_xticks(range(1, len(names) + 1), [f"{k}\n(n = {len(d)})" for k, d in zip(names, data)])
    ax.axhline(0, color="0.5", lw=0.8)
    if reference is not None:
        ax.axhline(reference, color="C0", ls="--", lw=1.3, label=f"{reference_label} = {reference:.3g}")
        ax.legend(fontsize=8)
    ax.set_ylabel((ylabel or beta_axis_label()).replace(" (", "\n(", 1).replace(" of ", " of\n", 1), fontsize=8.5)
    ax.set_title(title or "Distribution of beta per population")
    fig.text(0.01, -0.02, "dots: one model each; box: middle half (25th-75th percentile); red line: median; "
             "dotted: mean; whiskers: furthest beta within 1.5 box lengths", fontsize=7, color="0.3", va="top")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_model_betas(fits, *, title=None, xlabel=None):
    """Each model's beta with its confidence interval (a forest plot), significant ones in red.

    Parameters
    ----------
    fits : dict of str -> GLSResult
    title, xlabel : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fits = _as_fits(fits)
    names = list(fits)
    fig = _figure(7.0, max(2.5, 0.8 + 0.22 * len(names)))
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    for yi, name in zip(y, names):
        f = fits[name]
        color = "C3" if f.significant else "0.3"
        ax.errorbar(f.beta, yi, xerr=[[f.beta - f.ci_low], [f.ci_high - f.beta]], fmt="o", color=color,
                    ms=4, capsize=2)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(y, names, fontsize=7 if len(names) > 20 else 9)
    ax.set_xlabel((xlabel or beta_axis_label()) + " with its confidence interval\n(red: significant)")
    ax.set_title(title or "beta per model")
    ax.grid(axis="x", alpha=0.3)
    return fig


def standardized_residuals(groups, fit):
    """(n, standardized residual) of each group kept by ``fit``: (p_i - fitted_i) / sqrt(v_i + tau^2),
    v_i the binomial sampling variance at the fitted accuracy.  Roughly N(0, 1) when the
    random-effects model holds; a funnel or trend against n shows misfit."""
    from geoaudit.audit._meta import sampling_variance

    g = groups[groups["group"].astype(str).isin(fit.groups)]
    n = g["n"].to_numpy(float)
    y = g["accuracy"].to_numpy(float)
    cov = g["covariate"].to_numpy(float)
    x = np.log(cov) if fit.log_covariate else cov
    v = sampling_variance(y, n, x)[0]
    tau2 = fit.tau2 if np.isfinite(fit.tau2) else 0.0
    return n, (y - fit.predict(cov)) / np.sqrt(v + tau2)


def plot_dispersion(model_groups, fits, *, title=None):
    """Dispersion diagnostic: standardized residuals against images per group, with Q and I^2.

    Parameters
    ----------
    model_groups : dict of str -> pandas.DataFrame
        Each model's group table (group, n, accuracy, covariate).
    fits : dict of str -> GLSResult

    Returns
    -------
    matplotlib.figure.Figure
    """
    fits = _as_fits(fits)
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    many = len(fits) > 1
    for i, (name, fit) in enumerate(fits.items()):
        n, z = standardized_residuals(model_groups[name], fit)
        ax.scatter(n, z, s=14 if many else 22, alpha=0.35 if many else 0.85, color="0.35" if many else "C0",
                   edgecolors="none", label=None if many else name)
    for y0 in (-2, 2):
        ax.axhline(y0, color="C3", lw=0.8, ls="--")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
    first = next(iter(fits.values()))
    ax.set_xlabel("images per group (n, log scale)")
    ax.set_ylabel("standardized residual")
    ax.text(0.01, 0.98, f"{first.variance}; tau^2 = {first.tau2:.3g} ({first.tau2_method}), I^2 = {first.i2:.0f}%, "
            f"Q({first.q_df}) = {first.q:.3g}, p = {first.q_pvalue:.2g}" + (f" (first of {len(fits)} models)" if many else ""),
            transform=ax.transAxes, fontsize=7.5, va="top", color="0.25")
    ax.set_title(title or "Dispersion: residual / sqrt(v_i + tau^2) against n (dashed: +-2)")
    ax.grid(alpha=0.3)
    return fig


def groups_frame(records) -> pd.DataFrame:
    """A group table from report.json records (for plotting a loaded report)."""
    return pd.DataFrame(records)
