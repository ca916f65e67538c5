"""Perceptual costs c0(x_adv, x) for the perceptual DRO attack: 1 - SSIM and PieAPP (via piq).

A cost is called as ``cost(x_adv, x) -> Tensor[N]`` (differentiable, piq's own value) and
offers the fast path the attack uses:

* ``prepare(x)`` precomputes what depends on the clean images only (SSIM's local means and
  variances of ``x``; PieAPP's features of ``x``), once per attack;
* ``value_and_grad(x_adv, ref) -> (value[N], d value / d x_adv)``;
* ``select(ref, index)`` keeps the rows of the samples still being attacked.

The SSIM fast path is hand-written (separable Gaussian window, closed-form gradient) and equals
piq's ``1 - ssim(x_adv, x, data_range=1, reduction="none")`` in value and gradient (tested).
PieAPP is evaluated in chunks of 64x64 patches so that one call never holds more activations
than a memory budget the caller sets.
"""
from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F

from geoaudit._errors import DependencyError, InputError
from geoaudit._validation import check_interval, check_options

log = logging.getLogger(__name__)

PIEAPP_ENV = "GEOAUDIT_PIEAPP_WEIGHTS"
PIEAPP_URL = "https://github.com/photosynthesis-team/piq/releases/download/v0.5.4/PieAPPv0.1.pth"
PIEAPP_PATCH = 64
PIEAPP_MISSING_MSG = (
    "PieAPP needs its pretrained weights and they could not be {why}. Download {url} "
    "on a machine with internet access, then either pass its path "
    "(pieapp_weights='PieAPPv0.1.pth' in Python, --pieapp-weights PATH on the command line), "
    "set the environment variable " + PIEAPP_ENV + "=PATH, or copy it to {hub}. "
    "geoaudit never falls back to random PieAPP weights."
)


class Cost:
    """Base class of perceptual costs; subclasses define ``__call__`` and may override the rest."""

    name = "cost"
    min_size = 1
    #: True when the cost is smooth with its minimum at ``x_adv = x``, so its gradient there
    #: is exactly 0 and need not be computed (1 - SSIM); False when unknown.
    zero_grad_at_reference = False

    def __call__(self, x_adv, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, x):
        return {"x": x}

    def select(self, ref, index):
        return {k: v[index] for k, v in ref.items()}

    def value_and_grad(self, x_adv, ref):
        """Value per sample and its gradient w.r.t. ``x_adv``, by autograd through ``__call__``."""
        with torch.enable_grad():
            xa = x_adv.detach().requires_grad_(True)
            value = self(xa, ref["x"])
            (grad,) = torch.autograd.grad(value.sum(), [xa])
        return value.detach(), grad

    def __repr__(self):
        return f"{type(self).__name__}()"


class CallableCost(Cost):
    """Wrap ``fn(x_adv, x) -> Tensor[N]`` (differentiable in ``x_adv``) as a cost."""

    def __init__(self, fn, *, name=None):
        if not callable(fn):
            raise InputError(f"The 'cost' parameter must be 'pieapp', 'ssim' or a callable; got {fn!r}.")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def __call__(self, x_adv, x):
        value = self.fn(x_adv, x)
        if not isinstance(value, torch.Tensor) or value.shape != (x_adv.shape[0],):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"The cost callable {self.name!r} must return one value per image, shape "
                f"({x_adv.shape[0]},) (use reduction='none'); got {got}."
            )
        return value

    def __repr__(self):
        return f"CallableCost({self.name})"


# --------------------------------------------------------------------------- SSIM


def gaussian_window_1d(kernel_size, sigma, device=None, dtype=torch.float32):
    """The normalized 1-D Gaussian of SSIM's window; piq's 2-D window is its outer product."""
    c = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2.0
    g = torch.exp(-(c**2) / (2 * sigma**2))
    return g / g.sum()


def band_matrix(n, g):
    """The 'valid' correlation with the 1-D filter ``g`` as an ``(n - k + 1, n)`` band matrix.

    ``B @ t @ B.T`` filters the last two axes of ``t``: on the CPU, two BLAS products beat a
    small-kernel grouped convolution for images up to about 128 px.
    """
    k = g.numel()
    m = n - k + 1
    rows = torch.arange(m, device=g.device)[:, None] + torch.arange(k, device=g.device)[None]
    return torch.zeros(m, n, dtype=g.dtype, device=g.device).scatter_(1, rows, g.expand(m, k).contiguous())


def reflect_matrix(n, pad, device=None, dtype=torch.float32):
    """``(n + 2 pad, n)`` 0/1 matrix of reflect padding (``F.pad(..., mode="reflect")``)."""
    if pad >= n:
        raise InputError(f"Reflect padding of {pad} pixels needs images wider than {pad} pixels, got {n}.")
    i = torch.arange(-pad, n + pad, device=device)
    i = torch.where(i < 0, -i, torch.where(i >= n, 2 * (n - 1) - i, i))
    return F.one_hot(i, n).to(dtype)


class SSIMCost(Cost):
    """``1 - SSIM(x_adv, x)`` (data range 1), as ``piq.ssim`` (default) or over every pixel.

    11x11 Gaussian window (sigma 1.5), k1 = 0.01, k2 = 0.03, mean over windows and channels,
    piq's average-pool downsampling for images of 384 px and more.

    With piq's "valid" windows, a pixel ``k // 2`` from the border is seen by one window column
    where a central pixel is seen by ``k``: an attack that minimizes valid-window SSIM moves its
    perturbation into the border ring, where SSIM barely sees it (a visible frame).
    ``padding="reflect"`` pads the images by reflection first, so every pixel is the centre
    of one window and the border ring is seen about as much as the rest (:class:`SSIMNewton`
    uses it by default; ``"valid"`` stays the default here so that ``cost="ssim"`` equals
    piq's SSIM, the metric the paper reports).

    Parameters
    ----------
    kernel_size : int
        Odd window side (11).
    kernel_sigma : float
        Window standard deviation (1.5).
    padding : {"valid", "reflect"}
        "valid" (default): windows wholly inside the image, exactly ``piq.ssim`` (value and
        gradient); "reflect": one window per pixel on reflect-padded images.
    """

    name = "ssim"
    zero_grad_at_reference = True

    def __init__(self, *, kernel_size=11, kernel_sigma=1.5, k1=0.01, k2=0.03, padding="valid"):
        self.padding = check_options("padding", padding, ("valid", "reflect"), caller="SSIMCost")
        self.kernel_size = check_interval("kernel_size", kernel_size, 1, None, caller="SSIMCost", integer=True)
        if self.kernel_size % 2 == 0:
            raise InputError(f"The 'kernel_size' parameter of SSIMCost must be an odd int. Got {kernel_size!r} instead.")
        self.kernel_sigma = check_interval("kernel_sigma", kernel_sigma, 0, None, caller="SSIMCost", closed="neither")
        self.k1 = check_interval("k1", k1, 0, None, caller="SSIMCost", closed="neither")
        self.k2 = check_interval("k2", k2, 0, None, caller="SSIMCost", closed="neither")
        self.min_size = self.kernel_size

    def __repr__(self):
        return (f"SSIMCost(kernel_size={self.kernel_size}, kernel_sigma={self.kernel_sigma}, "
                f"padding={self.padding!r})")

    def __call__(self, x_adv, x):
        if self.padding == "reflect":
            return self.autograd_value(x_adv, x)
        import piq

        s = piq.ssim(x_adv, x, kernel_size=self.kernel_size, kernel_sigma=self.kernel_sigma, data_range=1.0,
                     reduction="none", k1=self.k1, k2=self.k2)
        return 1.0 - s

    # -- fast path
    @staticmethod
    def _factor(x):
        return max(1, round(min(x.shape[-2:]) / 256))  # piq's downsampling rule

    #: Up to this side the window is applied as two banded matrix products (BLAS beats a
    #: grouped convolution there); beyond it, as two 1-D grouped convolutions.
    MATMUL_MAX_SIDE = 128

    def _band(self, n, device, dtype):
        """(n - k + 1, n) matrix of the 1-D window's 'valid' correlation; with reflect
        padding, (n, n): the valid correlation of the padded signal."""
        g = gaussian_window_1d(self.kernel_size, self.kernel_sigma, device, dtype)
        if self.padding == "reflect":
            pad = self.kernel_size // 2
            return band_matrix(n + 2 * pad, g) @ reflect_matrix(n, pad, device, dtype)
        return band_matrix(n, g)

    def _window(self, t, transpose=False):
        """Separable Gaussian window over every channel of ``t`` ('valid', or its adjoint)."""
        k = self.kernel_size
        h, w = t.shape[-2:]
        if self.padding == "reflect":  # square (n, n) operators: always the matrix path
            bh, bw = self._band(h, t.device, t.dtype), self._band(w, t.device, t.dtype)
            return bh.T @ t @ bw if transpose else bh @ t @ bw.T
        if transpose:
            h, w = h + k - 1, w + k - 1
        if max(h, w) <= self.MATMUL_MAX_SIDE:
            bh, bw = self._band(h, t.device, t.dtype), self._band(w, t.device, t.dtype)
            return bh.T @ t @ bw if transpose else bh @ t @ bw.T
        c = t.shape[1]
        g = gaussian_window_1d(k, self.kernel_sigma, t.device, t.dtype)
        gr = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        gc = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        if transpose:
            return F.conv_transpose2d(F.conv_transpose2d(t, gc, groups=c), gr, groups=c)
        return F.conv2d(F.conv2d(t, gr, groups=c), gc, groups=c)

    def autograd_value(self, x_adv, x):
        """``1 - SSIM`` per image in plain torch ops (twice differentiable, vmap-safe; equals
        ``__call__``), for Hessians and Hessian-vector products."""
        f = self._factor(x)
        if f > 1:
            x_adv, x = F.avg_pool2d(x_adv, f), F.avg_pool2d(x, f)
        c1, c2 = self.k1**2, self.k2**2
        stats = self._window(torch.cat([x, x_adv, x * x, x_adv * x_adv, x * x_adv], dim=1))
        mu_x, mu_y, e_xx, e_yy, e_xy = stats.chunk(5, dim=1)
        s = ((2 * mu_x * mu_y + c1) * (2 * (e_xy - mu_x * mu_y) + c2)) / (
            (mu_x * mu_x + mu_y * mu_y + c1) * (e_xx - mu_x * mu_x + e_yy - mu_y * mu_y + c2))
        return 1.0 - s.mean(dim=(1, 2, 3))

    def prepare(self, x):
        f = self._factor(x)
        xp = F.avg_pool2d(x, f) if f > 1 else x
        if min(xp.shape[-2:]) < self.kernel_size:
            raise InputError(
                f"SSIM needs images of at least {self.kernel_size}x{self.kernel_size} pixels, "
                f"got {x.shape[-2]}x{x.shape[-1]}."
            )
        stats = self._window(torch.cat([xp, xp * xp], dim=1))
        mu_x, e_xx = stats.chunk(2, dim=1)
        return {"x": x, "xp": xp, "mu_x": mu_x, "sxx": e_xx - mu_x * mu_x}

    def select(self, ref, index):
        return {k: v[index] for k, v in ref.items()}

    def value_and_grad(self, x_adv, ref):
        f = self._factor(x_adv)
        if f > 1:  # pooling is linear: differentiate it by autograd, the SSIM part by hand
            with torch.enable_grad():
                leaf = x_adv.detach().requires_grad_(True)
                pooled = F.avg_pool2d(leaf, f)
                value, g = self._value_and_grad_pooled(pooled.detach(), ref)
                (grad,) = torch.autograd.grad(pooled, [leaf], grad_outputs=g)
            return value, grad
        return self._value_and_grad_pooled(x_adv, ref)

    def value(self, x_adv, x):
        """``1 - SSIM`` per image on the fused path: no gradient, and no read of the device
        (piq's ``ssim`` checks its inputs' ranges on the host first).

        Parameters
        ----------
        x_adv, x : torch.Tensor
            ``(N, C, H, W)`` images in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N,)``, equal to ``self(x_adv, x)`` up to float rounding.
        """
        with torch.no_grad():
            if self.padding == "reflect":
                return self.autograd_value(x_adv, x)
            ref = self.prepare(x)
            f = self._factor(x_adv)
            y = F.avg_pool2d(x_adv, f) if f > 1 else x_adv
            x, mu_x, sxx = ref["xp"], ref["mu_x"], ref["sxx"]
            c1, c2 = self.k1**2, self.k2**2
            m_y, e_yy, e_xy = self._window(torch.cat([y, y * y, x * y], dim=1)).chunk(3, dim=1)
            s = ((2 * mu_x * m_y + c1) * (2 * (e_xy - mu_x * m_y) + c2)
                 / ((mu_x * mu_x + m_y * m_y + c1) * (sxx + e_yy - m_y * m_y + c2)))
            return 1.0 - s.mean(dim=(1, 2, 3))

    def _value_and_grad_pooled(self, y, ref):
        with torch.no_grad():
            x, mu_x, sxx = ref["xp"], ref["mu_x"], ref["sxx"]
            c1, c2 = self.k1**2, self.k2**2
            stats = self._window(torch.cat([y, y * y, x * y], dim=1))
            m_y, e_yy, e_xy = stats.chunk(3, dim=1)
            a1 = 2 * mu_x * m_y + c1
            a2 = 2 * (e_xy - mu_x * m_y) + c2
            b1 = mu_x * mu_x + m_y * m_y + c1
            b2 = sxx + e_yy - m_y * m_y + c2
            s = (a1 * a2) / (b1 * b2)
            value = 1.0 - s.mean(dim=(1, 2, 3))
            # d(1 - mean S)/dS = -1/count; chain through the window sums m_y, e_yy, e_xy.
            ds = s * (-1.0 / (s.shape[1] * s.shape[2] * s.shape[3]))
            d_my = ds * (2 * mu_x / a1 - 2 * mu_x / a2 - 2 * m_y / b1 + 2 * m_y / b2)
            d_eyy = -ds / b2
            d_exy = ds * 2 / a2
            back = self._window(torch.cat([d_my, d_eyy, d_exy], dim=1), transpose=True)
            g_my, g_eyy, g_exy = back.chunk(3, dim=1)
            grad = g_my + 2 * y * g_eyy + x * g_exy
        return value, grad


# --------------------------------------------------------------------------- PieAPP


def _hub_path():
    return Path(torch.hub.get_dir()) / "checkpoints" / "PieAPPv0.1.pth"


def _fix_state(state):
    # The released file stores ref_score_subtract.weight as shape (1,); piq unsqueezes it.
    state = dict(state)
    w = state.get("ref_score_subtract.weight")
    if isinstance(w, torch.Tensor) and w.dim() == 1:
        state["ref_score_subtract.weight"] = w.unsqueeze(1)
    return state


def load_pieapp_network(weights=None):
    """The PieAPP network of piq (``piq.pieapp.PieAPPModel``) with its pretrained weights.

    Looked up in order: ``weights`` (a path), the environment variable
    ``GEOAUDIT_PIEAPP_WEIGHTS``, then piq's own download through ``torch.hub`` (which uses the
    hub cache, ``$TORCH_HOME/hub/checkpoints/PieAPPv0.1.pth``, when the file is already there).

    Raises
    ------
    DependencyError
        When no weights can be found: the message says how to provide the file.
    """
    from piq.pieapp import PieAPPModel

    source = None
    if weights is not None:
        source = ("argument pieapp_weights", Path(weights))
    elif os.environ.get(PIEAPP_ENV):
        source = (f"environment variable {PIEAPP_ENV}", Path(os.environ[PIEAPP_ENV]))
    if source is not None:
        origin, path = source
        if not path.is_file():
            raise DependencyError(
                f"PieAPP weights file {str(path)!r} (from the {origin}) does not exist. "
                + PIEAPP_MISSING_MSG.format(why="loaded", url=PIEAPP_URL, hub=_hub_path())
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt or foreign file: say which file
            raise DependencyError(f"Could not read PieAPP weights from {str(path)!r}: {e}") from e
    else:
        try:
            state = torch.hub.load_state_dict_from_url(PIEAPP_URL, progress=False, map_location="cpu")
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            raise DependencyError(
                PIEAPP_MISSING_MSG.format(why=f"downloaded ({type(e).__name__}: {e})", url=PIEAPP_URL,
                                          hub=_hub_path())
            ) from e
        origin = "piq download"
    with torch.device("meta"):  # no random init: every tensor comes from the file
        net = PieAPPModel()
    try:
        net.load_state_dict(_fix_state(state), assign=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DependencyError(f"The PieAPP weights from the {origin} are not a PieAPP state dict: {e}") from e
    for p in net.parameters():
        p.requires_grad_(False)
    log.debug("PieAPP weights loaded from the %s", origin)
    return net.eval()


class PieAPPCost(Cost):
    """PieAPP (Prashnani et al., 2018) as computed by ``piq.PieAPP(data_range=1, reduction="none")``.

    Images are cut into 64x64 patches (stride 27 by default, as piq); a score per image is the
    weighted mean of its patch scores.  Images must be at least 64x64; grey images are
    repeated to RGB.  The network is built at first use (no download at import or construction).

    Parameters
    ----------
    weights : str, Path or None
        Local PieAPP weights file (``PieAPPv0.1.pth``).  Default: ``$GEOAUDIT_PIEAPP_WEIGHTS``,
        then piq's own download.  See :func:`load_pieapp_network`.
    stride : int
        Patch stride (27).
    memory_budget_mb : float
        Most memory one chunk of patches may take in the network's forward + backward; the
        chunk size follows from it (at least one patch).  Also caps the cache of the clean
        images' features (beyond it, they are recomputed at each refresh).
    chunk_size : int or None
        Patches per chunk; overrides ``memory_budget_mb``.
    network : torch.nn.Module or None
        A ready ``piq.pieapp.PieAPPModel`` (tests and benchmarks pass one with random weights
        on purpose); when given, ``weights`` is ignored.
    """

    name = "pieapp"
    min_size = PIEAPP_PATCH
    #: Bytes of activations one float32 64x64 patch holds during forward + backward (measured
    #: with torch.profiler on CPU, ~13 MB, rounded up).
    BYTES_PER_PATCH = 16 * 2**20

    def __init__(self, *, weights=None, stride=27, memory_budget_mb=1024, chunk_size=None, network=None):
        self.weights = weights
        self.stride = check_interval("stride", stride, 1, None, caller="PieAPPCost", integer=True)
        self.memory_budget_mb = check_interval("memory_budget_mb", memory_budget_mb, 0, None,
                                               caller="PieAPPCost", closed="neither")
        self.chunk_size = (None if chunk_size is None else
                           check_interval("chunk_size", chunk_size, 1, None, caller="PieAPPCost", integer=True))
        self._net = network
        if network is not None:
            for p in network.parameters():
                p.requires_grad_(False)

    def __repr__(self):
        return f"PieAPPCost(stride={self.stride}, memory_budget_mb={self.memory_budget_mb})"

    def network(self, device=None, dtype=None):
        if self._net is None:
            self._net = load_pieapp_network(self.weights)
        if device is not None:
            self._net.to(device=device, dtype=dtype)
        return self._net

    def patch_chunk(self, dtype=torch.float32):
        if self.chunk_size is not None:
            return self.chunk_size
        per = self.BYTES_PER_PATCH * torch.tensor([], dtype=dtype).element_size() // 4
        return max(1, int(self.memory_budget_mb * 2**20 // per))

    def _check(self, x):
        if min(x.shape[-2:]) < PIEAPP_PATCH:
            raise InputError(
                f"PieAPP needs images of at least {PIEAPP_PATCH}x{PIEAPP_PATCH} pixels, got "
                f"{x.shape[-2]}x{x.shape[-1]}; use cost='ssim' for smaller images."
            )

    def _patches(self, x):
        """(N, P, 3, 64, 64) patches on piq's [0, 255] scale; a view-only graph from ``x``."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise InputError(f"PieAPP needs RGB (3-channel) or grey images, got {x.shape[1]} channels.")
        s, st = PIEAPP_PATCH, self.stride
        p = (x * 255.0).unfold(2, s, st).unfold(3, s, st)  # N, 3, ph, pw, 64, 64
        n, c, ph, pw = p.shape[:4]
        return p.permute(0, 2, 3, 1, 4, 5).reshape(n, ph * pw, c, s, s)

    def _features(self, patches):
        """Features and weight features of a flat batch of patches, in chunks (no grad)."""
        net = self.network(patches.device, patches.dtype)
        chunk = self.patch_chunk(patches.dtype)
        feats, wts = [], []
        with torch.no_grad():
            for i in range(0, patches.shape[0], chunk):
                f, w = net(patches[i:i + chunk])
                feats.append(f)
                wts.append(w)
        return torch.cat(feats), torch.cat(wts)

    def prepare(self, x):
        self._check(x)
        patches = self._patches(x)
        n, p = patches.shape[:2]
        net = self.network(x.device, x.dtype)
        feat_numel = net.fc1_score.in_features + net.fc1_weight.in_features
        cache_bytes = n * p * feat_numel * x.element_size()
        if cache_bytes > self.memory_budget_mb * 2**20:
            return {"x": x}  # too big to keep: recompute the clean features at each refresh
        f, w = self._features(patches.reshape(n * p, *patches.shape[2:]))
        return {"x": x, "feat": f.view(n, p, -1), "wfeat": w.view(n, p, -1)}

    def _scores(self, net, patches, rf, rw):
        f, w = net(patches)
        d, wt = net.compute_difference(rf - f, rw - w)
        return d.view(-1), wt.view(-1)

    def __call__(self, x_adv, x):
        """Differentiable PieAPP per image (piq's value); memory grows with the batch."""
        self._check(x_adv)
        net = self.network(x_adv.device, x_adv.dtype)
        pa, px = self._patches(x_adv), self._patches(x)
        n, p = pa.shape[:2]
        with torch.no_grad():
            rf, rw = net(px.reshape(n * p, *px.shape[2:]))
        d, wt = self._scores(net, pa.reshape(n * p, *pa.shape[2:]), rf, rw)
        d, wt = d.view(n, p), wt.view(n, p)
        return (d * wt).sum(1) / wt.sum(1)

    def value_and_grad(self, x_adv, ref):
        self._check(x_adv)
        net = self.network(x_adv.device, x_adv.dtype)
        with torch.enable_grad():
            leaf = x_adv.detach().requires_grad_(True)
            patches_graph = self._patches(leaf)
        n, p = patches_graph.shape[:2]
        patches = patches_graph.detach()
        if "feat" in ref:
            rf, rw = ref["feat"], ref["wfeat"]
        else:
            rf, rw = self._features(self._patches(ref["x"]).reshape(n * p, *patches.shape[2:]))
            rf, rw = rf.view(n, p, -1), rw.view(n, p, -1)
        grads = torch.empty_like(patches)
        values = torch.empty(n, dtype=x_adv.dtype, device=x_adv.device)
        chunk = self.patch_chunk(x_adv.dtype)
        if p <= chunk:  # whole images per chunk: one pass
            per = max(1, chunk // p)
            for i in range(0, n, per):
                with torch.enable_grad():
                    sub = patches[i:i + per].reshape(-1, *patches.shape[2:]).requires_grad_(True)
                    k = sub.shape[0] // p
                    d, wt = self._scores(net, sub, rf[i:i + k].reshape(k * p, -1), rw[i:i + k].reshape(k * p, -1))
                    d, wt = d.view(k, p), wt.view(k, p)
                    val = (d * wt).sum(1) / wt.sum(1)
                    (g,) = torch.autograd.grad(val.sum(), [sub])
                grads[i:i + k] = g.view(k, p, *patches.shape[2:])
                values[i:i + k] = val.detach()
        else:  # an image's patches exceed the budget: scores first, then gradients by chunk
            for i in range(n):
                ds, ws = [], []
                with torch.no_grad():
                    for a in range(0, p, chunk):
                        d, wt = self._scores(net, patches[i, a:a + chunk], rf[i, a:a + chunk], rw[i, a:a + chunk])
                        ds.append(d)
                        ws.append(wt)
                d_all, w_all = torch.cat(ds), torch.cat(ws)
                total_w = w_all.sum()
                value = (d_all * w_all).sum() / total_w
                # value = sum d_p w_p / sum w_p: d value/d d_p = w_p/W, d value/d w_p = (d_p - value)/W
                c_d, c_w = w_all / total_w, (d_all - value) / total_w
                for a in range(0, p, chunk):
                    with torch.enable_grad():
                        sub = patches[i, a:a + chunk].clone().requires_grad_(True)
                        d, wt = self._scores(net, sub, rf[i, a:a + chunk], rw[i, a:a + chunk])
                        surrogate = (c_d[a:a + chunk] * d).sum() + (c_w[a:a + chunk] * wt).sum()
                        (g,) = torch.autograd.grad(surrogate, [sub])
                    grads[i, a:a + chunk] = g
                values[i] = value
        with torch.enable_grad():  # fold patch gradients back onto the image (overlaps add up)
            (grad,) = torch.autograd.grad(patches_graph, [leaf], grad_outputs=grads)
        return values, grad


def make_cost(cost, *, pieapp_weights=None, memory_budget_mb=1024, chunk_size=None):
    """Resolve ``"ssim"``, ``"pieapp"``, a :class:`Cost` or a callable into a :class:`Cost`."""
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, str):
        if cost == "ssim":
            return SSIMCost()
        if cost == "pieapp":
            return PieAPPCost(weights=pieapp_weights, memory_budget_mb=memory_budget_mb, chunk_size=chunk_size)
        raise InputError(
            f"The 'cost' parameter must be 'pieapp', 'ssim', a Cost or a callable "
            f"cost(x_adv, x) -> Tensor[N]. Got {cost!r} instead."
        )
    if callable(cost):
        return CallableCost(cost)
    raise InputError(
        f"The 'cost' parameter must be 'pieapp', 'ssim', a Cost or a callable "
        f"cost(x_adv, x) -> Tensor[N]. Got {cost!r} instead."
    )
