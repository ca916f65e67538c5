"""Algorithm 2: build the weighted adversarial dataset D, with the cluster-center attack reuse
of appendix D.

D starts as the N clean examples with weight 1.  Round k (k = 1..T1) draws N examples from D
in proportion to their weights, and for the i-th draw takes an SGD step (line 5), attacks the
drawn example against the current model (line 6) and appends the attack with weight
``(k - 1) N + i`` (line 7), so recent attacks weigh more.

Minibatches: B consecutive draws i..i+B-1 are one SGD step on their mean (loss weights
``P_i / E[P]``, see :mod:`geoaudit.train._sample`), then one batched attack against the model
after that step; each appended attack keeps the weight of its own position i.  With B = 1 this
is the paper's algorithm exactly.  The N draws of a round come from D as it was at the start of
the round (line 3), so attacks appended during round k are first drawn in round k + 1.

Attack reuse (appendix D): before training, k-means groups each label's clean images into
clusters of about ``cluster_size``; the member nearest each cluster's mean is its center.  Each
round a center's attack is computed afresh (lazily, the first time its cluster is drawn in the
round).  A drawn example first tries its center's current perturbation, transplanted as
``clamp(x + (x'_center - x_center))``; only if the model still classifies that correctly is the
example attacked afresh.  Everything here runs on the training device.

D lives on disk as uint8 (see :mod:`geoaudit.train._store`); a killed build resumes at the
start of its unfinished round.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._io import atomic_save
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_interval, check_options
from geoaudit.train._data import load_training_data
from geoaudit.train._kmeans import KMEANS_BACKENDS, cluster_by_label
from geoaudit.models._zoo import ARCHITECTURES
from geoaudit.train._sample import load_state, make_model, make_optimizer, weighted_step
from geoaudit.train._store import META, WeightedDataset

log = logging.getLogger(__name__)

STATE = ".algorithm2_state.pt"
THETA = "theta.pt"


def describe_attack(attack) -> dict:
    """A JSON-safe description of an attack object (its class and hyperparameters)."""
    if attack is None:
        return None
    params = {}
    getter = getattr(attack, "_params", None)
    raw = getter() if callable(getter) else {k: v for k, v in vars(attack).items() if not k.startswith("_")}
    for k, v in raw.items():
        params[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
    out = {"class": type(attack).__name__, "params": params}
    if type(attack).__repr__ is not object.__repr__:  # the default repr holds a memory address
        out["repr"] = repr(attack)
    return out


def as_seed(random_state, *, caller, name="random_state") -> int:
    """An int seed from ``random_state`` (int, numpy or torch Generator, or None for a fresh one).

    Algorithm 2 records its seed in D's settings, so a Generator or None is turned into the int
    drawn from it, which is what a resumed build must be given again.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, torch.Generator):
        return int(torch.randint(0, 2**31 - 1, (1,), generator=random_state))
    return check_interval(name, random_state, 0, None, caller=caller, integer=True)


def take_deprecated(new_name, new_value, old_name, old_value, *, caller, default):
    """``new_value``, or ``old_value`` with a DeprecationWarning when only the old name was given."""
    if old_value is None:
        return new_value
    warnings.warn(f"The {old_name!r} parameter of {caller} is deprecated; use {new_name!r}.",
                  DeprecationWarning, stacklevel=3)
    if new_value is not default and new_value != old_value:
        raise InputError(f"Give {new_name!r} or its deprecated name {old_name!r} to {caller}, not both.")
    return old_value


def _adv_images(result):
    return result.images if hasattr(result, "images") else result


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255.0).round_().to(torch.uint8)


def _algorithm2_line(st) -> str:
    """One line on Algorithm 2's work and quality from its statistics."""
    q = st.get("mean_one_minus_ssim")
    return (f"Algorithm 2: {st.get('attacks_computed', 0)} attacks, {st.get('gradient_steps', 0)} gradient steps, "
            f"reuse {'on' if st.get('reuse_used', st.get('reuse')) else 'off'} (reuse rate {st.get('reuse_rate', 0):.1%}), "
            f"success {st.get('success_rate', 0):.1%}"
            + (f", mean 1-SSIM {q:.4f}" if q is not None else "")
            + f", {st.get('wall_seconds', 0):.1f} s")


@dataclass(frozen=True)
class DROResult(Result):
    """What :func:`build_adversarial_dataset` returns.

    Attributes
    ----------
    folder : Path
        The weighted dataset D on disk (open it with ``WeightedDataset.open``).
    size : int
        M, the number of examples in D: N (1 + T1).
    stats : Mapping
        Work (``attacks_computed``, ``gradient_steps``, ``fresh_attacks``, ``center_refreshes``,
        ``reused``, ``reuse_rate``, per-round lists), quality (``success_rate``,
        ``mean_one_minus_ssim``), times (``attack_seconds``, ``transplant_seconds``,
        ``wall_seconds``), the reuse decision and the clustering summary (read-only).
    settings : Mapping
        The settings D was built with (read-only).
    """

    folder: Path
    size: int
    stats: Mapping = field(default_factory=dict)
    settings: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "stats", frozen_mapping(self.stats))
        object.__setattr__(self, "settings", frozen_mapping(self.settings))

    def summary(self) -> str:
        """D's size and folder, and Algorithm 2's work and quality."""
        return f"D: {self.size} examples in {self.folder}\n" + _algorithm2_line(self.stats)


class CenterReuse:
    """The appendix-D reuse state on the training device: each cluster center's clean image and
    its current adversarial image (uint8), and the round its attack was last computed in.

    Parameters
    ----------
    clustering : Clustering
    clean_u8 : torch.Tensor
        uint8 ``(N, C, H, W)`` clean images (the clustered examples).
    labels : torch.Tensor
        int64 ``(N,)``.
    device : torch.device
    """

    def __init__(self, clustering, clean_u8, labels, device):
        centers = clustering.centers.cpu()
        self.assignment = clustering.assignment.to(device)
        self.center_clean = clean_u8[centers].to(device)
        self.center_labels = labels[centers].to(device)
        self.center_adv = self.center_clean.clone()
        self.center_round = torch.zeros(clustering.n_clusters, dtype=torch.long, device=device)

    def __call__(self, model, x_u8, y, source, round_k, fresh):
        """Adversarial images for the clean-example indices ``source`` of the batch ``x_u8``.

        ``fresh(images, labels) -> uint8 images`` computes attacks.  Returns
        ``(adv_u8, reused, center_refreshes)``: ``reused`` is the bool mask of rows whose
        transplanted center perturbation fooled ``model`` (the others were attacked afresh).
        """
        cl = self.assignment[source]
        stale = torch.unique(cl[self.center_round[cl] < round_k])
        if stale.numel():  # a center's attack is recomputed once per round
            self.center_adv[stale] = fresh(self.center_clean[stale].float().div(255.0), self.center_labels[stale])
            self.center_round[stale] = round_k
        delta = self.center_adv[cl].to(torch.int16) - self.center_clean[cl].to(torch.int16)
        cand = (x_u8.to(torch.int16) + delta).clamp_(0, 255).to(torch.uint8)
        with torch.no_grad():
            ok = model(cand.float().div(255.0)).argmax(1) != y
        redo = (~ok).nonzero().squeeze(1)
        if redo.numel():
            cand[redo] = fresh(x_u8[redo].float().div(255.0), y[redo])
        return cand, ok, int(stale.numel())

    def state(self):
        return {"center_adv": self.center_adv.cpu(), "center_round": self.center_round.cpu()}

    def load_state(self, state):
        self.center_adv = state["center_adv"].to(self.center_adv.device)
        self.center_round = state["center_round"].to(self.center_round.device)


def _new_stats(rounds):
    return {"rounds_done": 0, "attacks_computed": 0, "fresh_attacks": 0, "center_refreshes": 0, "reused": 0,
            "transplant_tries": 0, "appended": 0, "successes": 0, "attack_seconds": 0.0,
            "transplant_seconds": 0.0, "sgd_seconds": 0.0, "wall_seconds": 0.0,
            "attacks_per_round": [], "success_rate_per_round": [], "loss_per_round": []}


def _finish_stats(stats, reuse):
    s = dict(stats)
    s["reuse_rate"] = s["reused"] / s["appended"] if s["appended"] else 0.0
    s["success_rate"] = s["successes"] / s["appended"] if s["appended"] else 0.0
    per_fresh = s["attack_seconds"] / s["attacks_computed"] if s["attacks_computed"] else 0.0
    # A reused perturbation replaces one fresh attack; the transplant checks are its price.
    s["time_saved_seconds"] = s["reused"] * per_fresh - s["transplant_seconds"] if reuse else 0.0
    s["seconds_per_attack"] = per_fresh
    return s


def build_adversarial_dataset(data, *, attack, out_dir, arch="small_cnn", rounds=3, batch_size=64, lr=0.05,
                              momentum=0.9, weight_decay=5e-4, weight_loss=True, random_state=0, reuse=True,
                              cluster_size=5, kmeans="auto", device="cpu", pretrained=False,
                              normalization="data", settings_extra=None, seed=None) -> DROResult:
    """Algorithm 2 (with the appendix-D reuse): the weighted adversarial dataset D.

    Parameters
    ----------
    data : dataset folder, datasets object or TrainingData
        The clean training examples (N of them).
    attack : callable
        Any ``geoaudit.attacks`` attack (``attack(model, images, labels) -> AttackResult``).
    out_dir : str or Path
        Folder of D.  If it already holds a finished D built with the same settings, that D is
        returned; an unfinished one resumes; one built with other settings is refused.
    arch : str
        Architecture of the model theta trained alongside (saved as ``theta.pt``).
    rounds : int
        T1.  D ends with N (1 + T1) examples.
    batch_size, lr, momentum, weight_decay, weight_loss : SGD (see the module docstring).
    random_state : int, numpy.random.Generator, torch.Generator or None
        Seeds theta's initial weights, the draws and the clustering (a Generator or None is
        turned into an int seed, recorded in D's settings).
    reuse : bool
        Use the cluster-center attack reuse of appendix D.
    cluster_size : int
        About this many images per k-means cluster.
    kmeans : {"auto", "sklearn", "torch"}
        Clustering backend ("auto": torch on a GPU, scikit-learn on the CPU).
    device : str or torch.device
    pretrained : bool
    normalization : "data", None or dict
        "data": the clean data's per-channel mean and std, inside the model.
    settings_extra : dict, optional
        More entries for D's recorded settings.
    seed : int, optional
        Deprecated name of ``random_state``.

    Returns
    -------
    DROResult
    """
    caller = "build_adversarial_dataset"
    check_options("arch", arch, ARCHITECTURES, caller=caller)
    rounds = check_interval("rounds", rounds, 1, None, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    lr = check_interval("lr", lr, 0, None, caller=caller, closed="neither")
    random_state = take_deprecated("random_state", random_state, "seed", seed, caller=caller, default=0)
    seed = as_seed(random_state, caller=caller)
    cluster_size = check_interval("cluster_size", cluster_size, 1, None, caller=caller, integer=True)
    check_options("kmeans", kmeans, KMEANS_BACKENDS, caller=caller)
    if attack is None or not callable(attack):
        raise InputError(f"The 'attack' parameter of {caller} must be a geoaudit.attacks attack "
                         f"(callable as attack(model, images, labels)). Got {attack!r} instead.")
    device = torch.device(device)
    data = load_training_data(data)
    if normalization == "data":
        mean, std = data.channel_stats()
        normalization = {"mean": mean, "std": std}
    settings = {"algorithm": 2, "arch": arch, "rounds": rounds, "batch_size": batch_size, "lr": lr,
                "momentum": float(momentum), "weight_decay": float(weight_decay), "weight_loss": bool(weight_loss),
                "seed": seed, "reuse": bool(reuse), "cluster_size": cluster_size, "kmeans": kmeans,
                "pretrained": bool(pretrained), "normalization": normalization, "attack": describe_attack(attack),
                "data_fingerprint": data.fingerprint, **(settings_extra or {})}
    out_dir = Path(out_dir)
    n = data.n
    state_path = out_dir / STATE
    state = None
    if (out_dir / META).exists():
        d = WeightedDataset.open(out_dir, writable=True)
        if d.meta.get("settings") != settings:
            raise InputError(
                f"{str(out_dir)!r} holds a weighted dataset built with other settings; use another folder "
                "or delete it to rebuild.")
        if d.complete:
            return DROResult(out_dir, d.size, d.meta.get("stats", {}), settings)
        state = load_state(state_path)
    if state is None:
        d = WeightedDataset.create(out_dir, data.images, data.labels, capacity=n * (rounds + 1),
                                   meta={"kind": "algorithm2", "class_names": list(data.class_names),
                                         "data": data.to_dict(), "settings": settings})
    wall0 = time.perf_counter()
    model, source, normalization = make_model(arch, seed=seed, num_classes=len(data.class_names),
                                              in_channels=data.channels, image_size=data.image_size,
                                              pretrained=pretrained, normalization=normalization)
    model.to(device)
    opt = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng([seed, 2])
    stats = _new_stats(rounds)

    clustering = None
    if reuse:
        t0 = time.perf_counter()
        # k-means sees the images on the training device, so "auto" picks torch on a GPU.
        clustering = cluster_by_label(data.images.to(device), data.labels.to(device), cluster_size=cluster_size,
                                      backend=kmeans, random_state=seed)
        stats["kmeans"] = dict(clustering.to_dict(), seconds=time.perf_counter() - t0)
        reuser = CenterReuse(clustering, data.images, data.labels, device)
    start_round = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        stats = state["stats"]
        start_round = int(state["round"])
        if reuse:
            reuser.load_state(state)
        d.truncate(n * (start_round + 1))
        log.info("Resuming Algorithm 2 at round %d/%d", start_round + 1, rounds)

    def fresh(x, y):
        t = time.perf_counter()
        adv = _adv_images(attack(model, x, y))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stats["attack_seconds"] += time.perf_counter() - t
        stats["attacks_computed"] += int(x.shape[0])
        return to_u8(adv.to(device))

    for k in progress(range(start_round + 1, rounds + 1), desc="Algorithm 2 rounds", unit="round",
                      initial=start_round, total=rounds):
        t_round = time.perf_counter()
        attacks_before, succ_before, loss_sum = stats["attacks_computed"], stats["successes"], 0.0
        mean_w = d.mean_sampled_weight()
        draws = d.draw(n, rng)  # line 3, from D as it is now
        for lo in progress(range(0, n, batch_size), desc=f"round {k}", unit="batch", total=-(-n // batch_size)):
            idx = draws[lo:lo + batch_size]
            x, y, w = d.batch(idx, device)
            t0 = time.perf_counter()
            loss, _ = weighted_step(model, opt, x, y, w, mean_weight=mean_w, weight_loss=weight_loss)  # line 5
            stats["sgd_seconds"] += time.perf_counter() - t0
            loss_sum += loss * len(idx)
            model.eval()
            x_u8 = to_u8(x)
            if reuse:  # appendix D
                src = torch.from_numpy(d.source[idx]).to(device)
                t0 = time.perf_counter()
                attack_s = stats["attack_seconds"]
                adv_u8, ok, refreshed = reuser(model, x_u8, y, src, k, fresh)
                # transplant bookkeeping = the reuse step's time minus the attacks inside it
                stats["transplant_seconds"] += time.perf_counter() - t0 - (stats["attack_seconds"] - attack_s)
                stats["center_refreshes"] += refreshed
                stats["transplant_tries"] += len(idx)
                stats["reused"] += int(ok.sum())
                stats["fresh_attacks"] += len(idx) - int(ok.sum())
            else:
                adv_u8 = fresh(x, y)
                stats["fresh_attacks"] += len(idx)
            with torch.no_grad():
                stats["successes"] += int((model(adv_u8.float().div(255.0)).argmax(1) != y).sum())
            positions = np.arange(lo, lo + len(idx)) + 1
            d.append(adv_u8, y.cpu().numpy(), (k - 1) * n + positions, d.source[idx], k)  # line 7
            stats["appended"] += len(idx)
        stats["rounds_done"] = k
        stats["attacks_per_round"].append(stats["attacks_computed"] - attacks_before)
        stats["success_rate_per_round"].append((stats["successes"] - succ_before) / n)
        stats["loss_per_round"].append(loss_sum / n)
        stats["wall_seconds"] += time.perf_counter() - t_round
        d.flush(stats=_finish_stats(stats, reuse))
        round_state = {"round": k, "model": model.state_dict(), "optimizer": opt.state_dict(),
                       "rng": rng.bit_generator.state, "stats": stats}
        if reuse:
            round_state.update(reuser.state())
        atomic_save(state_path, lambda tmp: torch.save(round_state, tmp))
    final = _finish_stats(stats, reuse)
    final["wall_seconds_this_run"] = time.perf_counter() - wall0
    atomic_save(out_dir / THETA, lambda tmp: torch.save(
        {"arch": arch, "weights_source": source, "normalization": normalization,
         "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp))
    d.flush(complete=True, stats=final)
    if state_path.exists():
        state_path.unlink()
    return DROResult(out_dir, d.size, final, settings)
