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


def weighted_step(model, optimizer, x, y, w, *, mean_weight, weight_loss=True):
    """One SGD step on a minibatch of drawn examples (the mapping in the module docstring).

    Returns the step's (loss, number correct) as Python numbers."""
    model.train()
    logits = model(x)
    losses = F.cross_entropy(logits, y, reduction="none")
    loss = (losses * (w / mean_weight)).mean() if weight_loss else losses.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())


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
                 on_epoch_end=None, desc=None):
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

    Returns
    -------
    (model, info)
        The model in eval mode on ``device``; ``info`` holds ``weights_source``,
        ``normalization``, ``history`` (per-epoch loss, accuracy, seconds), ``train_seconds``
        and ``resumed_from_epoch``.
    """
    caller = "sample_model"
    seed = check_interval("seed", seed, 0, None, caller=caller, integer=True)
    epochs = check_interval("epochs", epochs, 1, None, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    lr = check_interval("lr", lr, 0, None, caller=caller, closed="neither")
    if dataset.size == 0:
        raise InputError("The weighted dataset is empty.")
    m = int(samples_per_epoch or dataset.size)
    c, h = int(dataset.images.shape[1]), int(dataset.images.shape[-1])
    device = torch.device(device)
    model, source, normalization = make_model(arch, seed=seed, num_classes=len(class_names), in_channels=c,
                                              image_size=h, pretrained=pretrained, normalization=normalization)
    model.to(device)
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
        tot_loss, correct = 0.0, 0
        for lo in range(0, m, batch_size):
            idx = draws[lo:lo + batch_size]
            x, y, w = dataset.batch(idx, device)
            loss, corr = weighted_step(model, opt, x, y, w, mean_weight=mean_w, weight_loss=weight_loss)
            if not math.isfinite(loss):
                raise InputError(f"Training diverged (loss {loss}) at epoch {epoch + 1}; lower the learning rate (lr={lr}).")
            tot_loss += loss * len(idx)
            correct += corr
        secs = time.perf_counter() - t0
        elapsed += secs
        stats = {"epoch": epoch + 1, "loss": tot_loss / m, "train_accuracy": correct / m, "seconds": secs}
        history.append(stats)
        if state_path:
            _save_state(state_path, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                     "rng": rng.bit_generator.state, "history": history, "elapsed": elapsed})
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, stats)
    model.eval()
    return model, {"weights_source": source, "normalization": normalization, "history": history,
                   "train_seconds": elapsed, "resumed_from_epoch": resumed_from}
