"""Choosing the centroid defense's inputs from labelled data: the centroid images
(:func:`select_centroids`) and the thresholds (:func:`calibrate_thresholds`)."""
from __future__ import annotations

import logging

import torch

from geoaudit._device import model_device
from geoaudit._errors import InputError
from geoaudit._validation import check_images, check_interval, check_labels, check_options
from geoaudit.defenses._centroid._defense import CentroidDefense
from geoaudit.defenses._centroid._hooks import _TINY, _Hooks
from geoaudit.defenses._centroid._layers import default_layer_names

# the centroid defense's one logger, named after its package
log = logging.getLogger(__package__)

CENTROID_METHODS = ("medoid", "random")


def _as_generator(random_state):
    g = torch.Generator()
    if isinstance(random_state, torch.Generator):
        return random_state
    if random_state is None:
        g.seed()
    elif isinstance(random_state, int) and not isinstance(random_state, bool):
        g.manual_seed(random_state)
    else:
        raise InputError(f"The 'random_state' parameter must be an int, a torch.Generator or None. "
                         f"Got {random_state!r} instead.")
    return g


def select_centroids(model, images, labels, *, num_sets=1, method="medoid", layer=None, random_state=0,
                     batch_size=512, class_names=None):
    """Choose ``num_sets`` centroid images per class from labelled data.

    Rules
    -----
    Only images the model classifies correctly are candidates (a class with none falls back
    to all of its images, with a warning).

    * ``"medoid"`` (default): the candidates whose activations at ``layer`` (default: the
      penultimate hooked layer call, i.e. the features feeding the output layer) have the
      smallest rescaled cosine distance to the class mean of those activations; the
      ``num_sets`` closest, closest first.  Deterministic.
    * ``"random"``: ``num_sets`` candidates drawn uniformly per class with ``random_state``.

    Parameters
    ----------
    model : torch.nn.Module
    images : torch.Tensor
        ``(N, C, H, W)`` float in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64; every class needs at least ``num_sets`` images.
    num_sets : int
        Centroids per class.
    method : {"medoid", "random"}
    layer : str, optional
        Hooked layer call whose activations define the medoid.
    random_state : int, torch.Generator or None
        Seed of ``"random"``.
    batch_size : int
    class_names : list of str, optional
        For messages.

    Returns
    -------
    (centroids, centroid_labels, indices)
        ``centroids`` ``(num_sets, K, C, H, W)`` (set-major, class order), labels ``(num_sets*K,)``
        and the chosen rows of ``images`` ``(num_sets, K)``.
    """
    caller = "select_centroids"
    check_images(images, caller=caller)
    check_labels(labels, images.shape[0], caller=caller)
    check_options("method", method, CENTROID_METHODS, caller=caller)
    num_sets = check_interval("num_sets", num_sets, 1, None, caller=caller, integer=True)
    device = model_device(model)
    names = default_layer_names(model) if layer is None else [layer]
    if layer is not None and layer not in dict(model.named_modules()):
        raise InputError(f"The model has no layer {layer!r}; available layer names: "
                         f"{', '.join(n for n, _ in model.named_modules() if n)}.")
    hooks = _Hooks(model, names)
    preds, feats = [], []
    for s in range(0, images.shape[0], batch_size):
        logits = hooks.run(images[s:s + batch_size].to(device), "record")
        preds.append(logits.argmax(1).cpu())
        rec = [a for _, a in hooks.records]
        feats.append((rec[-2] if layer is None and len(rec) > 1 else rec[-1]).cpu())
    preds, feats = torch.cat(preds), torch.cat(feats)
    k = int(logits.shape[1])
    labels = labels.cpu()
    g = _as_generator(random_state)
    chosen = torch.empty(num_sets, k, dtype=torch.long)
    for c in range(k):
        idx = torch.nonzero(labels == c).flatten()
        name = class_names[c] if class_names is not None else str(c)
        if idx.numel() < num_sets:
            raise InputError(f"Class {c} ({name!r}) has {idx.numel()} images; {num_sets} centroid set(s) "
                             f"need at least {num_sets}.")
        good = idx[preds[idx] == c]
        if good.numel() < num_sets:
            log.warning("Class %s (%r): only %d correctly classified image(s); choosing centroids among all "
                        "%d images of the class.", c, name, good.numel(), idx.numel())
            good = idx
        if method == "random":
            pick = good[torch.randperm(good.numel(), generator=g)[:num_sets]]
        else:
            f = feats[good]
            mean = f.mean(0, keepdim=True)
            mean = mean / mean.norm().clamp_min(_TINY)
            d = (1 - (f @ mean.T).squeeze(1)) / 2  # rows of f are unit vectors already
            pick = good[torch.argsort(d, stable=True)[:num_sets]]
        chosen[:, c] = pick
    cents = images[chosen.flatten()].reshape(num_sets, k, *images.shape[1:])
    return cents, torch.arange(k).repeat(num_sets), chosen


def calibrate_thresholds(model, centroids, images, labels, *, quantile=0.95, per_layer=True, layers=None,
                         centroid_labels=None, batch_size=512):
    """Thresholds from data: the ``quantile`` of within-class distances to the class's centroids.

    Rule (the paper leaves the choice of alpha open): for every image ``x`` of class ``j`` in
    ``images``, take ``D_l(x, k_j)``, the rescaled cosine distance of its activations to the
    nearest centroid of its own class at layer call ``l``.  Then

    * ``per_layer=True`` (default): ``alpha[l, j]`` = the ``quantile`` of ``D_l(x, k_j)`` over the
      images of class ``j``; an ``(L, K)`` table.  Per layer because distances at different
      depths live on different scales (non-negative ReLU outputs never exceed D = 0.5).
    * ``per_layer=False``: ``alpha[j]`` = the ``quantile`` over class ``j``'s images and all layer
      calls pooled; ``K`` values, the paper's form.

    So at a quantile ``q`` a clean image of class ``j`` votes for ``j`` at a layer with
    probability about ``q``.  Use images other than the centroids themselves (their distance
    is 0).

    Parameters
    ----------
    model : torch.nn.Module
    centroids : torch.Tensor or (torch.Tensor, torch.Tensor)
        As :class:`CentroidDefense` takes them.
    images : torch.Tensor
        ``(N, C, H, W)`` calibration images in [0, 1].
    labels : torch.Tensor
        ``(N,)`` int64; every class needs at least one image.
    quantile : float
        In [0, 1].
    per_layer : bool
        One threshold per layer call and class, or one per class pooled over layers.
    layers : list of str, optional
        Module names to hook (default: every Linear, Conv and activation).
    centroid_labels : torch.Tensor, optional
        Labels of ``centroids`` when not given with them.
    batch_size : int

    Returns
    -------
    torch.Tensor
        ``(L, K)`` or ``(K,)`` float32 thresholds, on the CPU.
    """
    caller = "calibrate_thresholds"
    q = check_interval("quantile", quantile, 0, 1, caller=caller)
    check_images(images, caller=caller)
    defense = CentroidDefense(model, centroids, 1.0, layers=layers, centroid_labels=centroid_labels)
    check_labels(labels, images.shape[0], caller=caller, num_classes=defense.num_classes)
    own = []
    for s in range(0, images.shape[0], batch_size):
        d, _ = defense.distances(images[s:s + batch_size])
        y = labels[s:s + batch_size].to(d.device)
        own.append(d.gather(2, y[None, :, None].expand(d.shape[0], -1, 1)).squeeze(2).cpu())
    own = torch.cat(own, dim=1)  # (L, N)
    labels = labels.cpu()
    out = torch.empty(defense.num_layers, defense.num_classes) if per_layer else torch.empty(defense.num_classes)
    for c in range(defense.num_classes):
        sel = own[:, labels == c]
        if sel.shape[1] == 0:
            raise InputError(f"No calibration image of class {c}; every class needs at least one.")
        out[..., c] = torch.quantile(sel, q, dim=1) if per_layer else torch.quantile(sel.flatten(), q)
    return out
