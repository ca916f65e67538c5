"""Figures of attacks and of attack-budget calibration (object-oriented matplotlib, no pyplot).

* :func:`attack_grid_figure` / :func:`save_attack_grid`: originals, adversarial images and
  their amplified difference (what ``geoaudit attack`` writes as ``grid.png``);
* :func:`attack_comparison_figure`: clean images beside several attacks' images and their
  amplified differences, one row per method (the attack-quality benchmark's pictures);
* :func:`plot_calibration_heatmaps`: one heatmap per norm of a calibration's mean distance
  matrix (what ``geoaudit calibrate`` writes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["attack_grid_figure", "save_attack_grid", "attack_comparison_figure", "plot_calibration_heatmaps"]


def _show(ax, img, *, title=None, ylabel=None, title_size=8):
    """One (C, H, W) tensor in [0, 1] on ``ax``, without ticks."""
    arr = img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if arr.shape[-1] == 1:
        ax.imshow(arr[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(arr, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    if ylabel is not None:
        ax.set_ylabel(ylabel, fontsize=8)


def _amplified(diff, amp):
    """Signed difference mapped to [0, 1] around grey: 0.5 + 0.5 * diff / amp."""
    return 0.5 + 0.5 * diff / amp


def attack_grid_figure(images, adv, *, labels=None, preds=None, k=8):
    """Row 1 originals, row 2 adversarial images, row 3 the difference amplified per image.

    Parameters
    ----------
    images, adv : torch.Tensor
        ``(N, C, H, W)`` clean and adversarial images in [0, 1].
    labels, preds : torch.Tensor, optional
        True labels (titles of row 1) and predictions on ``adv`` (titles of row 2).
    k : int
        How many images to show (the first ``k``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    k = min(k, images.shape[0])
    diff = (adv[:k] - images[:k]).float()
    amp = diff.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    shown = [images[:k].float(), adv[:k].float(), _amplified(diff, amp)]
    fig = Figure(figsize=(1.6 * k, 5.0))
    axes = fig.subplots(3, k, squeeze=False)
    for r, (row, name) in enumerate(zip(shown, ("original", "adversarial", "difference (amplified)"))):
        for c in range(k):
            title = None
            if r == 0 and labels is not None:
                title = f"y={int(labels[c])}"
            elif r == 1 and preds is not None:
                title = f"pred={int(preds[c])}"
            elif r == 2:
                title = f"x{1 / float(amp[c]):.0f}"
            _show(axes[r][c], row[c], title=title, ylabel=name if c == 0 else None,
                  title_size=7 if r == 2 else 8)
    fig.tight_layout()
    return fig


def save_attack_grid(path, images, adv, *, labels=None, preds=None, k=8, dpi=100):
    """Write :func:`attack_grid_figure` as a PNG at ``path`` (atomically).

    Parameters
    ----------
    path : str or Path
    images, adv, labels, preds, k
        As for :func:`attack_grid_figure`.
    dpi : int

    Returns
    -------
    Path
        The file written.
    """
    from geoaudit._io import atomic_save

    fig = attack_grid_figure(images, adv, labels=labels, preds=preds, k=k)
    path = Path(path)
    atomic_save(path, lambda t: fig.savefig(t, format="png", dpi=dpi))
    return path


def attack_comparison_figure(images, adversarial, *, k=6, captions=None):
    """Clean images beside several attacks: per method, its images and amplified differences.

    Every difference of one column (one image) is amplified by the same factor, the one that
    maps the largest absolute difference of any method on that image to full range, so the
    methods' perturbations can be compared by eye.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` clean images in [0, 1].
    adversarial : Mapping[str, torch.Tensor]
        Method name -> its adversarial images, same shape as ``images``.
    k : int
        How many images (columns) to show.
    captions : Mapping[str, str], optional
        Method name -> text added to its row labels (e.g. its mean 1 - SSIM).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    k = min(k, images.shape[0])
    clean = images[:k].float()
    diffs = {m: (a[:k].float() - clean) for m, a in adversarial.items()}
    amp = _max_abs(list(diffs.values()))
    rows = [("clean", clean, None)]
    for m, a in adversarial.items():
        cap = f"\n{captions[m]}" if captions and m in captions else ""
        rows.append((f"{m}{cap}", a[:k].float(), None))
        rows.append((f"{m}: difference", _amplified(diffs[m], amp), amp))
    fig = Figure(figsize=(1.5 * k + 1.2, 1.5 * len(rows)))
    axes = fig.subplots(len(rows), k, squeeze=False)
    for r, (name, row, a) in enumerate(rows):
        for c in range(k):
            title = f"x{1 / float(a[c]):.0f}" if (a is not None and r == 2) else None
            _show(axes[r][c], row[c], title=title, ylabel=name if c == 0 else None, title_size=7)
    fig.tight_layout()
    return fig


def _max_abs(diffs):
    """Per image, the largest absolute value over several ``(k, C, H, W)`` differences,
    shaped ``(k, 1, 1, 1)`` (at least 1e-8)."""
    import torch

    m = torch.stack([d.abs().amax(dim=(1, 2, 3)) for d in diffs]).amax(0)
    return m.clamp_min(1e-8).view(-1, 1, 1, 1)


def plot_calibration_heatmaps(result, out_dir) -> list:
    """One PNG per norm, ``heatmap_<norm>.png``: the calibration's mean distance matrix, annotated.

    Parameters
    ----------
    result : geoaudit.attacks.CalibrationResult
    out_dir : str or Path
        Folder to write into (created).

    Returns
    -------
    list of Path
        The files written, in the order of ``result.norms``.
    """
    from matplotlib.figure import Figure

    from geoaudit._io import atomic_save
    from geoaudit.attacks._calibrate import NORM_LABELS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(result.class_names)
    k = len(names)
    paths = []
    for name, v in result.norms.items():
        side = max(4.5, 0.55 * k + 2)
        fig = Figure(figsize=(side, side * 0.85))
        ax = fig.subplots()
        im = ax.imshow(v.mean_distance, cmap="viridis")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=f"mean {NORM_LABELS[name]} distance")
        ticks = range(k)
        ax.set_xticks(ticks, names, rotation=45 if k > 10 or max(map(len, names)) > 3 else 0,
                      ha="right" if k > 10 else "center", fontsize=8)
        ax.set_yticks(ticks, names, fontsize=8)
        if k <= 20:
            hi = float(np.nanmax(v.mean_distance))
            for a in range(k):
                for b in range(k):
                    val = v.mean_distance[a, b]
                    ax.text(b, a, f"{val:.2g}", ha="center", va="center", fontsize=7,
                            color="black" if val > 0.6 * hi else "white",
                            fontweight="bold" if a == b else "normal")
        ax.set_title(f"{NORM_LABELS[name]}: mean distance within (diagonal) and between classes\n"
                     f"suggested eps: {v.global_eps:.3g} (min over classes)", fontsize=9)
        fig.tight_layout()
        p = out_dir / f"heatmap_{name}.png"
        atomic_save(p, lambda t, fig=fig: fig.savefig(t, dpi=110, format="png"))
        paths.append(p)
    return paths
