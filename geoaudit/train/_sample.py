"""Algorithm 3: sample a model from a weighted dataset D by weighted sampling and SGD.

Mapping of the paper's per-example steps to minibatches (also used by Algorithm 2):

* One paper step ``theta <- theta - alpha P_i grad l(theta; x_i, y_i)`` on an example drawn
  with probability ``P_i / sum P`` becomes one row of a minibatch; a minibatch of B drawn
  examples stands for B consecutive paper steps, taken as one step on their mean.
* The loss weight of a row is ``P_i / E[P]`` where ``E[P] = sum P^2 / sum P`` is the expected
  weight of a draw.  The paper's step is the same with learning rate ``alpha = lr / E[P]``:
  without the division the step size would grow with the weights (up to ``T1 * N`` in
  Algorithm 2) and no fixed ``lr`` would work across dataset sizes.  With uniform weights
  (``plain``) every row weighs 1 and this is ordinary minibatch SGD with replacement.
  ``weight_loss=False`` drops ``P_i`` from the step (sampling alone carries the weights).
* One epoch is M draws, M = the size of D (the paper's inner loop ``i = 1..M``), unless
  ``samples_per_epoch`` says otherwise; ``epochs`` is the paper's T2.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geoaudit._errors import InputError
from geoaudit._io import atomic_save
from geoaudit._progress import progress
from geoaudit._validation import check_interval
from geoaudit.models._zoo import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel, build_model

log = logging.getLogger(__name__)


def make_model(arch, *, seed, num_classes, in_channels, image_size, pretrained=False, normalization=None):
    """Build ``arch`` with weights drawn from ``seed`` (global torch RNG left untouched).

    Returns
    -------
    (model, weights_source, normalization)
        ``normalization`` is what the model's Normalize layer uses (None for none); loaded
        pretrained weights bring their ImageNet statistics.
    """
    init = pretrained if isinstance(pretrained, dict) else None  # resolved initial weights (train._init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model, source = build_model(arch, num_classes=num_classes, in_channels=in_channels,
                                    image_size=image_size, pretrained=False if init else pretrained)
    if init:
        from geoaudit.train._init import apply_initial_weights

        apply_initial_weights(model, init)
        source, normalization = init["source"], init.get("normalization") or normalization
    elif source != "scratch":
        normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if in_channels == 1:
            normalization = {"mean": [float(np.mean(IMAGENET_MEAN))], "std": [float(np.mean(IMAGENET_STD))]}
    if normalization:
        model = NormalizedModel(model, normalization["mean"], normalization["std"])
    return model, source, normalization


def make_optimizer(model, *, lr, momentum, weight_decay):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


PERFORMANCE_DEFAULTS = {"amp": "off", "channels_last": False, "compile": False}


def performance_settings(amp="off", channels_last=False, compile=False, *, caller="sample_model") -> dict:
    """The hot loop's switches, checked, as recorded in a checkpoint's config.

    Parameters
    ----------
    amp : {"off", "bf16"}, default "off"
        bfloat16 autocast of the forward pass and loss (weights and optimizer stay float32).
    channels_last : bool, default False
        Model and batches in NHWC memory format (faster convolutions on CUDA tensor cores).
    compile : bool, default False
        ``torch.compile`` the model (pays on a GPU over many steps; costs a compile first).

    Returns
    -------
    dict
        ``{"amp": ..., "channels_last": ..., "compile": ...}``.
    """
    from geoaudit._validation import check_options

    check_options("amp", amp, ("off", "bf16"), caller=caller)
    for name, v in (("channels_last", channels_last), ("compile", compile)):
        if not isinstance(v, bool):
            raise InputError(f"The '{name}' parameter of {caller} must be True or False. Got {v!r} instead.")
    return {"amp": amp, "channels_last": channels_last, "compile": compile}


def prepare_model(model, perf, device):
    """``model`` on ``device`` with the switches of ``perf`` applied; returns the module to call."""
    model.to(device)
    if perf.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if perf.get("compile") else model


def _autocast(perf, device):
    import contextlib

    if perf.get("amp") == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def weighted_step(model, optimizer, x, y, w, *, mean_weight, weight_loss=True, perf=None):
    """One SGD step on a minibatch of drawn examples (the mapping in the module docstring).

    Parameters
    ----------
    model, optimizer : the module and its optimizer
    x, y, w : images, labels and row weights on the model's device
    mean_weight : float
        E[P], the loss-weight normalizer.
    weight_loss : bool
    perf : dict, optional
        Switches from :func:`performance_settings` (autocast, channels_last).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The step's mean loss (float32 scalar) and number correct (int64 scalar), on the device and
        detached: reading them is left to the caller, once per epoch, so the step never waits
        for the device.
    """
    perf = perf or PERFORMANCE_DEFAULTS
    if perf.get("channels_last"):
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    with _autocast(perf, x.device):
        logits = model(x)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        loss = (losses * (w / mean_weight)).mean() if weight_loss else losses.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float(), (logits.detach().argmax(1) == y).sum()


BN_SAMPLES = 2048


def _batchnorms(model):
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model, dataset, *, samples=BN_SAMPLES, batch_size=64, seed=0, device="cpu", perf=None):
    """Re-estimate a trained model's BatchNorm running statistics on draws from ``dataset``.

    During training, BatchNorm keeps an exponential average (momentum 0.1) of the last batches'
    statistics, taken while the weights still move; with a constant learning rate the model in
    eval mode then normalises with stale statistics, and some seeds test near chance though
    their weights are sound.  This is "precise BN" (as ``torch.optim.swa_utils.update_bn``):
    with the weights fixed, the running mean and variance are reset and averaged over
    ``samples`` draws from D, by D's weights, in batches of ``batch_size``.  Other layers stay
    in eval mode; the weights do not change.

    Parameters
    ----------
    model : torch.nn.Module
    dataset : WeightedDataset
        D, drawn from as Algorithm 3 draws (clean data for ``plain``).
    samples : int, default 2048
        Draws to average over (whole batches; capped at one epoch by the caller); 0 leaves the
        statistics as trained.
    batch_size : int
    seed : int
        The draws come from their own stream ``(seed, 5)``: training's draws are untouched.
    device : str or torch.device
    perf : dict, optional
        Switches from :func:`performance_settings` (autocast, channels_last).

    Returns
    -------
    int
        The number of draws used (0 when the model has no BatchNorm or ``samples`` is 0).
    """
    bns = _batchnorms(model)
    samples = int(samples)
    if not bns or samples <= 0:
        return 0
    batch_size = max(2, min(int(batch_size), samples))
    n = max(batch_size, samples - samples % batch_size)  # whole batches: BatchNorm1d refuses a batch of 1
    draws = dataset.draw(n, np.random.default_rng([int(seed), 5]))
    perf = perf or PERFORMANCE_DEFAULTS
    momenta = [m.momentum for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.train()
    try:
        for i, lo in enumerate(range(0, n, batch_size)):
            # the cumulative average over equal batches; momentum=None would read
            # num_batches_tracked to the host in every layer at every batch
            for m in bns:
                m.momentum = 1.0 / (i + 1)
            x, _, _ = dataset.batch(draws[lo:lo + batch_size], device)
            if perf.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(perf, x.device):
                model(x)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return n


def _precise_bn(model, dataset, bn_samples, m, batch_size, seed, device, perf):
    """How every trained member ends: BatchNorm statistics re-estimated over at most one epoch's
    draws, the model in eval mode; the number of draws used."""
    n = recalibrate_batchnorm(model, dataset, samples=min(int(bn_samples), m), batch_size=batch_size, seed=seed,
                              device=device, perf=perf)
    model.eval()
    return n


def _save_state(path, state):
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def load_state(path):
    """A resume state file, or None when it is missing or unreadable (then training restarts)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # written atomically, so only a foreign/damaged file ends here
        log.warning("Ignoring unreadable resume state %s (%s); starting this model over.", path, e)
        return None


def sample_model(dataset, *, arch="small_cnn", class_names, seed=0, epochs=10, batch_size=64, lr=0.05,
                 momentum=0.9, weight_decay=5e-4, weight_loss=True, samples_per_epoch=None,
                 normalization=None, pretrained=False, device="cpu", state_path=None,
                 on_epoch_end=None, desc=None, amp="off", channels_last=False, compile=False,
                 bn_samples=BN_SAMPLES):
    """Algorithm 3: train one model on the weighted dataset ``dataset`` (D).

    Parameters
    ----------
    dataset : WeightedDataset
        D (for ``plain`` training: the clean examples, all of weight 1).
    arch : str
        An architecture of :data:`geoaudit.train.ARCHITECTURES`.
    class_names : sequence of str
    seed : int
        Seeds the initial weights and the sampling; the same seed gives the same model
        (bitwise on the CPU).
    epochs : int
        T2, the number of passes of ``samples_per_epoch`` draws (default: the size of D).
    batch_size, lr, momentum, weight_decay : SGD hyperparameters (see the module docstring).
    weight_loss : bool
        Weight each row's loss by ``P_i / E[P]`` (Algorithm 3, line 5).
    normalization : dict, optional
        ``{"mean": [...], "std": [...]}`` for the model's Normalize layer.
    pretrained : bool
        ResNets: start from torchvision's weights when they can be had.
    device : str or torch.device
    state_path : path, optional
        Resume file, written atomically after every epoch; training resumes from it.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, stats)`` after each epoch's state is saved.
    amp, channels_last, compile
        Switches of the training step, see :func:`performance_settings` (all off: the exact
        float32 step).  Loss and accuracy stay on the device and are read once per epoch.
    bn_samples : int, default 2048
        After the last epoch, re-estimate BatchNorm running statistics on this many draws from
        D (:func:`recalibrate_batchnorm`); 0 keeps the statistics as trained.

    Returns
    -------
    (model, info)
        The model in eval mode on ``device``; ``info`` holds ``weights_source``,
        ``normalization``, ``history`` (per-epoch loss, accuracy, seconds), ``train_seconds``,
        ``resumed_from_epoch``, ``performance`` (the switches used) and ``bn_samples`` (draws
        the BatchNorm statistics were re-estimated on; 0 for none).
    """
    caller = "sample_model"
    seed = check_interval("seed", seed, 0, None, caller=caller, integer=True)
    epochs = check_interval("epochs", epochs, 1, None, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    lr = check_interval("lr", lr, 0, None, caller=caller, closed="neither")
    bn_samples = check_interval("bn_samples", bn_samples, 0, None, caller=caller, integer=True)
    perf = performance_settings(amp, channels_last, compile, caller=caller)
    if dataset.size == 0:
        raise InputError("The weighted dataset is empty.")
    m = int(samples_per_epoch or dataset.size)
    c, h = int(dataset.images.shape[1]), int(dataset.images.shape[-1])
    device = torch.device(device)
    model, source, normalization = make_model(arch, seed=seed, num_classes=len(class_names), in_channels=c,
                                              image_size=h, pretrained=pretrained, normalization=normalization)
    step_model = prepare_model(model, perf, device)
    opt = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng([seed, 3])
    mean_w = dataset.mean_sampled_weight()
    history, start_epoch, elapsed = [], 0, 0.0
    state = load_state(state_path) if state_path else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        history, start_epoch, elapsed = state["history"], int(state["epoch"]), float(state["elapsed"])
        log.info("Resuming %s at epoch %d/%d", desc or "model", start_epoch + 1, epochs)
    resumed_from = start_epoch
    for epoch in progress(range(start_epoch, epochs), desc=desc or "epochs", unit="epoch",
                          initial=start_epoch, total=epochs):
        t0 = time.perf_counter()
        draws = dataset.draw(m, rng)
        # summed on the device, read once per epoch: no host sync inside the loop
        tot_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for lo in range(0, m, batch_size):
            idx = draws[lo:lo + batch_size]
            x, y, w = dataset.batch(idx, device)
            loss, corr = weighted_step(step_model, opt, x, y, w, mean_weight=mean_w, weight_loss=weight_loss,
                                       perf=perf)
            tot_loss.add_(loss, alpha=len(idx))
            correct.add_(corr)
        tot_loss, correct = float(tot_loss), int(correct)
        if not math.isfinite(tot_loss):
            raise InputError(f"Training diverged (loss {tot_loss / m}) in epoch {epoch + 1}; lower the learning "
                             f"rate (lr={lr}).")
        secs = time.perf_counter() - t0
        elapsed += secs
        stats = {"epoch": epoch + 1, "loss": tot_loss / m, "train_accuracy": correct / m, "seconds": secs}
        history.append(stats)
        if state_path:
            _save_state(state_path, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "rng": rng.bit_generator.state, "history": history, "elapsed": elapsed})
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, stats)
    n_bn = _precise_bn(model, dataset, bn_samples, m, batch_size, seed, device, perf)
    return model, {"weights_source": source, "normalization": normalization, "history": history,
                   "train_seconds": elapsed, "resumed_from_epoch": resumed_from, "performance": perf,
                   "bn_samples": n_bn}
