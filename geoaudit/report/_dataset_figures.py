"""Figures of a dataset summary (``geoaudit dataset info --out``)."""
from __future__ import annotations

from pathlib import Path


def plot_images_per_country(summary, path, *, top=30):
    """A world map of images per country (log colour scale) above a bar chart of the top countries.

    Parameters
    ----------
    summary : dict
        From :func:`geoaudit.data._summary.dataset_summary`.
    path : str or Path
        PNG file to write.
    top : int
        Countries in the bar chart.

    Returns
    -------
    pathlib.Path
    """
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    from geoaudit._io import atomic_save
    from geoaudit.data import load_boundaries

    counts = {r["country_iso3"]: r["images"] for r in summary["images_per_country"] if r["country_iso3"]}
    world = load_boundaries("110m").copy()
    world["images"] = world["iso3"].map(counts)
    fig = Figure(figsize=(11, 10))
    ax_map, ax_bar = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1.3, 1]})
    world.plot(ax=ax_map, color="#eeeeee", edgecolor="#999999", linewidth=0.3)
    has = world[world["images"].notna()]
    if len(has):
        vmax = max(float(has["images"].max()), 2.0)
        has.plot(ax=ax_map, column="images", cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax),
                 edgecolor="#555555", linewidth=0.3, legend=True,
                 legend_kwds={"label": "images (log scale)", "shrink": 0.6})
    ax_map.set_axis_off()
    ax_map.set_title(f"Images per country: {summary['total']:,} images, {summary['num_countries']} countries")
    rows = [r for r in summary["images_per_country"] if r["country_iso3"]][:top]
    vals = np.array([r["images"] for r in rows])
    colors = ["#d62728" if r["gdp_per_capita_usd"] is None else "#1f77b4" for r in rows]
    ax_bar.bar(range(len(rows)), vals, color=colors)
    ax_bar.set_xticks(range(len(rows)))
    ax_bar.set_xticklabels([r["country_iso3"] for r in rows], rotation=90, fontsize=8)
    ax_bar.set_ylabel("images")
    ax_bar.set_title(f"Top {len(rows)} countries (red: no World Bank GDP)")
    fig.tight_layout()
    atomic_save(Path(path), lambda t: fig.savefig(t, dpi=110, format="png"))
    return Path(path)
