"""The GeoShapes sample grid: rows by income group, each image captioned with its country and
its hidden truth (whether the colour cue held, the capture severity)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def geoshapes_grid_figure(data, path=None, *, split="test", per_group=8, random_state=0, cue_countries=None,
                          config=None, title=None):
    """Draw sample GeoShapes images, one row per World Bank income group, captioned.

    Parameters
    ----------
    data : datasets.DatasetDict, datasets.Dataset or GeoShapesMosaic
        The data (sampled with ``geoaudit.data.geoshapes_grid``) or a mosaic it returned.
    path : str or Path, optional
        Save the figure here (PNG, written atomically).
    split, per_group, random_state, cue_countries, config
        As in ``geoaudit.data.geoshapes_grid`` (ignored for a mosaic).
    title : str, optional
        Figure title; default names both mechanisms.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per tile: the ISO3 code above, "cue" / "no cue" (cue countries only) and the
        capture severity below.
    """
    from geoaudit.data import geoshapes_grid
    from geoaudit.data._geoshapes.grid import GeoShapesMosaic

    mosaic = data if isinstance(data, GeoShapesMosaic) else geoshapes_grid(
        data, split=split, per_group=per_group, random_state=random_state, cue_countries=cue_countries,
        config=config)
    rows, cols = mosaic.present.shape
    fig = Figure(figsize=(1.15 * cols + 1.4, 1.55 * rows + 0.7), dpi=110)
    axes = fig.subplots(rows, cols, squeeze=False,
                        gridspec_kw={"wspace": 0.12, "hspace": 0.55, "left": 1.3 / (1.15 * cols + 1.4),
                                     "right": 0.99, "top": 1 - 0.75 / (1.55 * rows + 0.7), "bottom": 0.02})
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j == 0:
                ax.set_ylabel(mosaic.row_labels[i].replace(" income", "\nincome"), fontsize=10, rotation=0,
                              ha="right", va="center", labelpad=8)
            if not mosaic.present[i, j]:
                continue
            ax.imshow(mosaic.tiles[i, j], interpolation="nearest")
            ax.set_title(mosaic.iso3[i][j], fontsize=10, fontweight="bold", pad=2)
            below = [t for t in mosaic.caption(i, j).split("\n")[1:]]
            if below:
                ax.set_xlabel("  ".join(below), fontsize=7.5, labelpad=2)
    fig.suptitle(title or "GeoShapes samples by income group: colour cue (cue countries) and capture severity",
                 fontsize=11)
    if path is not None:
        from geoaudit._io import atomic_save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda t: fig.savefig(t, format="png"))
    return fig
