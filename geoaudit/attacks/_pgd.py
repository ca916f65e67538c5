"""Baselines: projected gradient descent (L2 and Linf) and the fast gradient sign method."""
from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F

from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._base import Attack, make_generator, margins_of

_TINY = 1e-12


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped (N, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def input_gradient(model, x, y, *, loss="ce", targeted=False, check=None):
    """Logits at ``x`` and the gradient of the summed attack loss with respect to ``x``.

    ``loss="ce"``: cross-entropy; ``"margin"``: ``max_{i != y} z_i - z_y`` (the margin loss of
    Carlini and Wagner).  ``targeted``: ``y`` are target classes and the loss is negated
    (ascent moves towards them).  ``check(logits, y)`` is called on the logits before the loss.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if check is not None:
        check(logits, y)
    if loss == "ce":
        value = F.cross_entropy(logits, y, reduction="sum")
    else:
        value = margins_of(logits, y).sum()
    if targeted:
        value = -value
    (grad,) = torch.autograd.grad(value, [x])
    return logits.detach(), grad


def goal_margins(logits, y, targeted):
    """> 0 where the attack reached its goal: misclassified, or (targeted) the target wins."""
    return -margins_of(logits, y) if targeted else margins_of(logits, y)


class PGD(Attack):
    """Projected gradient descent (Madry et al., 2018).

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
        Start from a point drawn uniformly from the ball instead of the clean image (L2:
        direction uniform on the sphere, radius ``eps * U^(1/d)`` with ``d`` the number of
        pixel values; Linf: each value uniform in ``[-eps, eps]``).
    random_state : int, torch.Generator or None
        Seed of the random starts.
    loss : {"ce", "margin"}
        Ascent on the cross-entropy (default) or on the margin ``max_{i != y} z_i - z_y``.
    targeted : bool
        When True the labels given to the call are target classes: the attack descends the
        loss towards them, and ``success`` means "classified as the target".
    restarts : int
        Runs per image, >= 1 (default 1); the first starts as ``random_start`` says, the
        others from random points.  Each image keeps the run with the largest final margin
        towards its goal, so more restarts are never worse.

    Returns (when called)
    ---------------------
    AttackResult
        ``success`` is "misclassified at the end" (targeted: "classified as the target"),
        ``steps`` is ``steps * restarts`` for every sample; ``margins`` are
        ``max_{i != y} z_i - z_y`` (targeted: ``z_t - max_{i != t} z_i``), > 0 at success.

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
    checks_own_outputs = True
    #: Ball radius per norm when ``eps`` is None.
    DEFAULT_EPS = MappingProxyType({"l2": 1.0, "linf": 8 / 255})

    def __init__(self, eps=None, step_size=None, steps=10, *, norm="l2", random_start=False,
                 random_state=None, loss="ce", targeted=False, restarts=1):
        caller = type(self).__name__
        self.norm = check_options("norm", norm, ("l2", "linf"), caller=caller)
        eps = self.DEFAULT_EPS[self.norm] if eps is None else eps
        self.eps = check_interval("eps", eps, 0, None, caller=caller, closed="neither")
        step_size = self.eps / 4 if step_size is None else step_size
        self.step_size = check_interval("step_size", step_size, 0, None, caller=caller, closed="neither")
        self.steps = check_interval("steps", steps, 1, None, caller=caller, integer=True)
        self.random_start = check_options("random_start", random_start, (False, True), caller=caller)
        self.loss = check_options("loss", loss, ("ce", "margin"), caller=caller)
        self.targeted = check_options("targeted", targeted, (False, True), caller=caller)
        self.restarts = check_interval("restarts", restarts, 1, None, caller=caller, integer=True)
        make_generator(random_state)  # validate early
        self.random_state = random_state

    def _params(self):
        return {"eps": self.eps, "step_size": self.step_size, "steps": self.steps, "norm": self.norm,
                "random_start": self.random_start, "random_state": self.random_state, "loss": self.loss,
                "targeted": self.targeted, "restarts": self.restarts}

    def _project(self, x, adv):
        delta = adv - x
        if self.norm == "l2":
            delta = delta * (self.eps / _flat_norm(delta)).clamp(max=1.0)
        else:
            delta = delta.clamp(-self.eps, self.eps)
        return (x + delta).clamp_(0.0, 1.0)

    def _start(self, x, g=None, random=None):
        if not (self.random_start if random is None else random):
            return x.clone()
        # Drawn on the CPU so a seed gives the same start on every device.
        g = make_generator(self.random_state) if g is None else g
        if self.norm == "l2":
            d = torch.randn(x.shape, generator=g, dtype=torch.float64)
            d = d / _flat_norm(d)
            dim = x[0].numel()
            u = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=g, dtype=torch.float64)
            delta = d * u.pow(1.0 / dim) * self.eps  # radius with density ~ r^(d-1): uniform in the ball
        else:
            delta = (torch.rand(x.shape, generator=g, dtype=torch.float64) * 2 - 1) * self.eps
        return self._project(x, x + delta.to(device=x.device, dtype=x.dtype))

    def _once(self, model, x, y, start, check=None):
        adv = start
        for i in range(self.steps):
            _, grad = input_gradient(model, adv, y, loss=self.loss, targeted=self.targeted,
                                     check=check if i == 0 else None)
            if self.norm == "l2":
                step = grad / _flat_norm(grad)
            else:
                step = grad.sign()
            adv = self._project(x, adv + self.step_size * step)
        with torch.no_grad():
            margins = goal_margins(model(adv), y, self.targeted)
        return adv, margins

    def _run(self, model, x, y):
        g = make_generator(self.random_state) if (self.random_start or self.restarts > 1) else None
        best, best_margins = self._once(model, x, y, self._start(x, g), check=self._check_outputs)
        for _ in range(self.restarts - 1):
            adv, margins = self._once(model, x, y, self._start(x, g, random=True))
            better = margins > best_margins
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), adv, best)
            best_margins = torch.where(better, margins, best_margins)
        steps = torch.full((x.shape[0],), self.steps * self.restarts, dtype=torch.long, device=x.device)
        return best, best_margins > 0, steps, best_margins


class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015): ``x + eps * sign(grad loss)``.

    Parameters
    ----------
    eps : float
        Linf size of the single step, > 0 (default 8/255, the usual Linf budget).
    targeted : bool
        Labels are target classes; the step descends the cross-entropy towards them.
    score : bool
        True (default): one more forward pass measures the margins and ``success`` at the
        adversarial images.  False: one forward and one backward in all, as torchattacks'
        FGSM; ``margins`` are then NaN and ``success`` all False (unmeasured: pass the images
        to :func:`evaluate`).

    References
    ----------
    Goodfellow, Shlens, Szegedy (2015). Explaining and harnessing adversarial examples. ICLR.
    """

    name = "fgsm"
    checks_own_outputs = True

    def __init__(self, eps=8 / 255, *, targeted=False, score=True):
        caller = type(self).__name__
        self.eps = check_interval("eps", eps, 0, None, caller=caller, closed="neither")
        self.targeted = check_options("targeted", targeted, (False, True), caller=caller)
        self.score = check_options("score", score, (False, True), caller=caller)

    def _params(self):
        return {"eps": self.eps, "targeted": self.targeted, "score": self.score}

    def _run(self, model, x, y):
        _, grad = input_gradient(model, x, y, targeted=self.targeted, check=self._check_outputs)
        adv = (x + self.eps * grad.sign()).clamp_(0.0, 1.0)
        if self.score:
            with torch.no_grad():
                margins = goal_margins(model(adv), y, self.targeted)
        else:
            margins = torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device)
        steps = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return adv, margins > 0, steps, margins
