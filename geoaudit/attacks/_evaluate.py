"""Evaluation of adversarial images: success rate as the paper defines it, robust accuracy,
Lp distances, SSIM / MS-SSIM, LPIPS / DISTS when their weights are present, time, and
success after each defense."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_images, check_labels, check_options
from geoaudit.attacks._base import AttackResult, attack_mode, check_model, model_device, model_dtype
from geoaudit.attacks._metric_weights import env_weight_files, hub_dir_with

log = logging.getLogger(__name__)

# SSIM's 11-px window over piq's MS-SSIM's 5 scales needs (11 - 1) * 2**4 + 1 pixels.
MS_SSIM_MIN_SIZE = 161
SSIM_MIN_SIZE = 11
LPIPS_FILES = ("alexnet-owt-7be5be79.pth",)
DISTS_FILES = ("dists_weights.pt", "vgg16-397923af.pth")


@dataclass(frozen=True)
class EvaluationResult(Result):
    """Metrics of one set of adversarial images against one model.

    Frozen and immutable: ``distances``, ``unavailable``, ``defenses`` and ``per_image`` are
    read-only mappings (the per-image tensors are to be treated as read-only).

    Attributes
    ----------
    n : int
        Number of images.
    clean_accuracy, robust_accuracy : float
        Accuracy on the clean and on the adversarial images.
    success_rate : float or None
        (correct before and wrong after) / (correct before), the paper's Table 1 definition;
        None when no image was correct before.
    distances : dict
        Mean over images of each distance: ``l1``, ``l2``, ``linf``, ``ssim``, ``ms_ssim``
        (similarities: 1 is identical), ``lpips``, ``dists``.  A distance that could not be
        computed is absent here and listed in ``unavailable``.
    unavailable : dict
        Metric name -> why it was not computed (never reported as zero).
    defenses : dict
        Defense name -> {"clean_accuracy", "robust_accuracy", "success_rate"} after applying
        the defense to both clean and adversarial images; success counts images the defended
        model gets right on the clean image and wrong on the adversarial one.  Also, named:
        ``oblivious_success_rate`` (= ``success_rate``: images attacked against the undefended
        model, over the clean images the defended model gets right) and
        ``oblivious_success_rate_undefended_base`` (over those the undefended model gets
        right); with ``adaptive=True``, ``adaptive_robust_accuracy``,
        ``adaptive_success_rate`` (images attacked through the defense, BPDA / EOT, over the
        images the defended model gets right), ``adaptive_success_rate_undefended_base`` and
        ``eot_samples``.
    seconds_per_image : float or None
        Attack time per image, when known.
    per_image : dict
        Per-image tensors (``correct_before``, ``correct_after``, and every distance).
    """

    n: int
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float | None
    distances: dict
    unavailable: dict
    defenses: dict
    seconds_per_image: float | None
    per_image: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("distances", "unavailable", "defenses", "per_image"):
            object.__setattr__(self, name, frozen_mapping(getattr(self, name)))

    def to_dict(self) -> dict:
        """JSON-safe dict of the summary numbers (per-image tensors left out)."""
        def num(v):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        return {
            "n": int(self.n),
            "clean_accuracy": num(self.clean_accuracy),
            "robust_accuracy": num(self.robust_accuracy),
            "success_rate": num(self.success_rate),
            "distances": {k: num(v) for k, v in self.distances.items()},
            "unavailable": dict(self.unavailable),
            "defenses": {k: {kk: num(vv) for kk, vv in v.items()} for k, v in self.defenses.items()},
            "seconds_per_image": num(self.seconds_per_image),
        }

    def summary(self) -> str:
        """A few lines for a terminal."""
        sr = "n/a" if self.success_rate is None else f"{self.success_rate:.3f}"
        lines = [
            f"images: {self.n}   clean accuracy: {self.clean_accuracy:.3f}   robust accuracy: "
            f"{self.robust_accuracy:.3f}   success rate: {sr}",
            "distances: " + ", ".join(f"{k}={v:.4g}" for k, v in self.distances.items()),
        ]
        if self.unavailable:
            lines.append("unavailable: " + "; ".join(f"{k} ({v})" for k, v in self.unavailable.items()))
        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"

        for name, d in self.defenses.items():
            lines.append(f"after {name}: clean accuracy {d['clean_accuracy']:.3f}, robust accuracy "
                         f"{d['robust_accuracy']:.3f}, success rate {fmt(d['success_rate'])} (oblivious; "
                         f"{fmt(d.get('oblivious_success_rate_undefended_base'))} of the images the "
                         f"undefended model gets right)")
            if "adaptive_success_rate" in d:
                lines.append(f"  adaptive (BPDA{', EOT' if (d.get('eot_samples') or 1) > 1 else ''}): robust "
                             f"accuracy {d['adaptive_robust_accuracy']:.3f}, success rate "
                             f"{fmt(d['adaptive_success_rate'])} ({fmt(d['adaptive_success_rate_undefended_base'])} "
                             f"of the images the undefended model gets right)")
        if self.seconds_per_image is not None:
            lines.append(f"attack time: {self.seconds_per_image * 1000:.1f} ms per image")
        return "\n".join(lines)


def _hub_files_missing(files):
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    return [str(ckpt / f) for f in files if not (ckpt / f).is_file()]


def _build_metric(name, mode):
    """(module or None, reason): LPIPS (lpips package, AlexNet) or DISTS (piq)."""
    if mode is False:
        return None, "not requested"
    files = LPIPS_FILES if name == "lpips" else DISTS_FILES
    given = env_weight_files(name, files)  # $GEOAUDIT_LPIPS_WEIGHTS / $GEOAUDIT_DISTS_WEIGHTS
    missing = [str(p) for p in given.values() if not p.is_file()] if given else _hub_files_missing(files)
    if missing and mode == "auto":  # never download implicitly
        return None, "weights not present (need " + ", ".join(missing) + "); pass " + name + "=True to download"
    try:
        with hub_dir_with(given):
            if name == "lpips":
                import lpips as lpips_pkg

                net = lpips_pkg.LPIPS(net="alex", verbose=False)
            else:
                import piq

                net = piq.DISTS(reduction="none")
    except Exception as e:  # download failure, missing package: report, never fake a number
        if mode is True:
            raise DependencyError(f"{name.upper()} could not be loaded: {type(e).__name__}: {e}") from e
        return None, f"could not be loaded ({type(e).__name__}: {e})"
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), None


def _predict(model, images, device, batch_size):
    dtype = model_dtype(model, images.dtype)
    out = []
    for i in range(0, images.shape[0], batch_size):
        out.append(model(images[i:i + batch_size].to(device=device, dtype=dtype)).argmax(1).cpu())
    return torch.cat(out)


def _rate(correct_before, correct_after):
    denom = int(correct_before.sum())
    if denom == 0:
        return None
    return float((correct_before & ~correct_after).sum()) / denom


def _attack_for(attack, adv_result):
    """The attack to rerun through each defense: ``attack``, or rebuilt from the result."""
    if attack is not None:
        return attack
    if adv_result is None:
        raise InputError("evaluate(adaptive=True) needs the attack: pass attack=..., or adv_images as the "
                         "AttackResult of a geoaudit attack.")
    from geoaudit.attacks._factory import make_attack

    try:
        return make_attack(adv_result.method, **dict(adv_result.params))
    except (InputError, TypeError) as e:
        raise InputError(f"evaluate(adaptive=True) could not rebuild the {adv_result.method!r} attack from its "
                         f"result ({e}); pass attack=...") from None


def _adaptive_images(attack, model, defense, images, labels, batch_size, eot_samples):
    from geoaudit.attacks._adaptive import Defended

    wrapped = Defended(model, defense, adaptive=True, eot_samples=eot_samples)
    out = [attack(wrapped, images[i:i + batch_size], labels[i:i + batch_size]).images
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out), wrapped.eot_samples


def evaluate(model, images, adv_images, labels, *, defenses=(), lpips="auto", dists="auto", seconds=None,
             batch_size=128, adaptive=False, attack=None, eot_samples=None) -> EvaluationResult:
    """Evaluate adversarial images against ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking float (N, C, H, W) images in [0, 1] and returning logits.
    images, adv_images : torch.Tensor or AttackResult
        Clean and adversarial images, same shape, values in [0, 1].  ``adv_images`` may be the
        :class:`AttackResult`, whose time then gives ``seconds_per_image``.
    labels : torch.Tensor
        True labels (N,).
    defenses : sequence of callables
        Batch transforms ``defense(images) -> images`` (e.g. ``JPEG(75)``, ``BitDepth(4)``);
        success is also reported after each.
    lpips, dists : "auto", True or False
        "auto": computed when the weights are already on this machine (torch hub cache), else
        listed in ``unavailable``; True: load them, downloading if needed (error if that
        fails); False: skip.
    seconds : float or None
        Total attack time, when ``adv_images`` is a tensor.
    batch_size : int
        Images per forward pass (and per adaptive attack call).
    adaptive : bool
        Also attack each defended model adaptively: ``attack`` is run again against
        ``Defended(model, defense)`` (BPDA through the defense, EOT over ``eot_samples``
        draws for a randomised defense) and its success is reported next to the oblivious
        one.  A defense evaluated only obliviously is not evaluated.
    attack : Attack or None
        The attack for ``adaptive``; default: rebuilt from ``adv_images`` when it is an
        :class:`AttackResult` (``make_attack(result.method, **result.params)``).
    eot_samples : int or None
        Draws per gradient for randomised defenses (default 8; 1 for deterministic ones).

    Returns
    -------
    EvaluationResult
    """
    check_model(model)
    seconds_per_image = None
    adv_result = adv_images if isinstance(adv_images, AttackResult) else None
    check_options("adaptive", adaptive, (False, True), caller="evaluate")
    if adaptive:
        attack = _attack_for(attack, adv_result)
    if isinstance(adv_images, AttackResult):
        seconds = adv_images.seconds if seconds is None else seconds
        adv_images = adv_images.images
    check_images(images, caller="evaluate")
    check_images(adv_images, caller="evaluate", name="adv_images")
    if adv_images.shape != images.shape:
        raise InputError(
            f"Expected adv_images of evaluate to have the shape of images {tuple(images.shape)}, "
            f"got {tuple(adv_images.shape)}."
        )
    n = images.shape[0]
    check_labels(labels, n, caller="evaluate")
    check_options("lpips", lpips, ("auto", True, False), caller="evaluate")
    check_options("dists", dists, ("auto", True, False), caller="evaluate")
    if seconds is not None:
        seconds_per_image = float(seconds) / n
    labels = labels.detach().cpu().long()
    device = model_device(model)
    images, adv_images = images.detach(), adv_images.detach()

    per_image, distances, unavailable, defended = {}, {}, {}, {}
    with attack_mode(model), torch.no_grad():
        first = model(images[:1].to(device=device, dtype=model_dtype(model, images.dtype)))
        check_labels(labels, n, caller="evaluate", num_classes=first.shape[1])
        correct_before = _predict(model, images, device, batch_size) == labels
        correct_after = _predict(model, adv_images, device, batch_size) == labels
        for d in defenses:
            name = getattr(d, "__name__", None) or repr(d)  # JPEG(quality=75), or a function's name
            cb = _predict(model, d(images), device, batch_size) == labels
            ca = _predict(model, d(adv_images), device, batch_size) == labels
            defended[name] = {"clean_accuracy": float(cb.float().mean()), "robust_accuracy": float(ca.float().mean()),
                              "success_rate": _rate(cb, ca), "oblivious_success_rate": _rate(cb, ca),
                              "oblivious_success_rate_undefended_base": _rate(correct_before, ca)}
            if adaptive:
                with torch.enable_grad():
                    adv_d, k = _adaptive_images(attack, model, d, images, labels, batch_size, eot_samples)
                cad = _predict(model, d(adv_d), device, batch_size) == labels
                defended[name].update({"adaptive_robust_accuracy": float(cad.float().mean()),
                                       "adaptive_success_rate": _rate(cb, cad),
                                       "adaptive_success_rate_undefended_base": _rate(correct_before, cad),
                                       "eot_samples": k})

    per_image["correct_before"], per_image["correct_after"] = correct_before, correct_after
    diff = (adv_images - images).flatten(1).to(torch.float64).cpu()
    per_image["l1"] = diff.abs().sum(1)
    per_image["l2"] = diff.norm(dim=1)
    per_image["linf"] = diff.abs().amax(1)
    _similarities(images, adv_images, device, batch_size, per_image, unavailable)
    for name, mode in (("lpips", lpips), ("dists", dists)):
        net, reason = _build_metric(name, mode)
        if net is None:
            unavailable[name] = reason
            continue
        if images.shape[1] != 3:
            unavailable[name] = f"needs RGB images, got {images.shape[1]} channels"
            continue
        net = net.to(device)
        vals = []
        with torch.no_grad():
            for i in range(0, n, batch_size):
                a, b = adv_images[i:i + batch_size].to(device), images[i:i + batch_size].to(device)
                v = net(a * 2 - 1, b * 2 - 1) if name == "lpips" else net(a, b)  # lpips expects [-1, 1]
                vals.append(v.flatten().double().cpu())
        per_image[name] = torch.cat(vals)
    for k in ("l1", "l2", "linf", "ssim", "ms_ssim", "lpips", "dists"):
        if k in per_image:
            distances[k] = float(per_image[k].mean())
    return EvaluationResult(
        n=n,
        clean_accuracy=float(correct_before.float().mean()),
        robust_accuracy=float(correct_after.float().mean()),
        success_rate=_rate(correct_before, correct_after),
        distances=distances,
        unavailable=unavailable,
        defenses=defended,
        seconds_per_image=seconds_per_image,
        per_image=per_image,
    )


def _similarities(images, adv_images, device, batch_size, per_image, unavailable):
    import piq

    side = min(images.shape[-2:])
    for key, fn, min_size in (("ssim", piq.ssim, SSIM_MIN_SIZE), ("ms_ssim", piq.multi_scale_ssim, MS_SSIM_MIN_SIZE)):
        if side < min_size:
            unavailable[key] = f"needs images of at least {min_size}x{min_size} pixels, got {side}"
            continue
        vals = []
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                a = adv_images[i:i + batch_size].to(device).clamp(0, 1)
                b = images[i:i + batch_size].to(device)
                vals.append(fn(a, b, data_range=1.0, reduction="none").double().cpu())
        per_image[key] = torch.cat(vals)
