"""The perceptual DRO attack (Algorithm 1 of the paper), batched with per-sample early stop."""
from __future__ import annotations

import torch

from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._base import Attack, margins_of
from geoaudit.attacks._costs import SSIMCost, make_cost
from geoaudit.attacks._pgd import _flat_norm, input_gradient

#: When the cost gradient is recomputed (see :class:`PerceptualDRO`).
COST_SCHEDULES = ("first-step", "paper")
#: How the cost gradient is weighed against the loss gradient (see :class:`PerceptualDRO`).
COST_SCALES = ("ssim", "curvature", "raw")
#: How the cost enters a step (see :class:`PerceptualDRO`).
COST_STEPS = ("implicit", "explicit")
#: How the loss gradient's step is sized (see :class:`PerceptualDRO`).
STEP_RULES = ("raw", "normalized")
_TINY = 1e-12
#: RMS pixel change of the probe that measures the cost's curvature (quadratic regime of
#: 1 - SSIM and PieAPP, far above float32 rounding).
PROBE_RMS = 1e-3
#: Steps between compactions of the working batch, per device type.  A compaction reads the
#: device once (which rows finished); in between, finished rows stay in the batch and are left
#: unchanged by a mask.  On the CPU reading costs nothing and every step compacts (finished rows
#: cost no more work); on a GPU every few steps, and the conjugate-gradient loop then runs its
#: ``cg_iters`` without reading its residual, so the step loop rarely waits for the device.
#: The results are the same either way.
COMPACT_EVERY = {"cpu": 1, "default": 4}


class PerceptualDRO(Attack):
    """Gradient ascent on ``loss(x_adv, y) - lam * c0(x_adv, x)`` (Algorithm 1, "Human Perc OT").

    For k = 0..steps-1: stop for a sample once ``max_{i != y} logit_i - logit_y > confidence``;
    otherwise take one step on the penalized loss: by default a loss-gradient step with an
    implicit (proximal) step on the cost (below); in the paper's form
    ``x_adv <- clip(x_adv + step_size * Delta, 0, 1)`` with
    ``Delta = grad loss - lam * s * grad c0``, the cost gradient recomputed every
    ``cost_every`` steps and reused in between (the paper: 5).  The batch is attacked at once
    and each sample stops on its own: finished samples leave the working batch, so they cost
    nothing more.

    Three choices make the cost act, and ``lam`` mean the same for every cost (defaults);
    ``cost_step="explicit", cost_schedule="paper", cost_scale="raw"`` is Algorithm 1 read
    literally:

    * ``cost_step="implicit"``: the cost enters each step semi-implicitly (a proximal step on
      its quadratic model at ``x``, the model eq. 5 uses).  With ``d = x_adv - x``, ``H`` the
      cost's Hessian at ``x_adv = x``, ``g_x`` its gradient there (0 for 1 - SSIM) and
      ``a = step_size * lam * s``, the step solves
      ``(I + a H) d' = d + step_size * grad loss - a g_x`` by ``cg_iters`` conjugate-gradient
      iterations warm-started at ``d`` (Hessian-vector products by finite differences of
      the cost's gradient, :meth:`hvp`); then ``x_adv = clip(x + d', 0, 1)``.  Along an
      eigendirection of ``H`` with curvature ``h`` the perturbation is shrunk by
      ``1 / (1 + a h)`` per step, so it grows in the directions the cost barely penalizes; the
      iteration is stable for every ``lam`` and step (CG never increases the proximal
      objective) and its fixed point is the penalized optimum ``grad loss = lam grad c0``.
      It agrees with the explicit step to first order in the step size (tested) and acts
      from the very first step.  ``"explicit"``: the paper's
      ``Delta = grad loss - lam * s * grad c0``, which oscillates once
      ``step_size * lam * h_max > 2`` (1 - SSIM is far stiffer in flat image regions than
      along the loss gradient).  ``cost_every`` and ``cost_schedule`` apply to it only: the
      implicit step's Hessian is fixed at ``x`` and needs no refresh.

    * ``cost_schedule="first-step"``: refreshes at steps 1, 1 + cost_every, 1 + 2 cost_every,
      ... (and at step 0 too unless the cost's gradient at ``x_adv = x`` is known to be 0, as
      for 1 - SSIM).  Read literally, the paper refreshes at steps 0, cost_every, ...: at step 0
      ``x_adv = x`` is the minimum of 1 - SSIM, its gradient is exactly 0, and that zero is then
      reused for the next ``cost_every - 1`` steps, so the cost does not act before step
      ``cost_every``; many attacks finish before then and equal the ``lam = 0`` attack.
      Refreshing first at step 1, the first point where the gradient is not zero, costs the same
      number of refreshes and lets the cost act from the second step on.  (No schedule can
      change the very first step for 1 - SSIM: its gradient at ``x`` is 0.)
    * ``cost_scale="ssim"``: lam means for every cost what it means for 1 - SSIM in the
      paper's form.  The cost is multiplied, per sample, by ``h_ssim / h_c0``, the ratio of
      the two costs' curvatures at ``x`` along the first loss gradient ``u`` (``h = u.H u``,
      ``H`` the Hessian at ``x_adv = x``, the matrix eq. 5 inverts), so near ``x`` both
      penalize a step along ``u`` equally.  For ``cost="ssim"`` the factor is 1 and this is
      the paper's form exactly; 1 - SSIM and PieAPP otherwise differ by orders of magnitude.
      Each curvature is measured by one extra cost gradient per sample at step 0, a finite
      difference ``u . (grad c(x + t u) - grad c(x)) / t`` at an RMS pixel change of 1e-3.
      Images under 11 px (no SSIM window fits) keep the factor 1.
    * ``cost_scale="curvature"``: the cost divided by ``h_c0``: near ``x`` it is
      ``||Delta||^2 / 2`` along ``u``, so lam is a penalty in squared-L2 pixel units
      (1 - SSIM has ``h`` of a few hundredths on 32 px images, so lam = 1 here is a far
      stronger penalty than the paper's lam = 1).
    * ``cost_scale="raw"``: no scaling, the paper's form: lam trades loss units against the
      cost's own units.

    ``step_rule="normalized"`` (not the default) divides each sample's step by its loss
    gradient's L2 norm, so a step moves an image by ``step_size`` in L2 whatever the model's
    logit scale; the objective is unchanged (the implicit step's ``a`` uses the same
    per-sample step).  ``"raw"`` is the paper's ``step_size * grad``.

    Parameters
    ----------
    cost : {"pieapp", "ssim"}, Cost or callable
        The perceptual cost c0 (default "pieapp", the paper's).  "pieapp": PieAPP via piq
        (needs its weights, see ``pieapp_weights``; images >= 64 px).  "ssim": ``1 - SSIM``
        (piq's definition, computed with a fused closed-form gradient).  A callable
        ``cost(x_adv, x) -> Tensor[N]`` differentiable in ``x_adv`` is differentiated by autograd.
    lam : float
        Penalty lambda on the cost, >= 0 (paper: 1).
    step_size : float
        Step epsilon of the gradient step, > 0 (paper: 0.1).
    steps : int
        Most steps N per sample, >= 1 (paper: 100).
    confidence : float
        Margin a the attack must exceed before a sample stops, >= 0 (paper: 0, 1 or 5; default 0).
    cost_every : int
        Recompute the cost gradient every this many steps, >= 1 (paper: 5; 1 = every step).
    cost_schedule : {"first-step", "paper"}
        When the refreshes happen (see above; default "first-step").
    cost_scale : {"ssim", "curvature", "raw"}
        How the cost is weighed (see above; default "ssim"; "raw" is the paper's).
    cost_step : {"implicit", "explicit"}
        How the cost enters a step (see above; default "implicit"; "explicit" is the paper's).
    cg_iters : int
        Conjugate-gradient iterations per implicit step, >= 1 (default 3; each costs one
        cost gradient, plus one per step for the residual).
    step_rule : {"raw", "normalized"}
        ``step_size * grad`` (default, the paper's) or ``step_size * grad / ||grad||``.
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
    Algorithm 1, section 3.2 and appendix D of "Human imperceptible attacks and applications
    to improve fairness" (the paper this package follows).
    """

    name = "perceptual"
    checks_own_outputs = True

    def __init__(self, cost="pieapp", *, lam=1.0, step_size=0.1, steps=100, confidence=0.0, cost_every=5,
                 cost_schedule="first-step", cost_scale="ssim", cost_step="implicit", cg_iters=3, step_rule="raw",
                 pieapp_weights=None, memory_budget_mb=1024, cost_chunk_size=None):
        caller = type(self).__name__
        self.lam = check_interval("lam", lam, 0, None, caller=caller, closed="left")
        self.step_size = check_interval("step_size", step_size, 0, None, caller=caller, closed="neither")
        self.steps = check_interval("steps", steps, 1, None, caller=caller, integer=True)
        self.confidence = check_interval("confidence", confidence, 0, None, caller=caller)
        self.cost_every = check_interval("cost_every", cost_every, 1, None, caller=caller, integer=True)
        self.cost_schedule = check_options("cost_schedule", cost_schedule, COST_SCHEDULES, caller=caller)
        self.cost_scale = check_options("cost_scale", cost_scale, COST_SCALES, caller=caller)
        self.cost_step = check_options("cost_step", cost_step, COST_STEPS, caller=caller)
        self.cg_iters = check_interval("cg_iters", cg_iters, 1, None, caller=caller, integer=True)
        self.step_rule = check_options("step_rule", step_rule, STEP_RULES, caller=caller)
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
        self.size_hint = ("Use cost='ssim' for smaller images."
                          if self.cost.min_size > 11 else None)

    def _params(self):
        return {"cost": self._cost_arg if isinstance(self._cost_arg, str) else self.cost,
                "lam": self.lam, "step_size": self.step_size, "steps": self.steps,
                "confidence": self.confidence, "cost_every": self.cost_every,
                "cost_schedule": self.cost_schedule, "cost_scale": self.cost_scale,
                "cost_step": self.cost_step, "cg_iters": self.cg_iters, "step_rule": self.step_rule,
                "pieapp_weights": self.pieapp_weights, "memory_budget_mb": self.memory_budget_mb,
                "cost_chunk_size": self.cost_chunk_size}

    def refresh_steps(self, n_steps):
        """The steps k (0-based, below ``n_steps``) at which the cost gradient is recomputed.

        Parameters
        ----------
        n_steps : int
            Steps a sample takes.

        Returns
        -------
        list of int
        """
        return [k for k in range(n_steps) if self._refresh(k)]

    def _refresh(self, k):
        if self.cost_schedule == "paper":
            return k % self.cost_every == 0
        if k == 0:
            return not self.cost.zero_grad_at_reference
        return (k - 1) % self.cost_every == 0

    def curvature(self, x, grad, ref, grad_at_x=None, cost=None):
        """Per sample, the cost's curvature at ``x`` along ``grad``: ``u.H u``, ``u = grad/||grad||``.

        Parameters
        ----------
        x : torch.Tensor
            Clean images ``(N, C, H, W)``.
        grad : torch.Tensor
            Directions, same shape (the loss gradients at ``x``).
        ref : dict
            ``self.cost.prepare(x)``.
        grad_at_x : torch.Tensor, optional
            The cost's gradient at ``x`` when known (else 0 is assumed for a cost whose
            gradient vanishes there, and it is computed otherwise).
        cost : Cost, optional
            The cost to measure (default: the attack's).

        Returns
        -------
        torch.Tensor
            ``(N,)`` finite-difference curvatures (may be <= 0 for a non-convex cost; the attack uses its absolute value).
        """
        cost = self.cost if cost is None else cost
        u = grad / _flat_norm(grad)
        t = PROBE_RMS * x[0].numel() ** 0.5
        _, g1 = cost.value_and_grad(x + t * u, ref)
        if grad_at_x is None and not cost.zero_grad_at_reference:
            _, grad_at_x = cost.value_and_grad(x, ref)
        if grad_at_x is not None:
            g1 = g1 - grad_at_x
        return (u * g1).flatten(1).sum(1) / t

    def _weight(self, x, grad, ref, grad_at_x):
        """Per-sample factor on the cost (``cost_scale``), from curvatures at ``x``."""
        one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        if self.cost_scale == "raw" or (self.cost_scale == "ssim" and isinstance(self.cost, SSIMCost)):
            return one
        h = self.curvature(x, grad, ref, grad_at_x).abs().clamp_min(_TINY)
        if self.cost_scale == "curvature":
            return 1.0 / h
        ssim = SSIMCost()
        if min(x.shape[-2:]) < ssim.kernel_size:
            return one
        return self.curvature(x, grad, ssim.prepare(x), cost=ssim).abs() / h

    def hvp(self, x, ref, v, grad_at_x=None):
        """Per sample, ``H v`` for the cost's Hessian ``H`` at ``x_adv = x`` (finite differences).

        ``(grad c(x + t v) - grad c(x)) / t`` with ``t`` such that ``t v`` changes pixels by
        1e-3 RMS: the quadratic regime of 1 - SSIM and PieAPP, far above float32 rounding.

        Parameters
        ----------
        x : torch.Tensor
            Clean images ``(N, C, H, W)``.
        ref : dict
            ``self.cost.prepare(x)`` (rows matching ``x``).
        v : torch.Tensor
            Directions, same shape as ``x``.
        grad_at_x : torch.Tensor, optional
            The cost's gradient at ``x`` (None: 0, for a cost whose gradient vanishes there).

        Returns
        -------
        torch.Tensor
            ``H v``, same shape as ``x``.
        """
        t = PROBE_RMS * x[0].numel() ** 0.5 / _flat_norm(v)
        _, g = self.cost.value_and_grad(x + t * v, ref)
        if grad_at_x is not None:
            g = g - grad_at_x
        return g / t

    def _implicit(self, x, ref, a, v, d0, grad_at_x, checks=True):
        """Warm-started CG on ``(I + a H) d = v`` (per-sample ``a``), ``cg_iters`` iterations.

        CG minimizes ``1/2 ||d - v||^2 + a/2 d.H d - ...``, the proximal objective of the cost's
        quadratic model, and never increases it, so the step is stable for every ``a``.  ``checks``:
        stop once every residual vanishes (one read of the device per iteration); without it the
        remaining iterations leave ``d`` unchanged (``alpha = 0``)."""
        shape = (-1, *([1] * (x.dim() - 1)))

        def op(p):
            return p + a * self.hvp(x, ref, p, grad_at_x)

        def dot(p, q):
            return (p * q).flatten(1).sum(1).view(shape)

        tiny = torch.finfo(x.dtype).tiny
        d = d0.clone()
        r = v - op(d)
        p = r.clone()
        rr = dot(r, r)
        for _ in range(self.cg_iters):
            # all converged: the remaining iterations would leave d as it is (alpha = 0)
            if checks and not bool((rr > tiny).any()):
                break
            ap = op(p)
            alpha = torch.where(rr > tiny, rr / dot(p, ap).clamp_min(tiny), torch.zeros_like(rr))
            d = d + alpha * p
            r = r - alpha * ap
            rr_new = dot(r, r)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return d

    def _compact_period(self, device):
        """Steps between compactions of the working batch (see ``COMPACT_EVERY``)."""
        every = getattr(self, "_compact_every", None)
        return int(every) if every else COMPACT_EVERY.get(torch.device(device).type, COMPACT_EVERY["default"])

    def _run(self, model, x, y):
        window = getattr(self, "_window", None)
        if window and window < x.shape[0]:
            return self._run_window(model, x, y, int(window))
        n = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        adv = x.clone()
        steps = torch.zeros(n, dtype=torch.long, device=x.device)
        margins = torch.empty(n, dtype=x.dtype, device=x.device)
        running = torch.ones(n, dtype=torch.bool, device=x.device)  # not past the margin yet
        active = torch.arange(n, device=x.device)  # the working batch; finished rows leave it at compactions
        every = self._compact_period(x.device)
        implicit = self.cost_step == "implicit"
        cg_checks = every == 1  # a loop that reads the device every step may as well stop CG early
        ref = self.cost.prepare(x) if self.lam > 0 else None
        cost_grad = torch.zeros_like(x) if self.lam > 0 else None
        grad_at_x = None  # the cost's gradient at x (implicit step, costs whose gradient there may not vanish)
        if self.lam > 0 and implicit and not self.cost.zero_grad_at_reference:
            _, grad_at_x = self.cost.value_and_grad(x, ref)
        weight = torch.ones(n, dtype=x.dtype, device=x.device)  # cost_scale's factor per sample
        ya = y
        sub, gx, xc = ref, grad_at_x, x  # the working batch's rows of ref, grad_at_x and x
        for k in range(self.steps):
            xa = adv[active]
            logits, grad = input_gradient(model, xa, ya, check=self._check_outputs if k == 0 else None)
            m = margins_of(logits, ya).to(margins.dtype)
            run = running[active]
            margins[active] = torch.where(run, m, margins[active])
            keep = run & (m <= self.confidence)
            running[active] = keep
            if (k + 1) % every == 0:  # finished samples leave the working batch (one read of the device)
                rows = keep.nonzero().squeeze(1)
                if rows.numel() == 0:
                    break
                if rows.numel() < active.numel():
                    active, xa, grad, keep = active[rows], xa[rows], grad[rows], keep[rows]
                    ya = y[active]
                    if self.lam > 0:
                        sub, xc = self.cost.select(ref, active), x[active]
                        gx = None if grad_at_x is None else grad_at_x[active]
            mask = keep.view(shape)  # rows still attacked; the others keep their image until they leave
            step = self.step_size
            if self.step_rule == "normalized":  # per sample, step_size / ||grad||: moves by step_size in L2
                step = self.step_size / _flat_norm(grad)
            if self.lam > 0:
                if k == 0:  # every sample is still at x here
                    if not implicit and self._refresh(0):
                        _, cost_grad[active] = self.cost.value_and_grad(xa, sub)
                    known = gx if implicit else (cost_grad[active] if self._refresh(0) else None)
                    weight[active] = self._weight(xa, grad, sub, known)
                if implicit:
                    a = step * self.lam * weight[active].view(shape)
                    v = (xa - xc) + step * grad
                    if gx is not None:
                        v = v - a * gx
                    d = self._implicit(xc, sub, a, v, xa - xc, gx, checks=cg_checks)
                    adv[active] = torch.where(mask, (xc + d).clamp_(0.0, 1.0), xa)
                    steps[active] += keep
                    continue
                if k > 0 and self._refresh(k):
                    _, cost_grad[active] = self.cost.value_and_grad(xa, sub)
                grad = grad - self.lam * weight[active].view(shape) * cost_grad[active]
            adv[active] = torch.where(mask, (xa + step * grad).clamp_(0.0, 1.0), xa)
            steps[active] += keep
        else:  # the last step's images have not been checked yet
            with torch.no_grad():
                m = margins_of(model(adv[active]), ya).to(margins.dtype)
                margins[active] = torch.where(running[active], m, margins[active])
        return adv, margins > self.confidence, steps, margins

    def _run_window(self, model, x, y, window):
        """The same attack with a working batch of at most ``window`` samples, kept full: as
        samples finish, waiting ones join it (each starts its own step 0).

        Each sample's steps are those of :meth:`_run` (its step index is its own step count;
        the cost refresh schedule, ``cost_scale`` weight and step budget follow it), so the
        results are the same up to the float rounding of batch-size-dependent kernels."""
        n = x.shape[0]
        shape = (-1, *([1] * (x.dim() - 1)))
        dev = x.device
        adv = x.clone()
        steps = torch.zeros(n, dtype=torch.long, device=dev)
        margins = torch.empty(n, dtype=x.dtype, device=dev)
        running = torch.ones(n, dtype=torch.bool, device=dev)
        implicit = self.cost_step == "implicit"
        ref = self.cost.prepare(x) if self.lam > 0 else None
        cost_grad = torch.zeros_like(x) if self.lam > 0 else None
        grad_at_x = None
        if self.lam > 0 and implicit and not self.cost.zero_grad_at_reference:
            _, grad_at_x = self.cost.value_and_grad(x, ref)
        weight = torch.ones(n, dtype=x.dtype, device=dev)
        refresh = torch.tensor([self._refresh(k) for k in range(self.steps)] + [False], device=dev)
        active = torch.arange(min(window, n), device=dev)
        queued = active.numel()  # samples [queued, n) wait
        joined = True  # samples joined the working batch since its last step (they are at step 0)
        first = True
        while active.numel():
            ya, xa = y[active], adv[active]
            if self.lam > 0:
                sub, xc = self.cost.select(ref, active), x[active]
                gx = None if grad_at_x is None else grad_at_x[active]
            logits, grad = input_gradient(model, xa, ya, check=self._check_outputs if first else None)
            first = False
            m = margins_of(logits, ya).to(margins.dtype)
            margins[active] = m  # every row here is still running: this is its check
            ka = steps[active]
            keep = (m <= self.confidence) & (ka < self.steps)  # a row out of steps has had its last check
            running[active] = keep
            rows = keep.nonzero().squeeze(1)  # finished samples leave (one read per step)
            if rows.numel() < active.numel():
                active, xa, grad, ka = active[rows], xa[rows], grad[rows], ka[rows]
                if self.lam > 0:
                    sub, xc = self.cost.select(sub, rows), xc[rows]
                    gx = None if gx is None else gx[rows]
            if active.numel():
                step = self.step_size
                if self.step_rule == "normalized":
                    step = self.step_size / _flat_norm(grad)
                if self.lam > 0:
                    if joined:  # samples at their step 0: the cost_scale weight (and step-0 refresh)
                        new = (ka == 0).view(shape)
                        if not implicit and self._refresh(0):
                            _, g0 = self.cost.value_and_grad(xa, sub)
                            cost_grad[active] = torch.where(new, g0, cost_grad[active])
                        known = gx if implicit else (cost_grad[active] if self._refresh(0) else None)
                        weight[active] = torch.where(new.view(-1), self._weight(xa, grad, sub, known), weight[active])
                    if implicit:
                        a = step * self.lam * weight[active].view(shape)
                        v = (xa - xc) + step * grad
                        if gx is not None:
                            v = v - a * gx
                        d = self._implicit(xc, sub, a, v, xa - xc, gx)
                        adv[active] = (xc + d).clamp_(0.0, 1.0)
                    else:
                        due = (refresh[ka] & (ka > 0)).nonzero().squeeze(1)
                        if due.numel():
                            _, cost_grad[active[due]] = self.cost.value_and_grad(xa[due], self.cost.select(sub, due))
                        grad = grad - self.lam * weight[active].view(shape) * cost_grad[active]
                        adv[active] = (xa + step * grad).clamp_(0.0, 1.0)
                else:
                    adv[active] = (xa + step * grad).clamp_(0.0, 1.0)
                steps[active] += 1
            joined = queued < n and active.numel() < window
            if joined:  # waiting samples fill the batch
                take = min(window - active.numel(), n - queued)
                active = torch.cat([active, torch.arange(queued, queued + take, device=dev)])
                queued += take
        return adv, margins > self.confidence, steps, margins
