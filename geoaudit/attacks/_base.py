"""The attack contract shared by every attack in geoaudit.

An attack is an object holding validated hyperparameters, called as
``attack(model, images, labels) -> AttackResult``; the model is passed per call so one
attack object serves a whole model population.  The attack:

* runs on the model's device (the result comes back on the images' device and dtype);
* switches the model to eval mode for the attack and restores every module's own mode;
* takes input gradients with ``torch.autograd.grad`` while the parameters' ``requires_grad``
  is switched off, so parameter ``.grad`` is never touched and no weight gradient is computed;
* returns detached images in [0, 1].
"""
from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from geoaudit._device import model_device  # noqa: F401  (used here and by the attacks)
from geoaudit._errors import InputError
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_images, check_labels


@dataclass(frozen=True)
class AttackResult(Result):
    """What an attack returns (frozen; its tensors are to be treated as read-only).

    Attributes
    ----------
    images : torch.Tensor
        Adversarial images, shape ``(N, C, H, W)``, values in [0, 1], detached, same device
        and dtype as the input images.
    success : torch.Tensor
        Bool ``(N,)``: the attack reached its goal for that sample (the prediction differs from
        the label, or for :class:`PerceptualDRO` the margin exceeds the confidence).
    steps : torch.Tensor
        Int64 ``(N,)``: gradient steps spent on each sample.
    margins : torch.Tensor
        Float ``(N,)``: ``max_{i != y} logit_i - logit_y`` at the returned images
        (> 0 means misclassified).
    seconds : float
        Wall-clock time of the whole call.
    method : str
        The attack's name.
    params : Mapping
        The attack's hyperparameters (a read-only mapping).
    """

    images: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    margins: torch.Tensor
    seconds: float
    method: str
    params: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", frozen_mapping(self.params))

    @property
    def success_rate(self) -> float:
        """Fraction of samples where the attack reached its goal."""
        return float(self.success.float().mean())

    def summary(self) -> str:
        """One line: method, images, success rate, mean steps, time."""
        d = self.to_dict()
        return (f"{d['method']}: {d['n']} images, success rate {d['success_rate']:.3f}, mean steps "
                f"{d['mean_steps']:.1f}, {d['seconds']:.2f} s")

    def to_dict(self) -> dict:
        """JSON-safe summary (no tensors)."""
        n = int(self.success.numel())
        return {
            "method": self.method,
            "params": {k: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                       for k, v in self.params.items()},
            "n": n,
            "success_rate": self.success_rate,
            "mean_steps": float(self.steps.float().mean()),
            "total_steps": int(self.steps.sum()),
            "seconds": float(self.seconds),
            "seconds_per_image": float(self.seconds) / max(n, 1),
        }


def check_model(model):
    """Attacks need a torch module (they switch its mode and freeze its parameters)."""
    if not isinstance(model, nn.Module):
        raise InputError(
            f"Expected model to be a torch.nn.Module returning logits, got {type(model).__name__}."
        )
    return model


def model_dtype(model, default):
    """The floating dtype of the model's parameters (the attack computes in it)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return default


@contextlib.contextmanager
def attack_mode(model):
    """Eval mode and frozen parameters for the duration of an attack; restore both after."""
    check_model(model)
    modes = [(m, m.training) for m in model.modules()]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, was_training in modes:
            m.training = was_training


def margins_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{i != y} logit_i - logit_y`` per sample (Algorithm 1, line 4)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return other - true


def make_generator(random_state, device="cpu"):
    """A torch.Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(random_state, torch.Generator):
        return random_state
    g = torch.Generator(device=device)
    if random_state is None:
        g.seed()
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        g.manual_seed(int(random_state))
    else:
        raise InputError(
            "The 'random_state' parameter must be an int, a torch.Generator or None. "
            f"Got {random_state!r} instead."
        )
    return g


class Attack:
    """Base class: validation, device handling, eval mode, timing.

    Subclasses implement ``_run(model, x, y) -> (adv, success, steps, margins)`` on the
    model's device, with ``x`` and ``y`` already validated.  ``_params()`` lists the
    hyperparameters for :class:`AttackResult.params` and ``repr``.
    """

    name = "attack"
    min_size = None
    #: True when ``_run`` checks the labels against the model's outputs on its own first
    #: forward pass (saves the one-image forward the base class otherwise spends on it).
    checks_own_outputs = False

    def _params(self) -> dict:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, model, images, labels) -> AttackResult:
        """Attack ``images`` (N, C, H, W) in [0, 1] with true ``labels`` (N,) against ``model``."""
        check_model(model)
        label_max = self._check_inputs(images, labels)
        start = time.perf_counter()
        device = model_device(model)
        x = images.detach().to(device=device, dtype=model_dtype(model, images.dtype))
        y = labels.detach().to(device=device, dtype=torch.long)
        self._label_max = label_max
        try:
            with attack_mode(model):
                if not self.checks_own_outputs:
                    with torch.no_grad():  # one image tells the number of outputs for the label check
                        self._check_outputs(model(x[:1]), y)
                adv, success, steps, margins = self._run(model, x, y)
        finally:  # the attack keeps no state between calls
            self.__dict__.pop("_label_max", None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return AttackResult(
            images=adv.detach().clamp_(0.0, 1.0).to(device=images.device, dtype=images.dtype),
            success=success.detach().to(images.device),
            steps=steps.detach().to(device=images.device, dtype=torch.long),
            margins=margins.detach().to(images.device),
            seconds=time.perf_counter() - start,
            method=self.name,
            params=self._params(),
        )

    #: The largest label of the call in progress (set by ``__call__`` for ``_check_outputs``).
    _label_max = None

    def _check_inputs(self, images, labels):
        """Validate the call's images and labels; return the largest label.

        Shapes and dtypes are checked on the host; the value ranges of images and labels are
        read from the device in one transfer (the validators, which raise the messages, run
        only when something is wrong)."""
        caller = type(self).__name__
        structural = (isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[0] > 0
                      and images.is_floating_point()
                      and (self.min_size is None or min(images.shape[-2:]) >= self.min_size)
                      and isinstance(labels, torch.Tensor) and labels.dim() == 1
                      and labels.shape[0] == images.shape[0] and not labels.is_floating_point()
                      and labels.dtype != torch.bool)
        if structural:
            lo, hi = torch.aminmax(images.detach())
            llo, lhi = torch.aminmax(labels.detach().to(device=images.device, dtype=torch.long))
            lo, hi, llo, lhi = torch.stack([lo.double(), hi.double(), llo.double(), lhi.double()]).tolist()
            if math.isfinite(lo) and math.isfinite(hi) and lo >= 0.0 and hi <= 1.0 and llo >= 0:
                return int(lhi)
        try:
            check_images(images, caller=caller, min_size=self.min_size)
        except InputError as e:
            hint = getattr(self, "size_hint", None)
            if hint and "pixels" in str(e):
                raise InputError(f"{e} {hint}") from None
            raise
        check_labels(labels, images.shape[0], caller=caller)
        return int(labels.max())

    def _check_outputs(self, logits, labels):
        """Check the labels against the model's number of outputs (first forward pass)."""
        if logits.dim() != 2:
            raise InputError(
                f"Expected the model to return logits of shape (N, num_classes), got {tuple(logits.shape)}."
            )
        if self._label_max is not None and self._label_max < logits.shape[1]:
            return  # the labels' range is known from the input check: no read of the device
        check_labels(labels, labels.shape[0], caller=type(self).__name__, num_classes=logits.shape[1])

    def replace(self, **changes):
        """A copy with some hyperparameters changed (validated again)."""
        params = dict(self._params())
        params.update(changes)
        return type(self)(**params)

