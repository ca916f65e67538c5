"""The perceptual DRO attack (Algorithm 1 of the paper), batched with per-sample early stop."""
from __future__ import annotations

import torch

from geoaudit._validation import check_interval
from geoaudit.attacks._base import Attack, margins_of
from geoaudit.attacks._costs import make_cost
from geoaudit.attacks._pgd import input_gradient


class PerceptualDRO(Attack):
    """Gradient ascent on ``loss(x_adv, y) - lam * c0(x_adv, x)`` (Algorithm 1, "Human Perc OT").

    For k = 1..steps: stop for a sample once ``max_{i != y} logit_i - logit_y > confidence``;
    otherwise ``x_adv <- clip(x_adv + step_size * (grad loss - lam * grad c0), 0, 1)``.
    The batch is attacked at once and each sample stops on its own: finished samples leave the
    working batch, so they cost nothing more.  The cost gradient is recomputed every
    ``cost_every`` steps and reused in between (the paper: 5).

    Parameters
    ----------
    cost : {"pieapp", "ssim"}, Cost or callable
        The perceptual cost c0.  "pieapp": PieAPP via piq (needs its weights, see
        ``pieapp_weights``; images >= 64 px).  "ssim": ``1 - SSIM`` (piq's definition, computed
        with a fused closed-form gradient).  A callable ``cost(x_adv, x) -> Tensor[N]``
        differentiable in ``x_adv`` is differentiated by autograd.
    lam : float
        Penalty lambda on the cost, >= 0 (paper: 1).
    step_size : float
        Step epsilon of the gradient step, > 0 (paper: 0.1).
    steps : int
        Most steps N per sample, >= 1 (paper: 100).
    confidence : float
        Margin a the attack must exceed before a sample stops, >= 0 (paper: 0, 1 or 5).
    cost_every : int
        Recompute the cost gradient every this many steps, >= 1 (paper: 5; 1 = every step).
    pieapp_weights : str, Path or None
        Local PieAPP weights file (else ``$GEOAUDIT_PIEAPP_WEIGHTS``, else piq's download).
    memory_budget_mb : float
        Memory one chunk of the PieAPP network may take (forward + backward).
    cost_chunk_size : int or None
        PieAPP patches per chunk, overriding ``memory_budget_mb``.

    Notes
    -----
    ``AttackResult.success`` is "margin > confidence" at the returned image, ``steps`` the
    gradient steps taken (0 for a sample already past the margin).

    Examples
    --------
    >>> attack = PerceptualDRO(cost="ssim", steps=50, confidence=1.0)   # doctest: +SKIP
    >>> result = attack(model, images, labels)                          # doctest: +SKIP
    >>> result.success.float().mean(), result.steps                     # doctest: +SKIP

    References
    ----------
    Algorithm 1 and appendix D of "Human imperceptible attacks and applications to improve
    fairness" (the paper this package follows).
    """

    name = "perceptual"

    def __init__(self, cost="pieapp", *, lam=1.0, step_size=0.1, steps=100, confidence=0.0, cost_every=5,
                 pieapp_weights=None, memory_budget_mb=1024, cost_chunk_size=None):
        caller = type(self).__name__
        self.lam = check_interval("lam", lam, 0, None, caller=caller, closed="left")
        self.step_size = check_interval("step_size", step_size, 0, None, caller=caller, closed="neither")
        self.steps = check_interval("steps", steps, 1, None, caller=caller, integer=True)
        self.confidence = check_interval("confidence", confidence, 0, None, caller=caller)
        self.cost_every = check_interval("cost_every", cost_every, 1, None, caller=caller, integer=True)
        self.pieapp_weights = pieapp_weights
        self.memory_budget_mb = check_interval("memory_budget_mb", memory_budget_mb, 0, None, caller=caller,
                                               closed="neither")
        self.cost_chunk_size = (None if cost_chunk_size is None else
                                check_interval("cost_chunk_size", cost_chunk_size, 1, None, caller=caller,
                                               integer=True))
        self.cost = make_cost(cost, pieapp_weights=pieapp_weights, memory_budget_mb=memory_budget_mb,
                              chunk_size=self.cost_chunk_size)
        self._cost_arg = cost
        self.min_size = self.cost.min_size
        # PieAPP cuts images into 64x64 patches; say what works on smaller images
        self.size_hint = ("Use cost='ssim' (CLI: --cost ssim) for smaller images."
                          if self.cost.min_size > 11 else None)

    def _params(self):
        return {"cost": self._cost_arg if isinstance(self._cost_arg, str) else self.cost,
                "lam": self.lam, "step_size": self.step_size, "steps": self.steps,
                "confidence": self.confidence, "cost_every": self.cost_every,
                "pieapp_weights": self.pieapp_weights, "memory_budget_mb": self.memory_budget_mb,
                "cost_chunk_size": self.cost_chunk_size}

    def _run(self, model, x, y):
        n = x.shape[0]
        adv = x.clone()
        steps = torch.zeros(n, dtype=torch.long, device=x.device)
        margins = torch.empty(n, dtype=x.dtype, device=x.device)
        active = torch.arange(n, device=x.device)
        ref = self.cost.prepare(x) if self.lam > 0 else None
        cost_grad = torch.zeros_like(x) if self.lam > 0 else None
        for k in range(self.steps):
            xa, ya = adv[active], y[active]
            logits, grad = input_gradient(model, xa, ya)
            m = margins_of(logits, ya)
            margins[active] = m.to(margins.dtype)
            keep = m <= self.confidence
            if not bool(keep.all()):  # finished samples leave the working batch
                active, xa, grad = active[keep], xa[keep], grad[keep]
                if active.numel() == 0:
                    break
            if self.lam > 0:
                if k % self.cost_every == 0:
                    _, cost_grad[active] = self.cost.value_and_grad(xa, self.cost.select(ref, active))
                grad = grad - self.lam * cost_grad[active]
            adv[active] = (xa + self.step_size * grad).clamp_(0.0, 1.0)
            steps[active] += 1
        else:  # the last step's images have not been checked yet
            with torch.no_grad():
                margins[active] = margins_of(model(adv[active]), y[active]).to(margins.dtype)
        return adv, margins > self.confidence, steps, margins
