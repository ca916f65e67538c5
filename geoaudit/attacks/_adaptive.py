"""Adaptive attacks on input-transformation defenses: BPDA and EOT (Athalye et al., 2018).

A defense evaluated only with adversarial images made against the undefended model
("oblivious") is not evaluated: the attacker knows the defense.  :class:`Defended` puts a
defense in front of a model as one differentiable module, so that *any* attack can be run
against the defended model:

* the defense's forward pass is applied as is, and its backward pass is the identity
  (:class:`BPDA`, backward pass differentiable approximation, straight-through), which is
  the standard treatment of non-differentiable transforms such as JPEG and bit depth;
* for randomised defenses the model's output is averaged over ``eot_samples`` random draws
  of the defense (expectation over transformation): the log of the mean probability, so the
  cross-entropy the attacks ascend is ``-log E[p_y]``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from geoaudit._errors import InputError
from geoaudit._validation import check_interval

#: Draws per gradient for a randomised defense when none is given.
DEFAULT_EOT_SAMPLES = 8


class BPDA:
    """Straight-through version of a defense: forward ``defense(x)``, backward the identity.

    Parameters
    ----------
    defense : callable
        Batch transform ``defense(images) -> images`` (same shape), e.g. ``JPEG(75)``.

    Examples
    --------
    >>> attack(Defended(model, JPEG(75)), images, labels)       # doctest: +SKIP
    >>> BPDA(JPEG(75))(x).backward(g)   # x.grad == g            # doctest: +SKIP
    """

    def __init__(self, defense):
        if not callable(defense):
            raise InputError(f"BPDA needs a callable defense(images) -> images, got {defense!r}.")
        self.defense = defense

    def __repr__(self):
        return f"BPDA({self.defense!r})"

    def __call__(self, x):
        with torch.no_grad():
            out = self.defense(x.detach())
        if out.shape != x.shape:
            raise InputError(f"The defense {self.defense!r} changed the image shape from {tuple(x.shape)} "
                             f"to {tuple(out.shape)}; BPDA needs the same shape.")
        return x + (out.to(dtype=x.dtype, device=x.device) - x).detach()


def is_randomised(defense):
    """True when ``defense`` says it draws at random (``defense.randomised``)."""
    return bool(getattr(defense, "randomised", False))


class Defended(nn.Module):
    """``model(defense(x))`` as one module that attacks can differentiate (BPDA, EOT).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (logits).
    defense : callable
        Batch transform in front of it.
    adaptive : bool
        True (default): gradients pass through the defense as the identity (BPDA).  False:
        the defense blocks the gradient (attacks then see a zero gradient); kept to show what
        an attack that ignores the defense's non-differentiability gets.
    eot_samples : int or None
        Draws of the defense per forward pass, whose probabilities are averaged.  Default:
        8 for a randomised defense (``defense.randomised``), else 1.

    Returns (when called)
    ---------------------
    torch.Tensor
        Logits ``(N, K)`` (with EOT: log of the mean probability over the draws).
    """

    def __init__(self, model, defense, *, adaptive=True, eot_samples=None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"Defended needs a torch.nn.Module model, got {type(model).__name__}.")
        if not callable(defense):
            raise InputError(f"Defended needs a callable defense(images) -> images, got {defense!r}.")
        self.model = model
        self.defense = defense
        self.adaptive = bool(adaptive)
        if eot_samples is None:
            eot_samples = DEFAULT_EOT_SAMPLES if is_randomised(defense) else 1
        self.eot_samples = check_interval("eot_samples", eot_samples, 1, None, caller="Defended", integer=True)
        self._transform = BPDA(defense) if self.adaptive else (lambda x: defense(x.detach()))

    def extra_repr(self):
        return f"defense={self.defense!r}, adaptive={self.adaptive}, eot_samples={self.eot_samples}"

    def forward(self, x):
        if self.eot_samples == 1:
            return self.model(self._transform(x))
        logp = torch.stack([torch.log_softmax(self.model(self._transform(x)), dim=1)
                            for _ in range(self.eot_samples)])
        return torch.logsumexp(logp, dim=0) - math.log(self.eot_samples)
