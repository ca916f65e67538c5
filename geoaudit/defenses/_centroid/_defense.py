"""The centroid defense itself (:class:`CentroidDefense`): per hooked layer, a vote for each
class whose centroid is within its threshold; the class with most votes wins."""
from __future__ import annotations

import torch
from torch import nn

from geoaudit._device import model_device
from geoaudit._errors import InputError
from geoaudit._validation import check_images, check_interval, check_labels, check_options
from geoaudit.defenses._centroid._hooks import _TINY, _Hooks
from geoaudit.defenses._centroid._layers import PAPER_LAYERS, default_layer_names, paper_layer_names
from geoaudit.defenses._centroid._scores import TIE_BREAKS, CentroidScores, _tie_keys, rank_classes

LAYER_WEIGHTINGS = ("flat", "early", "late")

#: The paper's appendix A (section 5.1): alpha_j per class, in the datasets' class order.
THRESHOLD_PRESETS = {
    "mnist": {
        "classes": [str(d) for d in range(10)],
        "thresholds": [0.3, 0.4, 0.35, 0.3, 0.35, 0.3, 0.3, 0.4, 0.3, 0.3],
    },
    "fashion-mnist": {
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"],
        "thresholds": [0.2, 0.2, 0.3, 0.2, 0.35, 0.3, 0.3, 0.25, 0.2, 0.2],
    },
}


def _as_centroids(centroids, centroid_labels, caller):
    """Normalise the accepted centroid forms to (images (M, C, H, W), labels (M,))."""
    if isinstance(centroids, (tuple, list)) and len(centroids) == 2 and centroid_labels is None \
            and isinstance(centroids[1], torch.Tensor) and centroids[1].dim() == 1:
        centroids, centroid_labels = centroids
    if not isinstance(centroids, torch.Tensor):
        raise InputError(
            f"Expected centroids of {caller} to be a tensor (K, C, H, W) with one image per class, "
            f"(S, K, C, H, W) with S sets, or a pair (images, labels); got {type(centroids).__name__}."
        )
    if centroid_labels is None:
        if centroids.dim() == 4:
            labels = torch.arange(centroids.shape[0])
        elif centroids.dim() == 5:
            s, k = centroids.shape[:2]
            labels = torch.arange(k).repeat(s)
            centroids = centroids.reshape(s * k, *centroids.shape[2:])
        else:
            raise InputError(
                f"Expected centroids of {caller} to have shape (K, C, H, W) or (S, K, C, H, W), "
                f"got {tuple(centroids.shape)}."
            )
    else:
        labels = centroid_labels
    check_images(centroids, caller=caller, name="centroids")
    check_labels(labels, centroids.shape[0], caller=caller, name="centroid_labels")
    return centroids, labels.to(torch.long).cpu()


class CentroidDefense:
    """Inference-time centroid defense (Pepe, 2023; paper 002 of geoaudit's sources).

    Parameters
    ----------
    model : torch.nn.Module
        Any classifier taking float images ``(N, C, H, W)`` in [0, 1] and returning logits
        ``(N, K)``.  It is not modified; hooks are attached only during a defended call.
    centroids : torch.Tensor or (torch.Tensor, torch.Tensor)
        Known images of each class: ``(K, C, H, W)``, one per class in class order;
        ``(S, K, C, H, W)``, S sets; or a pair ``(images (M, C, H, W), labels (M,))`` with any
        number per class.  Every class must have at least one.  With several centroids per
        class, a class's distance at a layer is the distance to its *closest* centroid, so it
        gets one vote there when *any* of its centroids is under the threshold.
        See :func:`select_centroids` for the documented ways to choose them.
    thresholds : float, sequence, torch.Tensor or str
        ``alpha``: one float for every class; ``K`` floats, one per class (the paper's form);
        an ``(L, K)`` array, per hooked layer call and class (what :func:`calibrate_thresholds`
        gives with ``per_layer=True``); or a preset name from :data:`THRESHOLD_PRESETS`
        (``"mnist"``, ``"fashion-mnist"``: the paper's appendix A tables).  Values in [0, 1].
    layers : list of str, optional
        Module names (from ``model.named_modules()``) to hook.  Default: every Linear,
        Bilinear, Conv1d/2d/3d module and every activation module (:data:`ACTIVATION_TYPES`:
        ReLU, LeakyReLU, GELU, SiLU, Sigmoid, Tanh, ...), in registration order; activations
        applied functionally (``F.relu``) are not seen.  A module called several times per
        forward pass (e.g. ResNet's shared ReLU) counts as one layer per call (``name#2``...).
    layer_weighting : {"flat", "early", "late"}
        A vote at the ``l``-th hooked layer call (``l = 1..L``) weighs 1 ("flat", the paper's
        baseline), ``e^-l`` ("early") or ``e^l`` ("late"); the weights are rescaled to a
        largest weight of 1, which changes no ranking but avoids overflow in deep models.
    top_k : int
        ``k`` of the loose variant (:meth:`loose_correct`): correct when the true class is among
        the ``k`` classes with most votes.  The paper reports ``k = 3``.
    centroid_labels : torch.Tensor, optional
        Labels of ``centroids`` given as ``(M, C, H, W)``; same as passing the pair.
    class_names : sequence of str, optional
        For error messages and reports.
    tie_break : {"logits", "first"}
        How classes with equal votes are ordered. ``"logits"`` (default, geoaudit's choice):
        by the model's logits, so when no class or every class votes the defense returns the
        undefended prediction. ``"first"``: lowest class index first, the paper's ``argmax``
        over its tally (faithful mode; see :meth:`faithful`).

    Notes
    -----
    A class gets a vote at layer ``l`` when ``D_l(x, k_j) < alpha_j`` (strictly, as in the
    paper's Algorithm 1), with ``D(u, v) = (1 - cos(u, v)) / 2`` on the flattened activations
    in [0, 1].  The prediction is the class with most votes; ties (including "no class got a
    vote") are broken by the model's own logits, so with no votes at all the defense returns
    the undefended prediction.  A zero activation vector has cosine 0 with everything (D = 0.5).

    Examples
    --------
    >>> defense = CentroidDefense(model, centroids, "mnist")            # doctest: +SKIP
    >>> defense.predict(images)                                         # doctest: +SKIP
    """

    def __init__(self, model, centroids, thresholds, *, layers=None, layer_weighting="flat", top_k=1,
                 centroid_labels=None, class_names=None, tie_break="logits"):
        caller = "CentroidDefense"
        self.tie_break = check_options("tie_break", tie_break, TIE_BREAKS, caller=caller)
        if not isinstance(model, nn.Module):
            raise InputError(f"Expected model of {caller} to be a torch.nn.Module returning logits, "
                             f"got {type(model).__name__}.")
        self.model = model
        self.layer_weighting = check_options("layer_weighting", layer_weighting, LAYER_WEIGHTINGS, caller=caller)
        self.top_k = check_interval("top_k", top_k, 1, None, caller=caller, integer=True)
        self.device = model_device(model)

        available = [n for n, _ in model.named_modules() if n]
        if isinstance(layers, str) and layers == PAPER_LAYERS:
            layers = paper_layer_names(model)
            if not layers:
                raise InputError(f"{caller} found no Linear or Conv module to hook with layers='paper'.")
        if layers is None:
            names = default_layer_names(model)
            if not names:
                raise InputError(
                    f"{caller} found no Linear, Conv or activation module in the model; pass layers=[...] "
                    f"from the available module names: {', '.join(available) or '(none)'}."
                )
        else:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise InputError(f"The 'layers' parameter of {caller} must be a list of module names. "
                                 f"Got {layers!r} instead.")
            names = list(layers)
            if not names:
                raise InputError(f"The 'layers' parameter of {caller} must name at least one module.")
            missing = [n for n in names if n not in available]
            if missing:
                raise InputError(
                    f"The model has no layer {', '.join(repr(m) for m in missing)}; available layer names: "
                    f"{', '.join(available)}."
                )
            if len(set(names)) != len(names):
                raise InputError(f"The 'layers' parameter of {caller} names a layer twice: {names!r}.")
        self.layers = names
        self._hooks = _Hooks(model, names)

        images, labels = _as_centroids(centroids, centroid_labels, caller)
        order = torch.argsort(labels, stable=True)  # class-sorted: one-per-class is the identity
        images, labels = images[order], labels[order]
        logits = self._hooks.run(images.to(self.device), "record")
        if logits.dim() != 2:
            raise InputError(f"Expected the model to return logits of shape (N, num_classes), "
                             f"got {tuple(logits.shape)}.")
        self.num_classes = k = int(logits.shape[1])
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        if len(self.class_names) != k:
            raise InputError(f"Got {len(self.class_names)} class names for a model with {k} outputs.")
        present = set(labels.tolist())
        if int(labels.max()) >= k:
            raise InputError(f"Centroid labels go up to {int(labels.max())} but the model has {k} classes.")
        absent = [c for c in range(k) if c not in present]
        if absent:
            raise InputError(
                f"Centroids are missing for {len(absent)} of {k} classes: "
                f"{', '.join(f'{c} ({self.class_names[c]!r})' for c in absent)}; every class needs at least one."
            )
        if not self._hooks.records:
            raise InputError("None of the chosen layers ran during the model's forward pass.")
        self.centroid_images = images.detach().cpu()
        self.centroid_labels = labels
        self.layer_calls = [n for n, _ in self._hooks.records]
        self._hooks.set_centroids([a for _, a in self._hooks.records])
        self._hooks.records = []
        self.num_layers = n_layers = len(self.layer_calls)
        self._one_per_class = labels.numel() == k
        self._index = labels.to(self.device)

        idx = torch.arange(1, n_layers + 1, dtype=torch.float64)
        if layer_weighting == "flat":
            w = torch.ones(n_layers, dtype=torch.float64)
        elif layer_weighting == "early":
            w = torch.exp(-(idx - 1))
        else:
            w = torch.exp(idx - n_layers)
        self.layer_weights = w.to(self.device)
        self._unit_weights = self.layer_weights if layer_weighting == "flat" else None
        self.thresholds = self._parse_thresholds(thresholds).to(self.device)

    @classmethod
    def from_data(cls, model, images, labels, *, num_sets=1, centroid_method="medoid", quantile=0.95,
                  per_layer=True, layers=None, layer_weighting="flat", top_k=1, random_state=0,
                  class_names=None):
        """Choose centroids from labelled data (:func:`select_centroids`) and calibrate the
        thresholds on the remaining images (:func:`calibrate_thresholds`).

        Parameters
        ----------
        model : torch.nn.Module
        images : torch.Tensor
            ``(N, C, H, W)`` labelled images in [0, 1].
        labels : torch.Tensor
            ``(N,)`` int64.
        num_sets, centroid_method, random_state, class_names
            As in :func:`select_centroids` (``centroid_method`` is its ``method``).
        quantile, per_layer, layers
            As in :func:`calibrate_thresholds`.
        layer_weighting, top_k
            As in :class:`CentroidDefense`.

        Returns
        -------
        CentroidDefense
            ``defense.centroid_indices`` ``(num_sets, K)`` gives the rows of ``images`` used
            as centroids.
        """
        # imported here: the selection module builds CentroidDefense objects itself
        from geoaudit.defenses._centroid._selection import calibrate_thresholds, select_centroids

        cents, cl, chosen = select_centroids(model, images, labels, num_sets=num_sets, method=centroid_method,
                                             random_state=random_state, class_names=class_names)
        rest = torch.ones(images.shape[0], dtype=torch.bool)
        rest[chosen.flatten()] = False
        if not bool(rest.any()):
            rest[:] = True
        thr = calibrate_thresholds(model, (cents.flatten(0, 1), cl), images[rest], labels[rest],
                                   quantile=quantile, per_layer=per_layer, layers=layers)
        defense = cls(model, (cents.flatten(0, 1), cl), thr, layers=layers, layer_weighting=layer_weighting,
                      top_k=top_k, class_names=class_names)
        defense.centroid_indices = chosen
        return defense

    # ------------------------------------------------------------------ thresholds
    def _parse_thresholds(self, thresholds) -> torch.Tensor:
        k, n_layers = self.num_classes, self.num_layers
        if isinstance(thresholds, str):
            if thresholds not in THRESHOLD_PRESETS:
                raise InputError(f"Unknown threshold preset {thresholds!r}; presets: "
                                 f"{', '.join(THRESHOLD_PRESETS)} (or give numbers).")
            if k != len(THRESHOLD_PRESETS[thresholds]["thresholds"]):
                raise InputError(f"Threshold preset {thresholds!r} has 10 classes but the model has {k}.")
            thresholds = THRESHOLD_PRESETS[thresholds]["thresholds"]
        try:
            t = torch.as_tensor(thresholds, dtype=torch.float32).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise InputError(f"Thresholds must be numbers, got {thresholds!r}.") from e
        if t.dim() == 0:
            t = t.expand(n_layers, k).clone()
        elif t.dim() == 1:
            if t.shape[0] != k:
                raise InputError(f"Got {t.shape[0]} thresholds for {k} classes; give one per class "
                                 f"({k}), one per layer call and class ({n_layers} x {k}), or one number.")
            t = t[None].expand(n_layers, k).clone()
        elif t.dim() == 2:
            if tuple(t.shape) != (n_layers, k):
                raise InputError(f"Got thresholds of shape {tuple(t.shape)}; per-layer thresholds must be "
                                 f"({n_layers}, {k}): one row per hooked layer call, one column per class.")
        else:
            raise InputError(f"Thresholds must be a number, K = {k} numbers or an ({n_layers}, {k}) array; "
                             f"got shape {tuple(t.shape)}.")
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
            raise InputError("Thresholds are rescaled cosine distances and must lie in [0, 1]; "
                             f"got values in [{float(t.min()):.4g}, {float(t.max()):.4g}].")
        return t

    # ------------------------------------------------------------------ forward
    def _prepare(self, images):
        # shape and dtype only: the [0, 1] range scan would cost a pass over the batch per call
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point() \
                or images.shape[0] == 0:
            check_images(images, caller="CentroidDefense")  # raises the precise message
        return images.to(self.device)

    def _scored(self, images):
        """One scored forward pass: distances ``(L, K, N)`` (classes before inputs, the layout
        the products come in, which keeps the per-element work contiguous) and the logits."""
        x = self._prepare(images)
        hooks = self._hooks
        logits = hooks.run(x, "score")
        if hooks.count != self.num_layers:
            n_calls = hooks.count
            hooks.pending, hooks.dots, hooks.norms = [], None, None
            raise InputError(f"The model called {n_calls} hooked layers, not {self.num_layers} as when "
                             "the centroids were recorded; the defense needs a fixed layer sequence.")
        with torch.no_grad():
            d, norms = hooks.take_scores()  # (L, M, N): -|a| cos / 2
            d.div_(norms.clamp_min_(_TINY)[:, None, :]).add_(0.5).clamp_(0.0, 1.0)  # (1 - cos) / 2
            if not self._one_per_class:
                n_l, _, n = d.shape
                full = torch.full((n_l, self.num_classes, n), float("inf"), device=d.device, dtype=d.dtype)
                d = full.scatter_reduce(1, self._index[None, :, None].expand(n_l, -1, n), d, reduce="amin",
                                        include_self=True)
        return d, logits

    def distances(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances to each class's nearest centroid, per hooked layer call, from one forward pass.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].

        Returns
        -------
        distances : torch.Tensor
            ``(L, N, K)`` rescaled cosine distances.
        logits : torch.Tensor
            ``(N, K)``.
        """
        d, logits = self._scored(images)
        return d.transpose(1, 2).contiguous(), logits

    def _votes(self, d, exact_float=True):
        """Votes ``(K, N)`` (float64; with "flat" weights and not ``exact_float``, the same
        counts as int32) from distances ``(L, K, N)``."""
        hit = d < self.thresholds[:, :, None]
        if self._unit_weights is self.layer_weights:  # "flat": a count, exact in any order
            count = hit.view(torch.uint8).sum(dim=0, dtype=torch.int32)
            return count.to(torch.float64) if exact_float else count
        # weighted: the float64 sum's rounding depends on the memory layout (vector lanes and
        # tails), and tied classes must get bit-equal votes, so it is taken in the (L, N, K)
        # layout, as a plain sum over dim 0 of contiguous weighted hits
        hit = hit.transpose(1, 2).contiguous().to(torch.float64)
        return (hit * self.layer_weights[:, None, None]).sum(dim=0).T

    def scores(self, images) -> CentroidScores:
        """Votes, logits, distances and the class ranking from one forward pass.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].

        Returns
        -------
        CentroidScores
        """
        d, logits = self._scored(images)  # (L, K, N)
        votes = self._votes(d).T.contiguous()
        return CentroidScores(votes=votes, logits=logits, distances=d.transpose(1, 2).contiguous(),
                              ranking=rank_classes(votes, _tie_keys(logits, self.tie_break)))

    def predict(self, images) -> torch.Tensor:
        """Defended predictions: most votes, ties broken by the logits.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N,)`` int64, on the model's device.
        """
        d, logits = self._scored(images)
        # rank_classes(votes, logits)[:, 0] without the second sort: in logit order (stable
        # sort), the first class with most votes, as argmax takes the first of equal maxima
        by_logit = torch.argsort(_tie_keys(logits, self.tie_break), dim=1, descending=True, stable=True)
        v = self._votes(d, exact_float=False).T.gather(1, by_logit)
        return by_logit.gather(1, v.argmax(dim=1, keepdim=True)).squeeze(1)

    __call__ = predict

    def topk(self, images, k=None) -> torch.Tensor:
        """The ``k`` classes with most votes, ties broken by the logits.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].
        k : int, optional
            Default: the defense's ``top_k``.

        Returns
        -------
        torch.Tensor
            ``(N, k)`` int64, best first.
        """
        k = self.top_k if k is None else check_interval("k", k, 1, self.num_classes, caller="topk", integer=True)
        return self.scores(images).topk(k)

    def loose_correct(self, images, labels, k=None) -> torch.Tensor:
        """Whether the true label is among the ``k`` best classes (the loose defense).

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].
        labels : torch.Tensor
            ``(N,)`` int64.
        k : int, optional
            Default: the defense's ``top_k``.

        Returns
        -------
        torch.Tensor
            Bool ``(N,)``.
        """
        check_labels(labels, images.shape[0], caller="loose_correct", num_classes=self.num_classes)
        k = self.top_k if k is None else check_interval("k", k, 1, self.num_classes, caller="loose_correct",
                                                        integer=True)
        return self.scores(images).loose_correct(labels, k)

    def activations(self, images) -> dict[str, torch.Tensor]:
        """The raw outputs of every hooked layer call (for inspection).

        Parameters
        ----------
        images : torch.Tensor
            ``(N, C, H, W)`` float in [0, 1].

        Returns
        -------
        dict of str -> torch.Tensor
            Layer call name -> its output.
        """
        x = self._prepare(images)
        self._hooks.run(x, "raw")
        rec, self._hooks.records = self._hooks.records, []
        return dict(rec)

    def to_dict(self) -> dict:
        """JSON-safe description of the defense.

        Returns
        -------
        dict
            ``method``, ``num_classes``, ``class_names``, ``layers``, ``layer_calls``,
            ``layer_weighting``, ``top_k``, ``centroid_labels``, ``thresholds``,
            ``thresholds_per_layer``.
        """
        t = self.thresholds.cpu()
        per_layer = bool((t != t[:1]).any())
        return {
            "method": "centroid",
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "layers": self.layers,
            "layer_calls": self.layer_calls,
            "layer_weighting": self.layer_weighting,
            "top_k": self.top_k,
            "centroid_labels": self.centroid_labels.tolist(),
            "thresholds": t.tolist() if per_layer else t[0].tolist(),
            "thresholds_per_layer": per_layer,
            "tie_break": self.tie_break,
        }

    def __repr__(self):
        return (f"CentroidDefense(num_classes={self.num_classes}, layers={self.num_layers} calls, "
                f"centroids={self.centroid_labels.numel()}, layer_weighting={self.layer_weighting!r}, "
                f"top_k={self.top_k}, tie_break={self.tie_break!r})")

    @classmethod
    def faithful(cls, model, centroids, thresholds="mnist", *, top_k=3, centroid_labels=None,
                 class_names=None):
        """The paper's defense as written: its thresholds (appendix A), one vote per Linear /
        Conv layer (7 for its MLP, 5 for its LeNet-5), flat weights, and ``argmax`` over the
        tally with ties going to the lowest class index.

        With these thresholds on a trained network most classes vote at most layers, so many
        inputs end in ties; the paper's ``argmax`` then picks the lowest class, which lowers
        clean accuracy and, under attack, stops following the (attacked) logits.  geoaudit's
        calibrated mode (:meth:`from_data`: thresholds from within-class distances, ties by
        the logits) is the improvement: it keeps clean accuracy.

        Parameters
        ----------
        model : torch.nn.Module
        centroids : torch.Tensor or (torch.Tensor, torch.Tensor)
            As for :class:`CentroidDefense`.
        thresholds : str, float or sequence
            Default ``"mnist"`` (the paper's MNIST table).
        top_k : int
            ``k`` of the loose variant (the paper's 3).
        centroid_labels : torch.Tensor, optional
        class_names : sequence of str, optional

        Returns
        -------
        CentroidDefense
        """
        return cls(model, centroids, thresholds, layers=PAPER_LAYERS, layer_weighting="flat", top_k=top_k,
                   centroid_labels=centroid_labels, class_names=class_names, tie_break="first")
