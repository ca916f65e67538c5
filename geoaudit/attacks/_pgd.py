"""Baselines: projected gradient descent (L2 and Linf) and the fast gradient sign method."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._base import Attack, make_generator, margins_of

_TINY = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def input_gradient(model, x, y):
    """Logits at ``x`` and the gradient of the summed cross-entropy with respect to ``x``."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x])
    return logits.detach(), grad


class PGD(Attack):
    """Projected gradient descent on the cross-entropy (Madry et al., 2018).

    Parameters
    ----------
    eps : float or None
        Radius of the perturbation ball (L2 or Linf norm, in [0, 1] pixel units), > 0.
        Default (None): ``DEFAULT_EPS[norm]``, 1.0 for L2 and 8/255 for Linf (budgets common
        in the robustness literature).
    step_size : float or None
        Step length per iteration, > 0.  L2: the step is ``step_size * g / ||g||_2``;
        Linf: ``step_size * sign(g)``.  Default (None): ``eps / 4``.
    steps : int
        Number of iterations, >= 1 (default 10).  Every sample gets all of them (no early
        stop).
    norm : {"l2", "linf"}
        The threat model.
    random_start : bool
        Start from a uniformly drawn point of the ball instead of the clean image.
    random_state : int, torch.Generator or None
        Seed of the random start.

    Returns (when called)
    ---------------------
    AttackResult
        ``success`` is "misclassified at the end", ``steps`` is ``steps`` for every sample.

    Examples
    --------
    >>> attack = PGD(eps=0.5, step_size=0.1, steps=10)          # doctest: +SKIP
    >>> result = attack(model, images, labels)                   # doctest: +SKIP
    >>> result.images.shape == images.shape                      # doctest: +SKIP
    True

    References
    ----------
    Madry, Makelov, Schmidt, Tsipras, Vladu (2018). Towards deep learning models resistant
    to adversarial attacks. ICLR.
    """

    name = "pgd"
    #: Ball radius per norm when ``eps`` is None.
    DEFAULT_EPS = {"l2": 1.0, "linf": 8 / 255}

    def __init__(self, eps=None, step_size=None, steps=10, *, norm="l2", random_start=False,
                 random_state=None):
        caller = type(self).__name__
        self.norm = check_options("norm", norm, ("l2", "linf"), caller=caller)
        eps = self.DEFAULT_EPS[self.norm] if eps is None else eps
        self.eps = check_interval("eps", eps, 0, None, caller=caller, closed="neither")
        step_size = self.eps / 4 if step_size is None else step_size
        self.step_size = check_interval("step_size", step_size, 0, None, caller=caller, closed="neither")
        self.steps = check_interval("steps", steps, 1, None, caller=caller, integer=True)
        self.random_start = check_options("random_start", random_start, (False, True), caller=caller)
        make_generator(random_state)  # validate early
        self.random_state = random_state

    def _params(self):
        return {"eps": self.eps, "step_size": self.step_size, "steps": self.steps, "norm": self.norm,
                "random_start": self.random_start, "random_state": self.random_state}

    def _project(self, x, adv):
        delta = adv - x
        if self.norm == "l2":
            delta = delta * (self.eps / _flat_norm(delta)).clamp(max=1.0)
        else:
            delta = delta.clamp(-self.eps, self.eps)
        return (x + delta).clamp_(0.0, 1.0)

    def _start(self, x):
        if not self.random_start:
            return x.clone()
        # Drawn on the CPU so a seed gives the same start on every device.
        g = make_generator(self.random_state)
        if self.norm == "l2":
            d = torch.randn(x.shape, generator=g, dtype=torch.float64)
            d = d / _flat_norm(d)
            r = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=g, dtype=torch.float64)
            delta = d * r * self.eps
        else:
            delta = (torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1) * self.eps
        return self._project(x, x + delta.to(device=x.device, dtype=x.dtype))

    def _run(self, model, x, y):
        adv = self._start(x)
        for _ in range(self.steps):
            _, grad = input_gradient(model, adv, y)
            if self.norm == "l2":
                step = grad / _flat_norm(grad)
            else:
                step = grad.sign()
            adv = self._project(x, adv + self.step_size * step)
        with torch.no_grad():
            margins = margins_of(model(adv), y)
        steps = torch.full((x.shape[0],), self.steps, dtype=torch.long, device=x.device)
        return adv, margins > 0, steps, margins


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): ``x + eps * sign(grad loss)``.

    Parameters
    ----------
    eps : float
        Linf size of the single step, > 0 (default 8/255, the usual Linf budget).

    References
    ----------
    Goodfellow, Shlens, Szegedy (2015). Explaining and harnessing adversarial examples. ICLR.
    """

    name = "fgsm"

    def __init__(self, eps=8 / 255):
        self.eps = check_interval("eps", eps, 0, None, caller=type(self).__name__, closed="neither")

    def _params(self):
        return {"eps": self.eps}

    def _run(self, model, x, y):
        _, grad = input_gradient(model, x, y)
        adv = (x + self.eps * grad.sign()).clamp_(0.0, 1.0)
        with torch.no_grad():
            margins = margins_of(model(adv), y)
        steps = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return adv, margins > 0, steps, margins
