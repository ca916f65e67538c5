"""k-means per label for the cluster-center attack reuse of appendix D.

Images of each label are grouped into clusters of about ``cluster_size`` images; the member
nearest each cluster's mean is the cluster's *center*.  Two interchangeable backends:
geoaudit's torch implementation (k-means++ seeding, Lloyd iterations, distances in chunks of
rows), which runs on any device, and scikit-learn (CPU, BLAS limited to one thread: with
unlimited threads on a shared machine it was 4-5x slower).  "auto" is torch everywhere: it was
the faster of the two on the CPU too (``benchmarks/training.py``, section k-means).

Clustering runs on reduced features: the images, read in chunks and average-pooled to
``feature_size`` pixels square, so neither a float copy of the data set nor its full pixels
are ever held at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._results import Result
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

KMEANS_BACKENDS = ("auto", "sklearn", "torch")


@dataclass(frozen=True)
class Clustering(Result):
    """Clusters of same-label examples.

    Attributes
    ----------
    assignment : torch.Tensor
        int64 ``(N,)``: the cluster of each example.
    centers : torch.Tensor
        int64 ``(K,)``: the index of each cluster's center example (a member of the cluster,
        nearest its mean).
    cluster_labels : torch.Tensor
        int64 ``(K,)``: the label shared by the cluster's members.
    backend : str
        "sklearn" or "torch".
    """

    assignment: torch.Tensor
    centers: torch.Tensor
    cluster_labels: torch.Tensor
    backend: str

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    def summary(self) -> str:
        """Backend, number of clusters and their sizes, one line."""
        d = self.to_dict()
        return (f"k-means ({d['backend']}): {d['n_examples']} examples in {d['n_clusters']} clusters "
                f"(mean size {d['mean_cluster_size']:.1f}, largest {d['max_cluster_size']})")

    def to_dict(self) -> dict:
        """Backend, cluster count and sizes (JSON-safe; no tensors)."""
        sizes = torch.bincount(self.assignment.cpu(), minlength=self.n_clusters)
        return {"backend": self.backend, "n_clusters": self.n_clusters, "n_examples": int(self.assignment.numel()),
                "mean_cluster_size": float(sizes.float().mean()), "max_cluster_size": int(sizes.max())}


#: Rows per chunk of the (rows, k) distance matrix: bounds k-means' memory at any N.
CHUNK_ROWS = 16384


def _kmeans_torch(x: torch.Tensor, k: int, seed: int, n_iter=100, tol=1e-6):
    """Lloyd's k-means with k-means++ seeding, on ``x``'s device.  Returns (assignment, means)."""
    n = x.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    sq = (x * x).sum(1)

    def dist2(c):  # (n, k) squared distances, clamped against round-off; in chunks of rows
        cc = (c * c).sum(1)[None, :]
        if n <= CHUNK_ROWS:
            return (sq[:, None] - 2.0 * x @ c.T + cc).clamp_min_(0)
        return torch.cat([(sq[lo:lo + CHUNK_ROWS, None] - 2.0 * x[lo:lo + CHUNK_ROWS] @ c.T + cc).clamp_min_(0)
                          for lo in range(0, n, CHUNK_ROWS)])

    first = int(torch.randint(n, (1,), generator=g))
    means = x[first:first + 1].clone()
    closest = dist2(means).squeeze(1)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct points than clusters
            nxt = int(torch.randint(n, (1,), generator=g))
        else:
            nxt = int(torch.multinomial((closest / total).double().cpu(), 1, generator=g))
        means = torch.cat([means, x[nxt:nxt + 1]])
        closest = torch.minimum(closest, dist2(x[nxt:nxt + 1]).squeeze(1))
    assign = None
    for _ in range(n_iter):
        d = dist2(means)
        new_assign = d.argmin(1)
        if assign is not None and bool((new_assign == assign).all()):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(means).index_add_(0, assign, x)
        empty = counts == 0
        new_means = sums / counts.clamp_min(1)[:, None]
        if bool(empty.any()):  # re-seed an empty cluster at the point farthest from its mean
            far = d.gather(1, assign[:, None]).squeeze(1).topk(int(empty.sum())).indices
            new_means[empty] = x[far]
        shift = float((new_means - means).pow(2).sum())
        means = new_means
        if shift <= tol:
            break
    assign = dist2(means).argmin(1)
    return assign, means


def _kmeans_sklearn(x: torch.Tensor, k: int, seed: int, threads=1):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    xn = x.detach().cpu().numpy().astype(np.float32)
    with threadpool_limits(limits=threads):  # unlimited BLAS threads oversubscribe small problems
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(xn)
    return torch.as_tensor(km.labels_, dtype=torch.long, device=x.device), None


#: Bytes of the float32 copy that one chunk of :func:`features` converts: 512 images at 224 px
#: (3 x 224 x 224 x 4 B = 588 KiB each: 294 MiB, plus the chunk's uint8 source, 74 MiB); more
#: images per chunk when they are smaller (44,600 at 24 px).
FEATURE_CHUNK_BYTES = 512 * 3 * 224 * 224 * 4


def features(images: torch.Tensor, *, feature_size=None, device=None, chunk=None) -> torch.Tensor:
    """Flattened float32 features of ``images`` in [0, 1], average-pooled to ``feature_size``.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``, uint8 or float in [0, 1], on any device.
    feature_size : int, optional
        Pool to this many pixels square when the images are larger.
    device : torch.device, optional
        Where the features go (default: the images' device); chunks move there one at a time.
    chunk : int, optional
        Images converted at once (bounds the float copy); default: as many as fit in
        :data:`FEATURE_CHUNK_BYTES` of float32 (512 at 224 px, 294 MiB).

    Returns
    -------
    torch.Tensor
        float32 ``(N, C * s * s)``; the same values whatever the chunk.
    """
    device = images.device if device is None else torch.device(device)
    n = images.shape[0]
    per_image = int(np.prod(images.shape[1:])) * 4
    chunk = max(1, FEATURE_CHUNK_BYTES // max(per_image, 1)) if chunk is None else int(chunk)
    side = images.shape[-1] if feature_size is None or images.shape[-1] <= feature_size else feature_size
    out = None
    for lo in range(0, n, chunk):
        x = images[lo:lo + chunk].to(device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if feature_size is not None and x.shape[-1] > feature_size:
            x = torch.nn.functional.adaptive_avg_pool2d(x, feature_size)
        x = x.flatten(1)
        if out is None:  # filled in place: no second copy of the features at the end
            out = torch.empty((n, x.shape[1]), dtype=torch.float32, device=device)
        out[lo:lo + x.shape[0]] = x
    if out is None:
        out = torch.empty((0, images.shape[1] * side * side), dtype=torch.float32, device=device)
    return out


def cluster_by_label(images, labels, *, cluster_size=5, backend="auto", random_state=0, feature_size=None,
                     device=None) -> Clustering:
    """k-means within each label, about ``cluster_size`` examples per cluster.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``, uint8 or float; clustered on flattened pixels in [0, 1], on
        ``images``' device for the torch backend.
    labels : torch.Tensor
        int64 ``(N,)``.
    cluster_size : int
        Target members per cluster; a label with ``n`` examples gets ``max(1, round(n / cluster_size))``
        clusters.
    backend : {"auto", "sklearn", "torch"}
        "auto": torch (measured faster on the CPU as well as on a GPU).
    random_state : int
    feature_size : int, optional
        Downsample images to this square size before clustering (cheaper for large images).
    device : torch.device, optional
        Where the torch backend clusters (default: the images' device); the images move there
        in chunks.

    Returns
    -------
    Clustering
    """
    caller = "cluster_by_label"
    cluster_size = check_interval("cluster_size", cluster_size, 1, None, caller=caller, integer=True)
    backend = check_options("backend", backend, KMEANS_BACKENDS, caller=caller)
    random_state = check_interval("random_state", random_state, 0, None, caller=caller, integer=True)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError("Expected images of shape (N, C, H, W) for cluster_by_label.")
    if feature_size is not None:
        feature_size = check_interval("feature_size", feature_size, 1, None, caller=caller, integer=True)
    if backend == "auto":
        backend = "torch"
    x = features(images, feature_size=feature_size, device=device if backend == "torch" else "cpu")
    labels = labels.to(x.device).long()
    n = x.shape[0]
    assignment = torch.empty(n, dtype=torch.long, device=x.device)
    centers, cluster_labels = [], []
    offset = 0
    from geoaudit._progress import progress

    bar = progress(total=n, desc=f"k-means ({backend})", unit="image")  # ETA in images: labels differ in size
    for lab in torch.unique(labels).tolist():
        idx = (labels == lab).nonzero().squeeze(1)
        xl = x[idx]
        k = max(1, min(int(round(len(idx) / cluster_size)), len(idx)))
        if k == 1:
            assign = torch.zeros(len(idx), dtype=torch.long, device=x.device)
        elif backend == "torch":
            assign, _ = _kmeans_torch(xl, k, random_state + int(lab))
        else:
            assign, _ = _kmeans_sklearn(xl, k, random_state + int(lab))
        # Drop empty clusters, renumber, and pick each cluster's member nearest its mean.
        used = torch.unique(assign)
        remap = torch.full((int(assign.max()) + 1,), -1, dtype=torch.long, device=x.device)
        remap[used] = torch.arange(len(used), device=x.device)
        assign = remap[assign]
        kk = len(used)
        counts = torch.bincount(assign, minlength=kk).to(x.dtype)
        means = torch.zeros(kk, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assign, xl) / counts[:, None]
        d = (xl - means[assign]).pow(2).sum(1)
        mind = torch.full((kk,), float("inf"), dtype=d.dtype, device=x.device).scatter_reduce(0, assign, d, "amin")
        pos = torch.arange(len(idx), device=x.device)
        cand = torch.where(d == mind[assign], pos, len(idx))
        first = torch.full((kk,), len(idx), dtype=torch.long, device=x.device).scatter_reduce(0, assign, cand, "amin")
        centers.append(idx[first])
        assignment[idx] = assign + offset
        cluster_labels += [int(lab)] * kk
        offset += kk
        bar.update(len(idx))
    bar.close()
    log.debug("k-means (%s): %d examples in %d clusters", backend, n, offset)
    dev = images.device if device is None else torch.device(device)
    return Clustering(assignment.to(dev), torch.cat(centers).to(dev),
                      torch.as_tensor(cluster_labels, dtype=torch.long, device=dev), backend)

