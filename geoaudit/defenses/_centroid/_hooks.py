"""The forward hooks that record the centroids' activations and score an input's
activations against them during one forward pass."""
from __future__ import annotations

import torch

from geoaudit._device import model_device
from geoaudit._errors import InputError

_TINY = 1e-12
#: Layers at most this wide are scored in one batched product after the forward pass.
_DEFER_MAX_DIM = 2048


class _Hooks:
    """Forward hooks on the chosen modules.  In "record" mode each call's activations are kept
    (flattened, unit-normalised); in "score" mode each call's dot products with the recorded
    centroid activations, and its norms, are computed right away into preallocated
    ``(L, M, N)`` and ``(L, N)`` buffers, so nothing large is kept and a later in-place op
    (``ReLU(inplace=True)``) cannot alter what was measured.  With ``defer`` (no in-place
    module), calls at most ``_DEFER_MAX_DIM`` wide are instead scored together after the
    forward pass, one bmm per width.

    The hook functions are built once; they are attached only for the duration of a call.
    Dot products are taken as ``C (M, d) @ A^T (d, N)``: with few centroids the BLAS is
    several times faster in this orientation than ``A @ C^T`` on CPU."""

    def __init__(self, model, names):
        self.model = model
        self.names = names
        self.mode = None
        self.records: list[tuple[str, torch.Tensor]] = []
        self.calls: dict[str, int] = {}
        modules = dict(model.named_modules())
        self.modules = [(n, modules[n]) for n in names]
        self._fns = [self._hook(n) for n in names]
        # score mode, set by set_centroids: per layer call, the unit-norm centroid activations
        # times -1/2 (M, d) and whether the call is scored inside its hook; the deferred calls by width
        self.centroid_t: list[torch.Tensor] = []
        self.immediate: list[bool] = []
        self.groups: list[tuple[list[int], torch.Tensor]] = []
        # per scored call: layer calls seen, deferred activations, the output buffers
        self.count = 0
        self.pending: list = []
        self.dots = self.norms = None
        # Deferring keeps references to layer outputs until the forward pass ends, which is
        # only safe when no module can overwrite them in place (ReLU(inplace=True)).  It saves
        # kernel launches on accelerators; on the CPU, scoring each output while it is still in
        # cache is as fast, so the CPU never defers.
        self.defer = model_device(model).type != "cpu" and \
            not any(getattr(m, "inplace", False) for m in model.modules())

    def set_centroids(self, centroid_acts):
        """``centroid_acts``: per layer call, the unit-norm centroid activations ``(M, d)``.
        They are kept times -1/2 (exact in binary), so that the products come out as
        ``-cos(a, c) |a| / 2`` and the distance ``(1 - cos) / 2`` is one division and one
        addition away, with the same rounding as computing it from the cosine."""
        self.centroid_t = [(a * -0.5).contiguous() for a in centroid_acts]
        self.immediate = [not self.defer or a.shape[1] > _DEFER_MAX_DIM for a in self.centroid_t]
        by_width: dict = {}
        for i, a in enumerate(self.centroid_t):
            if not self.immediate[i]:
                by_width.setdefault(a.shape[1], []).append(i)
        # (indices, stacked centroids (G, M, d)) per width, stacked once
        self.groups = [(idx, torch.stack([self.centroid_t[i] for i in idx])) for idx in by_width.values()]

    def _hook(self, name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise InputError(f"Layer {name!r} returns a {type(output).__name__}, not a tensor; "
                                 "choose layers whose output is a single tensor.")
            if self.mode == "score":
                i = self.count
                self.count = i + 1
                if i >= len(self.centroid_t):
                    raise InputError("The model called its hooked layers more often than when the centroids "
                                     "were recorded; the defense needs a model with a fixed layer sequence.")
                c = self.centroid_t[i]
                a = output.detach()
                if a.dim() != 2:
                    a = a.reshape(a.shape[0], -1)
                if self.dots is None:
                    n = a.shape[0]
                    self.dots = torch.empty(len(self.centroid_t), c.shape[0], n, dtype=c.dtype, device=c.device)
                    self.norms = torch.empty(len(self.centroid_t), n, dtype=c.dtype, device=c.device)
                elif a.shape[0] != self.dots.shape[2]:
                    raise InputError(f"Layer {name!r} returned {a.shape[0]} rows for a batch of "
                                     f"{self.dots.shape[2]}; the defense needs one row per input.")
                if self.immediate[i]:
                    # two reads of the activations, nothing written at their size
                    torch.mm(c, (a if a.dtype == c.dtype else a.to(c.dtype)).T, out=self.dots[i])
                    torch.linalg.vector_norm(a, dim=1, dtype=c.dtype, out=self.norms[i])
                else:
                    self.pending.append(a)  # scored after the forward pass
                return
            k = self.calls.get(name, 0)
            self.calls[name] = k + 1
            if self.mode == "record":
                a = output.detach().reshape(output.shape[0], -1).float()
                a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(_TINY)
                self.records.append((name if k == 0 else f"{name}#{k + 1}", a))
            else:  # raw activations, for inspection
                self.records.append((name if k == 0 else f"{name}#{k + 1}", output.detach().clone()))
        return hook

    def take_scores(self):
        """Dot products ``(L, M, N)`` with the (scaled) centroids and activation norms ``(L, N)`` of the
        scored forward pass (which called every layer), the deferred calls one bmm per width."""
        dots, norms, pending = self.dots, self.norms, self.pending
        self.dots = self.norms = None
        self.pending = []
        if self.groups:
            deferred = [i for i, imm in enumerate(self.immediate) if not imm]  # order of `pending`
            pos = {i: p for p, i in enumerate(deferred)}
            for idx, cs in self.groups:
                a = torch.stack([pending[pos[i]] for i in idx]).to(cs.dtype)  # (G, N, d)
                s, e = idx[0], idx[-1] + 1
                if e - s == len(idx):  # consecutive layer calls: straight into the buffers
                    torch.bmm(cs, a.transpose(1, 2), out=dots[s:e])
                    torch.linalg.vector_norm(a, dim=2, out=norms[s:e])
                else:
                    sel = torch.tensor(idx, device=dots.device)
                    dots[sel] = torch.bmm(cs, a.transpose(1, 2))
                    norms[sel] = torch.linalg.vector_norm(a, dim=2)
        return dots, norms

    def run(self, x, mode):
        self.mode, self.records, self.calls = mode, [], {}
        self.count, self.pending, self.dots, self.norms = 0, [], None, None
        handles = [m.register_forward_hook(f) for (_, m), f in zip(self.modules, self._fns)]
        modes = [(m, m.training) for m in self.model.modules()]
        training = any(t for _, t in modes)  # all in eval mode already: nothing to switch
        try:
            if training:
                self.model.eval()
            with torch.no_grad():
                logits = self.model(x)
        except BaseException:
            self.pending, self.dots, self.norms = [], None, None
            raise
        finally:
            for h in handles:
                h.remove()
            if training:
                for m, t in modes:
                    m.training = t
            self.mode = None
        return logits
