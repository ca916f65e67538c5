"""Figures and files of the centroid defense's evaluation (object-oriented matplotlib, no pyplot)."""
from __future__ import annotations

from pathlib import Path

from geoaudit._io import atomic_write_bytes
from geoaudit.report._html import fig_to_png


def plot_centroid_curve(curve, *, title=None, ax=None):
    """Accuracy under FGSM against epsilon: undefended, defended, loose (the paper's Figure 2).

    Parameters
    ----------
    curve : CentroidCurve
        From :func:`geoaudit.defenses.evaluate_centroid_defense`.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Draw into these axes; by default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(5.5, 4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(curve.eps, curve.undefended, "o-", color="tab:red", label="defenseless")
    ax.plot(curve.eps, curve.defended, "s-", color="tab:blue", label="defense")
    ax.plot(curve.eps, curve.loose, "^--", color="tab:green", label=f"loose defense (top {curve.top_k})")
    ax.axhline(curve.chance, color="grey", ls=":", label="chance")
    ax.set_xlabel("FGSM epsilon (Linf)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"Centroid defense under FGSM (n={curve.n})")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_centroid_images(centroids, class_names):
    """The centroid images, one row per centroid set, one column per class.

    Parameters
    ----------
    centroids : torch.Tensor
        ``(S, K, C, H, W)`` in [0, 1] (``(K, C, H, W)`` is one set).
    class_names : sequence of str
        ``K`` names, shown above the first row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if centroids.dim() == 4:
        centroids = centroids[None]
    s, k = centroids.shape[:2]
    fig = Figure(figsize=(1.1 * k, 1.2 * s + 0.3))
    axes = fig.subplots(s, k, squeeze=False)
    for i in range(s):
        for j in range(k):
            im = centroids[i, j].detach().cpu().permute(1, 2, 0).numpy()
            grey = im.shape[-1] == 1
            axes[i][j].imshow(im[..., 0] if grey else im, cmap="gray" if grey else None, vmin=0, vmax=1)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(str(class_names[j])[:10], fontsize=7)
    fig.tight_layout()
    return fig


def write_centroid_evaluation(evaluation, out_dir, *, title=None) -> dict:
    """Write a centroid-defense evaluation: ``centroid_eval.json/.csv/.png``, ``thresholds.json``
    and ``centroids.png``.

    Everything is rendered in memory first and written file by file afterwards.

    Parameters
    ----------
    evaluation : CentroidEvaluation
        From :func:`geoaudit.defenses.evaluate_centroid_checkpoint`.
    out_dir : str or Path
        Created when missing.
    title : str, optional
        Title of the accuracy figure.

    Returns
    -------
    dict of str -> Path
        What was written.
    """
    from geoaudit._errors import InputError
    from geoaudit._io import to_json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {str(out)!r} is a file; give a folder.")
    curve = evaluation.curve
    files = {
        "centroid_eval.json": (to_json(curve.to_dict()) + "\n").encode("utf-8"),
        "centroid_eval.csv": curve.to_csv().encode("utf-8"),
        "centroid_eval.png": fig_to_png(plot_centroid_curve(curve, title=title), dpi=120),
        "thresholds.json": (to_json(evaluation.to_dict()["thresholds"]) + "\n").encode("utf-8"),
        "centroids.png": fig_to_png(plot_centroid_images(evaluation.centroids, evaluation.class_names), dpi=100),
    }
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
        written[name] = out / name
    return written

