"""Algorithm 3 for a group of population members trained together (``train_population(stack=...)``).

K members of a small architecture become one module of grouped layers: each convolution a
``groups=K`` convolution over the members' batches laid side by side along channels, each
BatchNorm one over K*C channels (every member normalised by its own batch statistics, as when
trained alone), each linear layer one batched matrix product (``baddbmm``) with weights of shape
(K, out, in).  One forward, one backward and one SGD step per minibatch train all K members.

Every member keeps what makes it itself: its seed's initial weights, its own draws from D
(``np.random.default_rng([seed, 3])``, one epoch of draws at a time, as :func:`sample_model`),
its own loss (weighted by ``P_i / E[P]``) and, since SGD with momentum and weight decay is
elementwise, exactly its own optimizer step.  The sum of the K losses is backpropagated; its
gradient with respect to member k's weights is member k's gradient.  What differs from one
member at a time is only the order of floating-point sums inside grouped kernels, so the
weights agree to float tolerance, not bitwise (measured in tests/test_train_stacked.py and
``benchmarks/populations_stacked.py``).

Supported: ``small_cnn``, ``lenet5`` and ``mlp7`` (chains of convolutions, BatchNorm, ReLU,
pooling, flatten and linear layers); other architectures are trained one at a time.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoaudit._errors import InputError
from geoaudit._progress import progress
from geoaudit._validation import check_interval
from geoaudit.models._zoo import MLP7, LeNet5, Normalize, NormalizedModel, SmallCNN
from geoaudit.train._sample import (
    BN_SAMPLES,
    _autocast,
    _precise_bn,
    make_model,
    make_optimizer,
    performance_settings,
    prepare_model,
)

log = logging.getLogger(__name__)

#: Architectures whose members can be stacked into grouped layers.
STACKABLE = ("small_cnn", "lenet5", "mlp7")
#: Group size of ``stack="auto"`` on CUDA.
AUTO_GROUP = 10
_FLATTEN = "flatten"


def check_stack(stack, *, caller):
    """``stack`` checked: False, an int >= 1, or "auto"; returned as given."""
    if stack is False or stack == "auto" and isinstance(stack, str):
        return stack
    if isinstance(stack, (int, np.integer)) and not isinstance(stack, bool) and stack >= 1:
        return int(stack)
    raise InputError(f"The 'stack' parameter of {caller} must be False, a group size of at least 1, or 'auto'. "
                     f"Got {stack!r} instead.")


def group_size(stack, *, arch, device) -> int:
    """How many members train together (1: one at a time) for a checked ``stack``.

    Parameters
    ----------
    stack : False, int or "auto"
        An int K: groups of K, as one grouped module (:func:`train_stacked`) for the
        architectures of :data:`STACKABLE`, on K CUDA streams (:func:`train_concurrent`) for the
        others on CUDA, one at a time for the others elsewhere.  "auto": groups of
        :data:`AUTO_GROUP` stackable members on CUDA, else one at a time (on a CPU a member's
        step is 95-97% convolution, pooling and BatchNorm kernels, and grouped kernels were
        measured slower than K separate ones: ``benchmarks/populations_stacked.py``; streams
        for large models are not measured).
    arch : str
    device : torch.device

    Returns
    -------
    int
    """
    cuda = torch.device(device).type == "cuda"
    if stack is False:
        return 1
    if arch not in STACKABLE:
        return int(stack) if stack != "auto" and cuda else 1
    if stack == "auto":
        return AUTO_GROUP if cuda else 1
    return int(stack)


def stack_mode(arch) -> str:
    """How a group of ``arch`` members trains together: "grouped" (one module) or "streams"."""
    return "grouped" if arch in STACKABLE else "streams"


def _chain(model, prefix=""):
    """``model``'s layers in forward order as ``(state-dict prefix, module)``; ``(None, "flatten")``
    where its forward flattens.  None for a model that is not one of the stackable zoo classes."""
    t = type(model)
    if t is NormalizedModel:
        inner = _chain(model[1], prefix + "1.")
        return None if inner is None else [(prefix + "0", model[0])] + inner
    if t is SmallCNN:
        return ([(f"{prefix}features.{i}", m) for i, m in enumerate(model.features)] + [(None, _FLATTEN)]
                + [(prefix + "classifier", model.classifier)])
    if t is LeNet5:
        names = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", _FLATTEN, "fc1", "relu3", "fc2", "relu4",
                 "fc3"]
        return [(None, _FLATTEN) if n == _FLATTEN else (prefix + n, getattr(model, n)) for n in names]
    if t is MLP7:
        return [(None, _FLATTEN) if isinstance(m, nn.Flatten) else (f"{prefix}net.{i}", m)
                for i, m in enumerate(model.net)]
    return None


def stackable(model) -> bool:
    """Whether ``model`` (as :func:`make_model` builds it) maps onto grouped layers."""
    chain = _chain(model)
    ok = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, Normalize)
    return chain is not None and all(m == _FLATTEN or type(m) in ok for _, m in chain)


class _Linear(nn.Module):
    """K linear layers as one: ``(K, B, in) -> (K, B, out)``."""

    def __init__(self, layers):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x):
        return torch.baddbmm(self.bias[:, None, :], x, self.weight.transpose(1, 2))


class _Normalize(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.register_buffer("mean", torch.cat([m.mean for m in layers], 1))
        self.register_buffer("std", torch.cat([m.std for m in layers], 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class StackedModel(nn.Module):
    """K members of one stackable architecture as one module of grouped layers.

    Parameters
    ----------
    members : sequence of torch.nn.Module
        Models alike but for their weights, each as :func:`make_model` builds it.

    Called on ``(B, K*C, H, W)`` (member k's batch in channels ``k*C:(k+1)*C``, see
    :meth:`arrange`), returns ``(K, B, num_classes)`` logits.
    """

    def __init__(self, members):
        super().__init__()
        if not members or not all(stackable(m) for m in members):
            raise InputError("StackedModel takes one or more small_cnn, lenet5 or mlp7 models.")
        chains = [_chain(m) for m in members]
        if len({tuple((p, type(m).__name__ if m != _FLATTEN else m) for p, m in c) for c in chains}) != 1:
            raise InputError("StackedModel needs members of one architecture.")
        self.K = K = len(members)
        self.prefixes, self.kinds = [], []
        layers = []
        for i, (prefix, l0) in enumerate(chains[0]):
            group = [c[i][1] for c in chains]
            if l0 == _FLATTEN:
                layer, kind = nn.Identity(), _FLATTEN
            elif isinstance(l0, Normalize):
                layer, kind = _Normalize(group), "normalize"
            elif isinstance(l0, nn.Conv2d):
                layer = nn.Conv2d(l0.in_channels * K, l0.out_channels * K, l0.kernel_size, stride=l0.stride,
                                  padding=l0.padding, dilation=l0.dilation, groups=l0.groups * K,
                                  bias=l0.bias is not None, padding_mode=l0.padding_mode)
                kind = "channels"
            elif isinstance(l0, nn.BatchNorm2d):
                layer = nn.BatchNorm2d(l0.num_features * K, eps=l0.eps, momentum=l0.momentum, affine=l0.affine,
                                       track_running_stats=l0.track_running_stats)
                kind = "channels"
            elif isinstance(l0, nn.Linear):
                layer, kind = _Linear(group), "linear"
            else:  # ReLU and pooling: the same per channel or per row
                layer, kind = copy.deepcopy(l0), "same"
            if kind == "channels":
                with torch.no_grad():
                    for name, t in layer.state_dict().items():
                        src = [m.state_dict()[name] for m in group]
                        t.copy_(src[0] if t.dim() == 0 else torch.cat(src))
            layers.append(layer)
            self.prefixes.append(prefix)
            self.kinds.append(kind)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        """Logits of K batches.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, K*C, H, W)``, from :meth:`arrange`.

        Returns
        -------
        torch.Tensor
            ``(K, B, num_classes)``.
        """
        for layer, kind in zip(self.layers, self.kinds):
            if kind == _FLATTEN:
                x = x.reshape(x.shape[0], self.K, -1).transpose(0, 1)
            else:
                x = layer(x)
        return x

    def arrange(self, x):
        """``(K*B, C, H, W)`` (member k's batch at rows ``k*B:(k+1)*B``) as ``(B, K*C, H, W)``."""
        kb, c = x.shape[:2]
        b = kb // self.K
        return x.view(self.K, b, c, *x.shape[2:]).transpose(0, 1).reshape(b, self.K * c, *x.shape[2:])

    def member_states(self):
        """The K members' state dicts (CPU copies), named as the members' own."""
        out = [{} for _ in range(self.K)]
        for layer, prefix, kind in zip(self.layers, self.prefixes, self.kinds):
            for name, t in layer.state_dict().items():
                t = t.detach().cpu()
                for k in range(self.K):
                    if kind == "linear":
                        v = t[k]
                    elif kind == "normalize":
                        v = t.chunk(self.K, 1)[k]
                    elif t.dim() == 0:
                        v = t
                    else:
                        v = t.chunk(self.K, 0)[k]
                    out[k][f"{prefix}.{name}"] = v.clone()
        return out


def _group_setup(caller, dataset, seeds, epochs, batch_size, lr, amp, channels_last, compile, samples_per_epoch,
                 arch, class_names, pretrained, normalization):
    """Validated inputs of a group of members, their draws per epoch and their fresh models."""
    seeds = [check_interval("seeds", s, 0, None, caller=caller, integer=True) for s in seeds]
    if not seeds:
        raise InputError(f"The 'seeds' parameter of {caller} must hold at least one seed.")
    epochs = check_interval("epochs", epochs, 1, None, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    lr = check_interval("lr", lr, 0, None, caller=caller, closed="neither")
    perf = performance_settings(amp, channels_last, compile, caller=caller)
    if dataset.size == 0:
        raise InputError("The weighted dataset is empty.")
    m = int(samples_per_epoch or dataset.size)
    c, h = int(dataset.images.shape[1]), int(dataset.images.shape[-1])
    built = [make_model(arch, seed=s, num_classes=len(class_names), in_channels=c, image_size=h,
                        pretrained=pretrained, normalization=normalization) for s in seeds]
    return seeds, epochs, batch_size, lr, perf, m, built


def train_stacked(dataset, *, arch="small_cnn", class_names, seeds, epochs=10, batch_size=64, lr=0.05, momentum=0.9,
                  weight_decay=5e-4, weight_loss=True, samples_per_epoch=None, normalization=None, pretrained=False,
                  device="cpu", on_epoch_end=None, desc=None, amp="off", channels_last=False, compile=False,
                  bn_samples=BN_SAMPLES):
    """Algorithm 3 for K members at once: what ``sample_model(seed=s)`` does for each ``s`` of ``seeds``.

    Parameters
    ----------
    dataset : WeightedDataset
        D (for ``plain`` training: the clean examples, all of weight 1).
    arch : {"small_cnn", "lenet5", "mlp7"}
    class_names : sequence of str
    seeds : sequence of int
        The members, one seed each (initial weights and draws, as in :func:`sample_model`).
    epochs, batch_size, lr, momentum, weight_decay, weight_loss, samples_per_epoch, normalization, pretrained
        As :func:`sample_model`, the same for every member.
    device : str or torch.device
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(k, epoch, stats)`` for member k after each epoch.
    desc : str, optional
        Progress bar label.
    amp, channels_last, compile
        Switches of the training step (:func:`performance_settings`), applied to the stacked module.

    Returns
    -------
    list of (model, info)
        One per seed, as :func:`sample_model` returns them: the model in eval mode on ``device``;
        ``info`` as sample_model's (``history`` seconds are the group's epoch time divided by K)
        plus ``stacked`` (K) and ``group_seconds`` (the group's training time).  Nothing is saved
        between epochs: an interrupted group starts over.
    """
    seeds, epochs, batch_size, lr, perf, m, built = _group_setup(
        "train_stacked", dataset, seeds, epochs, batch_size, lr, amp, channels_last, compile, samples_per_epoch,
        arch, class_names, pretrained, normalization)
    K = len(seeds)
    device = torch.device(device)
    members = [b[0] for b in built]
    if not stackable(members[0]):
        raise InputError(f"The {arch!r} architecture cannot be stacked; stackable: {', '.join(STACKABLE)}.")
    stacked = StackedModel(members)
    step_model = prepare_model(stacked, perf, device)
    opt = make_optimizer(stacked, lr=lr, momentum=momentum, weight_decay=weight_decay)
    rngs = [np.random.default_rng([s, 3]) for s in seeds]
    mean_w = dataset.mean_sampled_weight()
    histories = [[] for _ in seeds]
    elapsed = 0.0
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    stacked.train()
    for epoch in progress(range(epochs), desc=desc or f"{K} models stacked", unit="epoch", total=epochs):
        t0 = time.perf_counter()
        draws = [dataset.draw(m, rng) for rng in rngs]
        tot_loss = torch.zeros(K, dtype=acc_dtype, device=device)
        correct = torch.zeros(K, dtype=torch.int64, device=device)
        for lo in range(0, m, batch_size):
            idx = np.concatenate([d[lo:lo + batch_size] for d in draws])
            b = len(idx) // K
            x, y, w = dataset.batch(idx, device)  # one read of D for the K members' batches
            x = stacked.arrange(x)
            if perf.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            y, w = y.view(K, b), w.view(K, b)
            with _autocast(perf, device):
                logits = step_model(x)
                losses = F.cross_entropy(logits.float().reshape(K * b, -1), y.reshape(-1),
                                         reduction="none").view(K, b)
                loss = (losses * (w / mean_w)).mean(1) if weight_loss else losses.mean(1)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # d(sum)/d(member k's weights) = member k's own gradient
            opt.step()
            tot_loss.add_(loss.detach().float(), alpha=b)
            correct.add_((logits.detach().argmax(-1) == y).sum(1))
        tot_loss, correct = tot_loss.tolist(), correct.tolist()  # one read per epoch
        secs = time.perf_counter() - t0
        elapsed += secs
        for k, seed in enumerate(seeds):
            if not math.isfinite(tot_loss[k]):
                raise InputError(f"Training diverged (loss {tot_loss[k] / m}) in epoch {epoch + 1} of the model with "
                                 f"seed {seed}; lower the learning rate (lr={lr}).")
        for k in range(K):
            stats = {"epoch": epoch + 1, "loss": tot_loss[k] / m, "train_accuracy": correct[k] / m,
                     "seconds": secs / K}
            histories[k].append(stats)
            if on_epoch_end is not None:
                on_epoch_end(k, epoch + 1, stats)
    states = stacked.member_states()
    result = []
    for k, (model, source, norm) in enumerate(built):
        model.load_state_dict(states[k])
        model.to(device)
        n_bn = _precise_bn(model, dataset, bn_samples, m, batch_size, seeds[k], device, perf)
        result.append((model, {"weights_source": source, "normalization": norm, "history": histories[k],
                               "train_seconds": elapsed / K, "resumed_from_epoch": 0, "performance": perf,
                               "stacked": K, "stack_mode": "grouped", "group_seconds": elapsed, "bn_samples": n_bn}))
    return result


def train_concurrent(dataset, *, arch, class_names, seeds, epochs=10, batch_size=64, lr=0.05, momentum=0.9,
                     weight_decay=5e-4, weight_loss=True, samples_per_epoch=None, normalization=None,
                     pretrained=False, device="cpu", state_paths=None, on_epoch_end=None, desc=None, amp="off",
                     channels_last=False, compile=False, bn_samples=BN_SAMPLES):
    """Algorithm 3 for K members of any architecture, their steps interleaved; on CUDA each member
    on its own stream, so one member's kernels fill the device while another's wait.

    Each member is its own module, optimizer and draws, exactly as :func:`sample_model` trains it:
    on a CPU (one stream) the members come out bitwise equal to one at a time; on CUDA as equal
    as two runs of one member are (cuDNN chooses its algorithms).  Loss and accuracy are read once
    per epoch, after the streams are synchronised.

    Parameters
    ----------
    dataset, arch, class_names, seeds, epochs, batch_size, lr, momentum, weight_decay, weight_loss,
    samples_per_epoch, normalization, pretrained, device, on_epoch_end, desc, amp, channels_last, compile
        As :func:`train_stacked` (any architecture).
    state_paths : sequence of path, optional
        One resume file per member, written atomically after every epoch in :func:`sample_model`'s
        format (an interrupted member resumes alone, with :func:`sample_model`).  Members start
        from scratch here.

    Returns
    -------
    list of (model, info)
        As :func:`train_stacked`; ``stacked`` is K.
    """
    from geoaudit.train._sample import _save_state, weighted_step

    seeds, epochs, batch_size, lr, perf, m, built = _group_setup(
        "train_concurrent", dataset, seeds, epochs, batch_size, lr, amp, channels_last, compile, samples_per_epoch,
        arch, class_names, pretrained, normalization)
    K = len(seeds)
    device = torch.device(device)
    cuda = device.type == "cuda"
    models = [b[0] for b in built]
    step_models = [prepare_model(mod, perf, device) for mod in models]
    opts = [make_optimizer(mod, lr=lr, momentum=momentum, weight_decay=weight_decay) for mod in models]
    rngs = [np.random.default_rng([s, 3]) for s in seeds]
    mean_w = dataset.mean_sampled_weight()
    histories = [[] for _ in seeds]
    elapsed = 0.0
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    if cuda:
        streams = [torch.cuda.Stream(device) for _ in seeds]
        for s in streams:  # the weights were written on the current stream
            s.wait_stream(torch.cuda.current_stream(device))
        on_stream = [lambda s=s: torch.cuda.stream(s) for s in streams]
    else:
        on_stream = [contextlib.nullcontext for _ in seeds]
    for epoch in progress(range(epochs), desc=desc or f"{K} models concurrently", unit="epoch", total=epochs):
        t0 = time.perf_counter()
        draws = [dataset.draw(m, rng) for rng in rngs]
        tots, corrs = [], []
        for k in range(K):
            with on_stream[k]():  # each member's accumulators live on its stream
                tots.append(torch.zeros((), dtype=acc_dtype, device=device))
                corrs.append(torch.zeros((), dtype=torch.int64, device=device))
        for lo in range(0, m, batch_size):
            for k in range(K):  # round robin: member k's step is queued while the others' run
                with on_stream[k]():
                    idx = draws[k][lo:lo + batch_size]
                    x, y, w = dataset.batch(idx, device)
                    loss, corr = weighted_step(step_models[k], opts[k], x, y, w, mean_weight=mean_w,
                                               weight_loss=weight_loss, perf=perf)
                    tots[k].add_(loss, alpha=len(idx))
                    corrs[k].add_(corr)
        if cuda:
            torch.cuda.synchronize(device)
        tot_loss, correct = [float(t) for t in tots], [int(t) for t in corrs]
        secs = time.perf_counter() - t0
        elapsed += secs
        for k, seed in enumerate(seeds):
            if not math.isfinite(tot_loss[k]):
                raise InputError(f"Training diverged (loss {tot_loss[k] / m}) in epoch {epoch + 1} of the model with "
                                 f"seed {seed}; lower the learning rate (lr={lr}).")
        for k in range(K):
            stats = {"epoch": epoch + 1, "loss": tot_loss[k] / m, "train_accuracy": correct[k] / m,
                     "seconds": secs / K}
            histories[k].append(stats)
            if state_paths:
                _save_state(state_paths[k], {"epoch": epoch + 1, "model": models[k].state_dict(),
                                             "optimizer": opts[k].state_dict(), "rng": rngs[k].bit_generator.state,
                                             "history": histories[k], "elapsed": elapsed / K})
            if on_epoch_end is not None:
                on_epoch_end(k, epoch + 1, stats)
    result = []
    for k, (model, source, norm) in enumerate(built):
        n_bn = _precise_bn(model, dataset, bn_samples, m, batch_size, seeds[k], device, perf)
        result.append((model, {"weights_source": source, "normalization": norm, "history": histories[k],
                               "train_seconds": elapsed / K, "resumed_from_epoch": 0, "performance": perf,
                               "stacked": K, "stack_mode": "streams", "group_seconds": elapsed, "bn_samples": n_bn}))
    return result
