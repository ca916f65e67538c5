"""Calibrating the attack budget epsilon from the data (paper 003, "choosing epsilon").

From a sample of images per class, compute every pairwise distance under L2, Linf,
1 - SSIM (and LPIPS when its weights are on disk), then per norm:

* the class-by-class **mean distance matrix** (diagonal: within-class, off-diagonal:
  between-class), drawn as a heatmap;
* a **suggested epsilon per class**: ``fraction`` times the class's distance to the nearest
  image of another class (``reference="nearest"``: the smallest such distance over the
  class's sample) or to the nearest other class on average (``reference="mean"``: the
  smallest off-diagonal entry of its row), so a perturbation of that size cannot carry an
  image even ``fraction`` of the way to another class's image;
* the post's **check**: the fraction of same-class pairs within that epsilon of each other.
  Where it is above 0, the attack may turn one image into another image of its own class,
  which confounds robustness with generalization.

Everything is vectorised (``torch.cdist``, a pairwise SSIM that filters each image once) and
chunked so memory stays bounded.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from geoaudit._errors import DependencyError, InputError
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping, json_safe
from geoaudit._validation import check_images, check_interval, check_labels, check_options
from geoaudit.attacks._costs import band_matrix, gaussian_window_1d

log = logging.getLogger(__name__)

NORMS = ("l2", "linf", "ssim", "lpips")
NORM_LABELS = {"l2": "L2", "linf": "Linf", "ssim": "1 - SSIM", "lpips": "LPIPS (alex)"}
REFERENCES = ("nearest", "mean")
#: torchvision's AlexNet weights, the backbone LPIPS needs; never downloaded by geoaudit.
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"


# ---------------------------------------------------------------------- pairwise distances
def _row_chunks(n, per_row_cost, budget=2 ** 26):
    step = max(1, min(n, budget // max(per_row_cost, 1)))
    return range(0, n, step), step


def pairwise_lp(images, *, p=2.0, device=None) -> torch.Tensor:
    """All pairwise L2 (``p=2``) or Linf (``p=inf``) distances ``(N, N)`` between flattened images."""
    x = images.flatten(1).to(device or images.device, torch.float32)
    n = x.shape[0]
    starts, step = _row_chunks(n, n * (1 if p == 2 else 64))
    out = torch.empty(n, n, dtype=torch.float32)
    for s in starts:
        out[s:s + step] = torch.cdist(x[s:s + step], x, p=p).cpu()
    out.fill_diagonal_(0.0)
    return out


def _blur(x, g):
    """Separable Gaussian filter with valid padding, as two band-matrix products (several times
    faster than a small-kernel conv2d on the CPU; piq's 2-D kernel is the outer product of g)."""
    return band_matrix(x.shape[-2], g) @ (x @ band_matrix(x.shape[-1], g).T)


def pairwise_ssim_distance(images, *, kernel_size=11, kernel_sigma=1.5, k1=0.01, k2=0.03, device=None,
                           show_progress=True) -> torch.Tensor:
    """All pairwise ``1 - SSIM`` ``(N, N)``, matching ``piq.ssim(x, y, data_range=1.0)``.

    Each image's local means and variances are filtered once; per pair only ``G * (x y)`` is
    filtered (separable Gaussian), in chunks.  Images larger than 256 px are average-pooled
    first, as piq does.
    """
    dev = device or images.device
    x = images.to(dev, torch.float32)
    f = max(1, round(min(x.shape[-2:]) / 256))
    if f > 1:
        x = F.avg_pool2d(x, kernel_size=f)
    if min(x.shape[-2:]) < kernel_size:
        raise InputError(f"1 - SSIM needs images of at least {kernel_size}x{kernel_size} pixels, got "
                         f"{x.shape[-2]}x{x.shape[-1]}; resize them (image_size) or leave 'ssim' out of norms.")
    g = gaussian_window_1d(kernel_size, kernel_sigma, x.device, x.dtype)
    c1, c2 = k1 ** 2, k2 ** 2
    mu = _blur(x, g)
    var = _blur(x * x, g) - mu ** 2
    n = x.shape[0]
    per_pair = x[0].numel()
    bj = max(1, min(n, 2 ** 24 // per_pair))  # pairs per block: about 64 MB of float32
    bi = max(1, min(n, 2 ** 24 // (per_pair * bj)))
    out = torch.zeros(n, n, dtype=torch.float32)
    blocks = [(i, j) for i in range(0, n, bi) for j in range(0, n, bj) if j + bj > i]
    for i, j in progress(blocks, desc="1-SSIM pairs", unit="block", disable=not show_progress or None):
        xi, xj = x[i:i + bi], x[j:j + bj]
        prod = (xi[:, None] * xj[None]).flatten(0, 1)
        mi, mj = mu[i:i + bi][:, None], mu[j:j + bj][None]
        vi, vj = var[i:i + bi][:, None], var[j:j + bj][None]
        mij = (mi * mj).flatten(0, 1)
        sxy = _blur(prod, g) - mij
        num = (2 * mij + c1) * (2 * sxy + c2)
        den = ((mi ** 2 + mj ** 2).flatten(0, 1) + c1) * ((vi + vj).flatten(0, 1) + c2)
        s = (num / den).flatten(1).mean(1).view(xi.shape[0], xj.shape[0])
        out[i:i + bi, j:j + bj] = (1.0 - s).cpu()
    iu = torch.triu_indices(n, n, 1)
    out[iu[1], iu[0]] = out[iu[0], iu[1]]  # symmetric: the lower triangle from the upper
    out.fill_diagonal_(0.0)
    return out.clamp_min_(0.0)


def lpips_available() -> tuple[bool, str]:
    """Whether LPIPS can run offline: the ``lpips`` package and torchvision's AlexNet weights
    in the torch hub cache.  geoaudit never downloads them."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False, "the 'lpips' package is not installed (pip install lpips)"
    path = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE
    if not path.exists():
        return False, (f"LPIPS needs torchvision's AlexNet weights at {str(path)!r}, which are not present "
                       "(geoaudit does not download them)")
    return True, ""


def pairwise_lpips(images, *, device=None, batch_pairs=256, model=None, show_progress=True) -> torch.Tensor:
    """All pairwise LPIPS (AlexNet) distances ``(N, N)``; raises DependencyError offline."""
    if model is None:
        ok, why = lpips_available()
        if not ok:
            raise DependencyError(why)
        import lpips

        model = lpips.LPIPS(net="alex", verbose=False)
    dev = device or images.device
    model = model.to(dev).eval()
    x = images.to(dev, torch.float32)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = x * 2 - 1
    n = x.shape[0]
    iu = torch.triu_indices(n, n, 1)
    out = torch.zeros(n, n, dtype=torch.float32)
    starts = range(0, iu.shape[1], batch_pairs)
    with torch.no_grad():
        for s in progress(starts, desc="LPIPS pairs", unit="batch", disable=not show_progress or None):
            a, b = iu[0, s:s + batch_pairs], iu[1, s:s + batch_pairs]
            d = model(x[a], x[b]).flatten().cpu()
            out[a, b] = d
            out[b, a] = d
    return out


# ---------------------------------------------------------------------- results
def _read_only(a) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class NormCalibration(Result):
    """Calibration under one distance (arrays are read-only copies).

    Attributes
    ----------
    norm : str
    mean_distance : numpy.ndarray
        ``(K, K)`` mean pairwise distance between images of class a and class b (diagonal:
        distinct same-class pairs).  Symmetric, non-negative.
    nearest_other : numpy.ndarray
        ``(K,)`` smallest distance from an image of the class to an image of another class.
    mean_other : numpy.ndarray
        ``(K,)`` smallest off-diagonal entry of the class's row of ``mean_distance``.
    eps : numpy.ndarray
        ``(K,)`` suggested epsilon: ``fraction`` times the reference distance.
    same_class_reach : numpy.ndarray
        ``(K,)`` fraction of distinct same-class pairs at distance <= eps.
    images_reaching : numpy.ndarray
        ``(K,)`` fraction of the class's images with another same-class image within eps.
    """

    norm: str
    mean_distance: np.ndarray
    nearest_other: np.ndarray
    mean_other: np.ndarray
    eps: np.ndarray
    same_class_reach: np.ndarray
    images_reaching: np.ndarray

    def __post_init__(self):
        for f in ("mean_distance", "nearest_other", "mean_other", "eps", "same_class_reach", "images_reaching"):
            object.__setattr__(self, f, _read_only(getattr(self, f)))

    @property
    def global_eps(self) -> float:
        """One epsilon for every class: the smallest per-class one."""
        return float(self.eps.min())

    def summary(self) -> str:
        """One line: the suggested epsilon per class and the same-class reach."""
        return (f"{NORM_LABELS[self.norm]}: eps per class {np.round(self.eps, 4).tolist()}; global "
                f"{self.global_eps:.4g}; classes with same-class pairs within eps: "
                f"{int((self.same_class_reach > 0).sum())}")

    def to_dict(self, class_names=None) -> dict:
        """JSON-safe dict: matrices as nested lists and one record per class.

        Parameters
        ----------
        class_names : sequence of str, optional
            Names of the classes (default "0", "1", ...).

        Returns
        -------
        dict
        """
        names = class_names or [str(i) for i in range(len(self.eps))]
        return {
            "norm": self.norm,
            "label": NORM_LABELS[self.norm],
            "mean_distance": self.mean_distance.tolist(),
            "within_class": np.diag(self.mean_distance).tolist(),
            "per_class": [
                {"class": names[c], "eps": float(self.eps[c]), "nearest_other": float(self.nearest_other[c]),
                 "mean_other": float(self.mean_other[c]), "within_class": float(self.mean_distance[c, c]),
                 "same_class_reach": float(self.same_class_reach[c]),
                 "images_reaching": float(self.images_reaching[c])}
                for c in range(len(names))
            ],
            "global_eps": self.global_eps,
            "any_same_class_reach": bool((self.same_class_reach > 0).any()),
        }


@dataclass(frozen=True)
class CalibrationResult(Result):
    """Distance matrices and suggested epsilons for several norms.

    Frozen and immutable: mappings are read-only views, sequences are tuples, arrays are
    read-only.  ``distances`` (the full pairwise matrices, torch tensors to be treated as
    read-only) and ``labels`` stay in memory for :meth:`reach_fraction`; :meth:`to_dict`
    leaves them out.

    Attributes
    ----------
    norms : Mapping[str, NormCalibration]
        Calibration per norm, in the order asked for.
    class_names : tuple of str
    counts : tuple of int
        Sampled images per class.
    fraction : float
        Suggested eps = ``fraction`` x the reference distance.
    reference : {"nearest", "mean"}
    unavailable : Mapping[str, str]
        Norm -> why it was not computed.
    distances : Mapping[str, torch.Tensor]
        Norm -> ``(N, N)`` pairwise distances of the sample (read-only by contract).
    labels : torch.Tensor
        ``(N,)`` labels of the sample (read-only by contract).
    meta : Mapping
        Image shape, ``random_state``, ``per_class``.
    """

    norms: dict
    class_names: tuple
    counts: tuple
    fraction: float
    reference: str
    unavailable: dict = field(default_factory=dict)
    distances: dict = field(default_factory=dict, repr=False)
    labels: torch.Tensor = field(default=None, repr=False)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "norms", MappingProxyType(dict(self.norms)))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        object.__setattr__(self, "unavailable", frozen_mapping(self.unavailable))
        object.__setattr__(self, "distances", MappingProxyType(dict(self.distances)))
        object.__setattr__(self, "meta", frozen_mapping(self.meta))

    def reach_fraction(self, norm, eps) -> np.ndarray:
        """Per class, the fraction of distinct same-class pairs within ``eps`` under ``norm``.

        Parameters
        ----------
        norm : str
            One of the computed norms (keys of ``distances``).
        eps : float
            The budget to check, e.g. the usual Linf 0.3 on MNIST.

        Returns
        -------
        numpy.ndarray
            ``(K,)`` fractions in [0, 1].
        """
        if norm not in self.distances:
            raise InputError(f"No distances for norm {norm!r}; computed: {', '.join(self.distances)}.")
        return _reach(self.distances[norm], self.labels, len(self.class_names),
                      np.full(len(self.class_names), float(eps)))[0]

    def to_dict(self) -> dict:
        """JSON-safe dict of everything but the pairwise matrices (a fresh, writable dict)."""
        return {
            "method": "per-class pairwise distances (paper 003)",
            "class_names": list(self.class_names),
            "per_class_counts": list(self.counts),
            "fraction": self.fraction,
            "reference": self.reference,
            "eps_rule": (f"eps_c = {self.fraction} x "
                         + ("the smallest distance from an image of class c to an image of another class"
                            if self.reference == "nearest" else
                            "the smallest mean distance from class c to another class")),
            "norms": {k: v.to_dict(self.class_names) for k, v in self.norms.items()},
            "unavailable": dict(self.unavailable),
            "meta": json_safe(self.meta),
        }

    def summary(self) -> str:
        """One line per norm: suggested eps per class, global eps, same-class reach."""
        lines = []
        for k, v in self.norms.items():
            reach = ", ".join(f"{self.class_names[c]}:{v.same_class_reach[c]:.2%}"
                              for c in range(len(self.class_names)) if v.same_class_reach[c] > 0)
            lines.append(f"{NORM_LABELS[k]:>13}: eps per class {np.round(v.eps, 4).tolist()}; global {v.global_eps:.4g}; "
                         f"same-class pairs within eps: {reach or 'none'}")
        for k, why in self.unavailable.items():
            lines.append(f"{NORM_LABELS.get(k, k):>13}: unavailable ({why})")
        return "\n".join(lines)

    def plot_heatmaps(self, out_dir) -> list:
        """One PNG per norm, ``heatmap_<norm>.png``: the mean distance matrix, annotated.

        Deprecated: figures are drawn in :mod:`geoaudit.report`; use
        ``geoaudit.report.plot_calibration_heatmaps(result, out_dir)``.
        """
        warnings.warn("CalibrationResult.plot_heatmaps is deprecated since geoaudit 0.2; use "
                      "geoaudit.report.plot_calibration_heatmaps(result, out_dir)", DeprecationWarning,
                      stacklevel=2)
        from geoaudit.report._attack_figures import plot_calibration_heatmaps

        return plot_calibration_heatmaps(self, out_dir)


# ---------------------------------------------------------------------- computation
def _reach(dist, labels, k, eps):
    reach = np.zeros(k)
    reaching = np.zeros(k)
    for c in range(k):
        idx = torch.nonzero(labels == c).flatten()
        sub = dist[idx][:, idx]
        m = idx.numel()
        off = ~torch.eye(m, dtype=torch.bool)
        within = (sub <= eps[c]) & off
        reach[c] = float(within.sum()) / max(m * (m - 1), 1)
        reaching[c] = float(within.any(1).float().mean()) if m else 0.0
    return reach, reaching


def summarize_distances(dist, labels, num_classes, *, fraction=0.5, reference="nearest", norm="l2"):
    """:class:`NormCalibration` from a pairwise distance matrix ``(N, N)`` and labels ``(N,)``."""
    k = num_classes
    y = F.one_hot(labels.cpu(), k).to(torch.float64)
    d = dist.to(torch.float64)
    sums = y.T @ d @ y
    n_c = y.sum(0)
    pairs = n_c[:, None] * n_c[None, :] - torch.diag(n_c)  # diagonal: distinct ordered pairs
    mean = (sums / pairs).numpy()
    mean = (mean + mean.T) / 2  # exact symmetry despite rounding
    same = labels[:, None] == labels[None, :]
    other = d.masked_fill(same, float("inf")).min(1).values
    nearest = np.array([float(other[labels == c].min()) for c in range(k)])
    off = mean.copy()
    np.fill_diagonal(off, np.inf)
    mean_other = off.min(1)
    ref = nearest if reference == "nearest" else mean_other
    eps = fraction * ref
    reach, reaching = _reach(dist, labels.cpu(), k, eps)
    return NormCalibration(norm=norm, mean_distance=mean, nearest_other=nearest, mean_other=mean_other,
                           eps=eps, same_class_reach=reach, images_reaching=reaching)


def sample_per_class(labels, per_class, *, random_state=0) -> torch.Tensor:
    """Indices of up to ``per_class`` images of each class, drawn without replacement (seeded),
    sorted."""
    g = torch.Generator().manual_seed(int(random_state))
    labels = torch.as_tensor(labels).cpu()
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.sort(torch.cat(out)).values


def calibrate_epsilon(images, labels, *, norms=("l2", "linf", "ssim"), per_class=100, fraction=0.5,
                      reference="nearest", class_names=None, num_classes=None, random_state=0, device=None,
                      lpips_model=None) -> CalibrationResult:
    """Per-class distance matrices and suggested epsilons (see the module docstring).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` float in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64 class indices.
    norms : sequence of {"l2", "linf", "ssim", "lpips"}
        ``"ssim"`` is ``1 - SSIM`` (piq's definition, 11x11 Gaussian window; images >= 11 px).
        ``"lpips"`` needs torchvision's AlexNet weights in the torch hub cache; when they are
        absent it is listed in ``result.unavailable`` instead of failing.
    per_class : int or None
        Sample size per class (seeded by ``random_state``); None uses every image.
    fraction : float in (0, 1]
        Suggested eps = ``fraction`` x the reference distance.
    reference : {"nearest", "mean"}
        "nearest": the smallest distance from an image of the class to another class's image;
        "mean": the smallest mean distance to another class.
    num_classes : int, optional
        Defaults to ``max(labels) + 1``; every class needs at least 2 sampled images.
    device : torch.device, optional
        Where the distances are computed (default: the images' device).
    """
    caller = "calibrate_epsilon"
    check_images(images, caller=caller)
    check_labels(labels, images.shape[0], caller=caller, num_classes=num_classes)
    if isinstance(norms, str):
        norms = [n.strip() for n in norms.split(",") if n.strip()]
    norms = list(dict.fromkeys(norms))
    if not norms:
        raise InputError(f"The 'norms' parameter of {caller} must name at least one of {', '.join(NORMS)}.")
    for n in norms:
        check_options("norms", n, NORMS, caller=caller)
    fraction = check_interval("fraction", fraction, 0, 1, caller=caller, closed="right")
    check_options("reference", reference, REFERENCES, caller=caller)
    labels = labels.cpu().long()
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(class_names) != k:
        raise InputError(f"Got {len(class_names)} class names for {k} classes.")
    if per_class is not None:
        per_class = check_interval("per_class", per_class, 2, None, caller=caller, integer=True)
        idx = sample_per_class(labels, per_class, random_state=random_state)
        images, labels = images[idx.to(images.device)], labels[idx]
    counts = torch.bincount(labels, minlength=k)
    few = [f"{class_names[c]!r} ({int(counts[c])})" for c in range(k) if counts[c] < 2]
    if few:
        raise InputError(f"Every class needs at least 2 images for within-class distances; too few for "
                         f"{', '.join(few)}.")
    results, dists, unavailable = {}, {}, {}
    for name in norms:
        if name == "l2":
            d = pairwise_lp(images, p=2.0, device=device)
        elif name == "linf":
            d = pairwise_lp(images, p=float("inf"), device=device)
        elif name == "ssim":
            d = pairwise_ssim_distance(images, device=device)
        else:
            ok, why = (True, "") if lpips_model is not None else lpips_available()
            if not ok:
                log.warning("LPIPS unavailable: %s.", why)
                unavailable[name] = why
                continue
            d = pairwise_lpips(images, device=device, model=lpips_model)
        dists[name] = d
        results[name] = summarize_distances(d, labels, k, fraction=fraction, reference=reference, norm=name)
    return CalibrationResult(norms=results, class_names=class_names, counts=counts.tolist(), fraction=fraction,
                             reference=reference, unavailable=unavailable, distances=dists, labels=labels,
                             meta={"image_shape": list(images.shape[1:]), "random_state": random_state,
                                   "per_class": per_class})


__all__ = [
    "NORMS", "CalibrationResult", "NormCalibration", "calibrate_epsilon", "lpips_available", "pairwise_lp",
    "pairwise_lpips", "pairwise_ssim_distance", "sample_per_class", "summarize_distances",
]
