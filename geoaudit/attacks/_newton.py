"""The one-step SSIM attack (eq. 5 and appendix A of the paper), exact or matrix-free."""
from __future__ import annotations

import torch

from geoaudit._errors import InputError
from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._base import Attack, margins_of
from geoaudit.attacks._costs import SSIMCost
from geoaudit.attacks._pgd import _flat_norm, input_gradient

#: Largest pixel count per image (C*H*W) for which solver="exact" forms the Hessian.
EXACT_MAX_DIM = 4096


class SSIMNewton(Attack):
    """One Newton-type step against ``1 - SSIM`` (eq. 5).

    ``Delta* = (H + damping * h I)^-1 g / lam`` with ``g = grad_x loss(x, y)``, ``H`` the
    Hessian of ``d(Delta) = 1 - SSIM(x, x + Delta)`` at ``Delta = 0`` and ``h = g.Hg / g.g``
    the curvature of ``H`` along ``g`` (a scale that needs one Hessian-vector product); then ``x_adv = clip(x + eps * Delta* / ||Delta*||_2, 0, 1)``.

    ``H`` is only positive semi-definite (appendix A), so a small relative damping keeps the
    solve well posed; with ``damping -> 0`` this is exactly eq. 5.  ``lam`` scales
    ``Delta*`` and cancels in the normalization; it is kept for fidelity to eq. 5.

    Parameters
    ----------
    eps : float
        L2 length of the perturbation on the [0, 1] pixel scale, > 0 (default 1.0, the L2
        default of :class:`PGD`).
    lam : float
        Penalty lambda, > 0.
    solver : {"exact", "cg"}
        "exact" forms ``H`` per image with ``torch.autograd.functional.hessian`` (images of at
        most 4096 values, e.g. 28x28 grey) and solves it directly; "cg" runs conjugate
        gradients on Hessian-vector products (double backward), never holding ``H``, for
        64x64 RGB and larger.  Both solve the same damped system.
    cg_iters : int
        Most CG iterations, >= 1.
    cg_tol : float
        CG stops when ``||r|| <= cg_tol * ||b||`` for every image, > 0.
    damping : float
        Relative damping, >= 0 (default 1e-2; 0 is eq. 5 undamped).  The damping changes
        the direction a lot: :func:`damping_cosines` measures it (docs/attacks.md quotes the
        median cosine to the undamped direction).
    padding : {"reflect", "valid"}
        Windows of the SSIM in ``H``: "reflect" (default) covers every pixel equally;
        "valid" is piq's SSIM, whose Hessian barely sees the outer ``kernel_size // 2``
        pixels, so the solve puts most of the perturbation there (a frame SSIM cannot see).

    References
    ----------
    Eq. 5 and appendix A of the paper; Wang et al. (2004) for SSIM; Hestenes and Stiefel
    (1952) for conjugate gradients.
    """

    name = "ssim-newton"
    checks_own_outputs = True

    def __init__(self, eps=1.0, *, lam=1.0, solver="cg", cg_iters=300, cg_tol=1e-4, damping=1e-2,
                 padding="reflect"):
        caller = type(self).__name__
        self.eps = check_interval("eps", eps, 0, None, caller=caller, closed="neither")
        self.lam = check_interval("lam", lam, 0, None, caller=caller, closed="neither")
        self.solver = check_options("solver", solver, ("exact", "cg"), caller=caller)
        self.cg_iters = check_interval("cg_iters", cg_iters, 1, None, caller=caller, integer=True)
        self.cg_tol = check_interval("cg_tol", cg_tol, 0, None, caller=caller, closed="neither")
        self.damping = check_interval("damping", damping, 0, None, caller=caller)
        self.padding = check_options("padding", padding, ("reflect", "valid"), caller=caller)
        self._ssim = SSIMCost(padding=self.padding)
        self.min_size = self._ssim.kernel_size

    def _params(self):
        return {"eps": self.eps, "lam": self.lam, "solver": self.solver, "cg_iters": self.cg_iters,
                "cg_tol": self.cg_tol, "damping": self.damping, "padding": self.padding}

    def direction(self, x, grad):
        """``Delta*`` of eq. 5 for clean images ``x`` and loss gradients ``grad`` (same shape)."""
        if self.solver == "exact":
            return self._exact(x, grad) / self.lam
        return self._cg(x, grad) / self.lam

    def _exact(self, x, grad):
        dim = x[0].numel()
        if dim > EXACT_MAX_DIM:
            raise InputError(
                f"SSIMNewton(solver='exact') forms a {dim}x{dim} Hessian per image; it accepts at most "
                f"{EXACT_MAX_DIM} values per image (e.g. 1x28x28). Use solver='cg' for "
                f"{tuple(x.shape[1:])} images."
            )
        out = torch.empty_like(grad)
        for i in range(x.shape[0]):
            xi = x[i:i + 1]

            def d(delta, xi=xi):
                return self._ssim.autograd_value(xi + delta.view_as(xi), xi).sum()

            h = torch.autograd.functional.hessian(d, torch.zeros(dim, dtype=x.dtype, device=x.device),
                                                  vectorize=True)
            gi = grad[i].reshape(dim)
            scale = self._rayleigh(gi[None], (h @ gi)[None])[0]
            h = h + self.damping * scale * torch.eye(dim, dtype=h.dtype, device=h.device)
            out[i] = torch.linalg.solve(h, gi).view_as(grad[i])
        return out

    def _cg(self, x, grad):
        n = x.shape[0]
        with torch.enable_grad():
            delta = torch.zeros_like(x, requires_grad=True)
            value = self._ssim.autograd_value(x + delta, x).sum()  # images are independent
            (g0,) = torch.autograd.grad(value, [delta], create_graph=True)

            def hvp(v):
                (hv,) = torch.autograd.grad(g0, [delta], grad_outputs=v, retain_graph=True)
                return hv.detach()

            scale = self._rayleigh(grad, hvp(grad))
        shift = (self.damping * scale).view(n, *([1] * (x.dim() - 1)))

        def op(v):
            return hvp(v) + shift * v

        def dot(a, b):
            return (a * b).flatten(1).sum(1).view(n, *([1] * (x.dim() - 1)))

        b = grad
        sol = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rr = dot(r, r)
        bnorm = rr.sqrt().flatten()
        for _ in range(self.cg_iters):
            if bool((rr.sqrt().flatten() <= self.cg_tol * bnorm).all()):
                break
            ap = op(p)
            alpha = rr / dot(p, ap).clamp_min(torch.finfo(b.dtype).tiny)
            sol = sol + alpha * p
            r = r - alpha * ap
            rr_new = dot(r, r)
            p = r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny)) * p
            rr = rr_new
        return sol

    @staticmethod
    def _rayleigh(g, hg):
        """Curvature of H along the loss gradient, ``g.Hg / g.g`` per image: the damping's scale."""
        num = (g * hg).flatten(1).sum(1)
        den = (g * g).flatten(1).sum(1).clamp_min(torch.finfo(g.dtype).tiny)
        return num / den

    def _run(self, model, x, y):
        _, grad = input_gradient(model, x, y, check=self._check_outputs)
        direction = self.direction(x, grad)
        adv = (x + self.eps * direction / _flat_norm(direction)).clamp_(0.0, 1.0)
        with torch.no_grad():
            margins = margins_of(model(adv), y)
        steps = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return adv, margins > 0, steps, margins


def border_energy_share(delta, ring=2):
    """Share of each perturbation's energy (sum of squares) in the outer ``ring`` pixels.

    Parameters
    ----------
    delta : torch.Tensor
        Perturbations ``(N, C, H, W)``.
    ring : int
        Width of the border ring in pixels (2).

    Returns
    -------
    tuple of (torch.Tensor, float)
        Per-image share (N,) and the share of pixels in the ring (what an attack that
        ignores the border would put there on average).
    """
    h, w = delta.shape[-2:]
    mask = torch.ones(h, w, dtype=torch.bool, device=delta.device)
    mask[ring:h - ring, ring:w - ring] = False
    energy = delta.pow(2).sum(dim=1)
    share = (energy * mask).flatten(1).sum(1) / energy.flatten(1).sum(1).clamp_min(torch.finfo(delta.dtype).tiny)
    return share, float(mask.float().mean())


def damping_cosines(attack, model, x, y):
    """Cosine between :class:`SSIMNewton`'s damped direction and eq. 5's undamped one, per image.

    Parameters
    ----------
    attack : SSIMNewton
        The (damped) attack.
    model : torch.nn.Module
        Classifier.
    x, y : torch.Tensor
        Clean images and labels.

    Returns
    -------
    torch.Tensor
        Cosines (N,), 1 where the damping leaves the direction unchanged.  The undamped
        solve uses CG on the semi-definite ``H`` (a tiny damping of 1e-8 keeps it finite).
    """
    from geoaudit.attacks._base import attack_mode

    undamped = attack.replace(damping=1e-8)
    with attack_mode(model):
        _, grad = input_gradient(model, x, y)
        a = attack.direction(x, grad).flatten(1)
        b = undamped.direction(x, grad).flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(torch.finfo(a.dtype).tiny)
