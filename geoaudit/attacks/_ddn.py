"""Decoupled direction and norm (DDN, Rony et al. 2019): a minimal-L2 baseline attack."""
from __future__ import annotations

import math

import torch

from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._base import Attack
from geoaudit.attacks._pgd import _flat_norm, goal_margins, input_gradient


class DDN(Attack):
    """Decoupled direction and norm: the smallest L2 perturbation that changes the label.

    Each step moves ``delta`` along the normalized gradient of the cross-entropy (step length
    annealed from ``step_size`` to ``step_size / 100`` by a cosine schedule), then rescales it
    to the norm ``eps_k``: ``eps_k`` shrinks by the factor ``1 - gamma`` while ``x + delta``
    is adversarial and grows by ``1 + gamma`` while it is not.  The smallest adversarial
    perturbation seen is returned; images never made adversarial get the last iterate
    (``success`` False).  Unlike PGD there is no budget to choose: a minimal-norm attack
    reports, per image, how far the decision boundary is, which is what a perceptual attack
    should be compared with at matched success.

    Parameters
    ----------
    steps : int
        Iterations, >= 1 (default 100, the paper's setting for small images).
    gamma : float
        Norm update factor, in (0, 1) (default 0.05, the paper's).
    init_norm : float
        First ``eps_k``, > 0 (default 1.0).
    step_size : float
        First step length, > 0 (default 1.0, the paper's alpha).
    max_norm : float or None
        Largest L2 norm allowed (None: unbounded).
    targeted : bool
        Labels are target classes (success: classified as the target).

    Returns (when called)
    ---------------------
    AttackResult
        ``steps``: the step at which the returned image was found (``steps`` when never).

    References
    ----------
    Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger (2019). Decoupling direction and
    norm for efficient gradient-based L2 adversarial attacks and defenses. CVPR.
    """

    name = "ddn"
    checks_own_outputs = True

    def __init__(self, steps=100, *, gamma=0.05, init_norm=1.0, step_size=1.0, max_norm=None, targeted=False):
        caller = type(self).__name__
        self.steps = check_interval("steps", steps, 1, None, caller=caller, integer=True)
        self.gamma = check_interval("gamma", gamma, 0, 1, caller=caller, closed="neither")
        self.init_norm = check_interval("init_norm", init_norm, 0, None, caller=caller, closed="neither")
        self.step_size = check_interval("step_size", step_size, 0, None, caller=caller, closed="neither")
        self.max_norm = (None if max_norm is None else
                         check_interval("max_norm", max_norm, 0, None, caller=caller, closed="neither"))
        self.targeted = check_options("targeted", targeted, (False, True), caller=caller)

    def _params(self):
        return {"steps": self.steps, "gamma": self.gamma, "init_norm": self.init_norm,
                "step_size": self.step_size, "max_norm": self.max_norm, "targeted": self.targeted}

    def _run(self, model, x, y):
        n = x.shape[0]
        shape = (n,) + (1,) * (x.dim() - 1)
        delta = torch.zeros_like(x)
        eps = torch.full(shape, float(self.init_norm), dtype=x.dtype, device=x.device)
        best = x.clone()
        best_norm = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_margin = torch.full((n,), float("-inf"), dtype=x.dtype, device=x.device)
        found_at = torch.full((n,), self.steps, dtype=torch.long, device=x.device)
        for k in range(self.steps + 1):
            logits, grad = input_gradient(model, x + delta, y, targeted=self.targeted,
                                          check=self._check_outputs if k == 0 else None)
            margin = goal_margins(logits, y, self.targeted)
            norm = delta.flatten(1).norm(dim=1)
            is_adv = margin > 0
            improved = is_adv & (norm < best_norm)
            # Until an image is adversarial, keep its most nearly adversarial iterate.
            closer = ~is_adv & (best_norm == float("inf")) & (margin > best_margin)
            take = improved | closer
            best = torch.where(take.view(shape), x + delta, best)
            best_norm = torch.where(improved, norm, best_norm)
            best_margin = torch.where(take, margin, best_margin)
            found_at = torch.where(improved, torch.full_like(found_at, k), found_at)
            if k == self.steps:
                break
            alpha = self.step_size * (0.01 + 0.99 * (1 + math.cos(math.pi * k / self.steps)) / 2)
            delta = delta + alpha * grad / _flat_norm(grad)
            eps = torch.where(is_adv.view(shape), eps * (1 - self.gamma), eps * (1 + self.gamma))
            if self.max_norm is not None:
                eps = eps.clamp(max=self.max_norm)
            delta = delta * eps / _flat_norm(delta)
            delta = (x + delta).clamp(0.0, 1.0) - x
        return best, best_margin > 0, found_at, best_margin
