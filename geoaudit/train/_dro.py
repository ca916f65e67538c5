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

import json
import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geoaudit._errors import InputError
from geoaudit._io import atomic_save, to_json
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_interval, check_options
from geoaudit.attacks._costs import SSIMCost
from geoaudit.models._zoo import ARCHITECTURES
from geoaudit.train._data import load_training_data
from geoaudit.train._kmeans import KMEANS_BACKENDS, cluster_by_label
from geoaudit.train._sample import load_state, make_model, make_optimizer, weighted_step
from geoaudit.train._store import META, STORAGES, WeightedDataset, decode, encode

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
    its current adversarial image (in D's storage dtype), and the round its attack was last
    computed in.

    Parameters
    ----------
    clustering : Clustering
    clean : torch.Tensor
        ``(N, C, H, W)`` clean images of the clustered examples, uint8 or float16 (D's storage).
    labels : torch.Tensor
        int64 ``(N,)``.
    device : torch.device
    """

    def __init__(self, clustering, clean, labels, device):
        centers = clustering.centers.cpu()
        self.assignment = clustering.assignment.to(device)
        self.center_clean = clean[centers].to(device)
        self.center_labels = labels[centers].to(device)
        self.center_adv = self.center_clean.clone()
        self.center_round = torch.zeros(clustering.n_clusters, dtype=torch.long, device=device)

    def refresh(self, source, round_k, fresh) -> int:
        """Attack the centers of ``source``'s clusters not yet attacked in round ``round_k``.

        Returns how many centers were attacked."""
        cl = self.assignment[source]
        stale = torch.unique(cl[self.center_round[cl] < round_k])
        if stale.numel():  # a center's attack is recomputed once per round
            self.center_adv[stale] = fresh(decode(self.center_clean[stale]), self.center_labels[stale])
            self.center_round[stale] = round_k
        return int(stale.numel())

    def transplant(self, model, x_enc, y, source):
        """Each row plus its center's current perturbation, and whether that fools ``model``."""
        cl = self.assignment[source]
        delta = decode(self.center_adv[cl]) - decode(self.center_clean[cl])
        cand = encode(decode(x_enc) + delta, storage_of(x_enc))
        with torch.no_grad():
            ok = model(decode(cand)).argmax(1) != y
        return cand, ok

    def __call__(self, model, x_enc, y, source, round_k, fresh):
        """Adversarial images for the clean-example indices ``source`` of the batch ``x_enc``.

        ``fresh(images, labels) -> encoded images`` computes attacks.  Returns
        ``(adv, reused, center_refreshes)``: ``reused`` is the bool mask of rows whose
        transplanted center perturbation fooled ``model`` (the others were attacked afresh).
        """
        refreshed = self.refresh(source, round_k, fresh)
        cand, ok = self.transplant(model, x_enc, y, source)
        redo = (~ok).nonzero().squeeze(1)
        if redo.numel():
            cand[redo] = fresh(decode(x_enc[redo]), y[redo])
        return cand, ok, refreshed

    def state(self):
        return {"center_adv": self.center_adv.cpu(), "center_round": self.center_round.cpu()}

    def load_state(self, state):
        self.center_adv = state["center_adv"].to(self.center_adv.device, self.center_adv.dtype)
        self.center_round = state["center_round"].to(self.center_round.device)


def storage_of(t: torch.Tensor) -> str:
    return "uint8" if t.dtype == torch.uint8 else "float16"


#: Share of round 1's draws that the "auto" reuse attacks both ways before it decides.
PILOT_FRACTION = 0.25
#: A forward pass costs about a third of a forward + backward (the usual FLOP count).
FORWARD_COST = 1.0 / 3.0
REUSE_OPTIONS = (True, False, "auto")


def _new_stats(rounds):
    return {"rounds_done": 0, "attacks_computed": 0, "fresh_attacks": 0, "center_refreshes": 0, "reused": 0,
            "gradient_steps": 0, "center_steps": 0, "fresh_steps": 0, "check_forwards": 0, "sgd_rows": 0,
            "transplant_tries": 0, "appended": 0, "successes": 0, "unchanged": 0,
            "one_minus_ssim_sum": 0.0, "one_minus_ssim_n": 0,
            "attack_seconds": 0.0, "transplant_seconds": 0.0, "sgd_seconds": 0.0, "wall_seconds": 0.0,
            "attacks_per_round": [], "steps_per_round": [], "success_rate_per_round": [], "loss_per_round": [],
            "reuse_used": None, "reuse_decision": None}


def _finish_stats(stats, reuse):
    s = dict(stats)
    s["reuse_rate"] = s["reused"] / s["appended"] if s["appended"] else 0.0
    s["success_rate"] = s["successes"] / s["appended"] if s["appended"] else 0.0
    s["unchanged_rate"] = s["unchanged"] / s["appended"] if s["appended"] else 0.0
    s["mean_one_minus_ssim"] = (s["one_minus_ssim_sum"] / s["one_minus_ssim_n"]) if s["one_minus_ssim_n"] else None
    per_fresh = s["attack_seconds"] / s["attacks_computed"] if s["attacks_computed"] else 0.0
    s["seconds_per_attack"] = per_fresh
    s["seconds_per_gradient_step"] = s["attack_seconds"] / s["gradient_steps"] if s["gradient_steps"] else 0.0
    # Work in gradient-step units: the attacks' steps plus the transplant checks' forward passes.
    s["work_steps"] = s["gradient_steps"] + FORWARD_COST * s["check_forwards"]
    # A rough figure: a reused perturbation stands for one fresh attack of average cost.
    s["time_saved_seconds"] = s["reused"] * per_fresh - s["transplant_seconds"] if s["reused"] else 0.0
    return s


def _expected_clusters_drawn(assignment, n_draws):
    """Expected distinct clusters among ``n_draws`` uniform draws of the clustered examples."""
    sizes = torch.bincount(assignment.cpu()).double()
    n = float(sizes.sum())
    return float((1.0 - (1.0 - sizes / n) ** n_draws).sum())


def _decide_reuse(pilot, n, rounds, assignment, stats, kmeans_seconds):
    """The "auto" decision from the pilot: projected gradient steps per round with and without reuse.

    Without reuse every row costs its own attack; with it, the centers drawn in a round are
    attacked, rows whose transplant fails are attacked afresh and every row pays a forward
    check.  The choice depends on step counts only (deterministic, so a resumed build decides
    as the first did); the k-means time is reported next to the projected saving.
    """
    rows = max(pilot["rows"], 1)
    steps_off = n * pilot["fresh_steps"] / rows
    per_center = pilot["center_steps"] / max(pilot["centers"], 1)
    centers = _expected_clusters_drawn(assignment, n)
    steps_on = centers * per_center + n * pilot["fail_steps"] / rows + n * FORWARD_COST
    use = steps_on < steps_off
    sec_per_step = stats["attack_seconds"] / stats["gradient_steps"] if stats["gradient_steps"] else 0.0
    remaining_rounds = rounds - pilot["rows"] / n
    saved = (steps_off - steps_on) * remaining_rounds
    q = pilot
    return {
        "use_reuse": bool(use), "pilot_rows": pilot["rows"], "pilot_transfer_rate": pilot["transferred"] / rows,
        "pilot_mean_fresh_steps": pilot["fresh_steps"] / rows, "pilot_mean_center_steps": per_center,
        "projected_steps_per_round_without_reuse": steps_off, "projected_steps_per_round_with_reuse": steps_on,
        "projected_step_ratio_without_over_with": steps_off / steps_on if steps_on else None,
        "projected_steps_saved": saved, "projected_seconds_saved": saved * sec_per_step,
        "kmeans_seconds": kmeans_seconds,
        "pilot_one_minus_ssim_transplanted": (q["ssim_transplant"] / q["ssim_n"]) if q["ssim_n"] else None,
        "pilot_one_minus_ssim_fresh_same_rows": (q["ssim_fresh"] / q["ssim_n"]) if q["ssim_n"] else None,
    }


def build_adversarial_dataset(data, *, attack, out_dir, arch="small_cnn", rounds=3, batch_size=64, lr=0.05,
                              momentum=0.9, weight_decay=5e-4, weight_loss=True, random_state=0, reuse="auto",
                              cluster_size=5, kmeans="auto", kmeans_feature_size=16, storage="float16",
                              device="cpu", pretrained=False, normalization="data", settings_extra=None,
                              seed=None) -> DROResult:
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
    reuse : {"auto", True, False}
        The cluster-center attack reuse of appendix D.  "auto" attacks the first quarter of
        round 1's draws both ways (a pilot), projects the gradient steps per round with and
        without reuse, and keeps reuse only if it needs fewer; the decision and its figures are
        in ``stats["reuse_decision"]``.
    cluster_size : int
        About this many images per k-means cluster.
    kmeans : {"auto", "sklearn", "torch"}
        Clustering backend ("auto": torch, on the training device).
    kmeans_feature_size : int or None
        k-means clusters the images average-pooled to this many pixels square (None: full size).
    storage : {"float16", "uint8"}
        How D stores images: float16 keeps perturbations finer than 1/255 (2 bytes a value),
        uint8 rounds them to 1/255 (1 byte a value).  See :mod:`geoaudit.train._store`.
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
    if reuse not in REUSE_OPTIONS or not isinstance(reuse, (bool, str)):
        raise InputError(f"The 'reuse' parameter of {caller} must be one of True, False, 'auto'. Got {reuse!r} instead.")
    check_options("storage", storage, STORAGES, caller=caller)
    if kmeans_feature_size is not None:
        kmeans_feature_size = check_interval("kmeans_feature_size", kmeans_feature_size, 1, None, caller=caller,
                                             integer=True)
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
                "seed": seed, "reuse": reuse, "cluster_size": cluster_size, "kmeans": kmeans,
                "kmeans_feature_size": kmeans_feature_size, "storage": storage,
                "pretrained": bool(pretrained), "normalization": normalization, "attack": describe_attack(attack),
                "data_fingerprint": data.fingerprint, **(settings_extra or {})}
    out_dir = Path(out_dir)
    n = data.n
    state_path = out_dir / STATE
    state = None
    if (out_dir / META).exists():
        d = WeightedDataset.open(out_dir, writable=True)
        if d.meta.get("settings") != json.loads(to_json(settings)):
            raise InputError(
                f"{str(out_dir)!r} holds a weighted dataset built with other settings; use another folder "
                "or delete it to rebuild.")
        if d.complete:
            return DROResult(out_dir, d.size, d.meta.get("stats", {}), settings)
        state = load_state(state_path)
    if state is None:
        d = WeightedDataset.create(out_dir, data.images, data.labels, capacity=n * (rounds + 1),
                                   meta={"kind": "algorithm2", "class_names": list(data.class_names),
                                         "data": data.to_dict(), "settings": settings}, storage=storage)
    wall0 = time.perf_counter()
    model, source, normalization = make_model(arch, seed=seed, num_classes=len(data.class_names),
                                              in_channels=data.channels, image_size=data.image_size,
                                              pretrained=pretrained, normalization=normalization)
    model.to(device)
    opt = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng([seed, 2])
    stats = _new_stats(rounds)
    stats["reuse_used"] = reuse if isinstance(reuse, bool) else None

    clustering = None
    kmeans_seconds = 0.0
    if reuse is not False:
        t0 = time.perf_counter()
        clustering = cluster_by_label(data.images, data.labels, cluster_size=cluster_size, backend=kmeans,
                                      random_state=seed, feature_size=kmeans_feature_size, device=device)
        kmeans_seconds = time.perf_counter() - t0
        stats["kmeans"] = dict(clustering.to_dict(), seconds=kmeans_seconds, feature_size=kmeans_feature_size)
        clean_enc = torch.from_numpy(np.asarray(d.images[:n]))  # the clean rows, as D stores them
        reuser = CenterReuse(clustering, clean_enc, data.labels, device)
    start_round = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        kstats = stats.get("kmeans")
        stats = state["stats"]
        if kstats is not None:
            stats["kmeans"] = kstats
        start_round = int(state["round"])
        if reuse is not False:
            reuser.load_state(state)
        d.truncate(n * (start_round + 1))
        log.info("Resuming Algorithm 2 at round %d/%d", start_round + 1, rounds)

    ssim = SSIMCost() if min(d.images.shape[-2:]) >= SSIMCost().min_size else None
    last = {}

    def fresh(x, y):
        t = time.perf_counter()
        res = attack(model, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stats["attack_seconds"] += time.perf_counter() - t
        stats["attacks_computed"] += int(x.shape[0])
        steps = getattr(res, "steps", None)
        steps = steps.to(device) if steps is not None else torch.zeros(x.shape[0], dtype=torch.long, device=device)
        last["steps"], last["n_steps"] = steps, int(steps.sum())  # one read per attack call
        stats["gradient_steps"] += last["n_steps"]
        return encode(_adv_images(res).to(device), storage)

    def one_minus_ssim(a, b):
        with torch.no_grad():
            return ssim.value(a, b) if ssim is not None else None  # fused path: no range-check reads

    pilot = None
    for k in progress(range(start_round + 1, rounds + 1), desc="Algorithm 2 rounds", unit="round",
                      initial=start_round, total=rounds):
        t_round = time.perf_counter()
        attacks_before, steps_before = stats["attacks_computed"], stats["gradient_steps"]
        succ_before = stats["successes"]
        # per-round sums kept on the device, read once at the round's end (no sync per batch)
        acc = torch.zeros(4, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
        if reuse == "auto" and k == 1:
            stats["reuse_used"], stats["reuse_decision"] = None, None
            pilot = {"rows": 0, "fresh_steps": 0, "fail_steps": 0, "center_steps": 0, "centers": 0,
                     "transferred": 0, "ssim_transplant": 0.0, "ssim_fresh": 0.0, "ssim_n": 0}
        pilot_rows = max(batch_size, int(np.ceil(PILOT_FRACTION * n)))
        mean_w = d.mean_sampled_weight()
        draws = d.draw(n, rng)  # line 3, from D as it is now
        for lo in progress(range(0, n, batch_size), desc=f"round {k}", unit="batch", total=-(-n // batch_size)):
            idx = draws[lo:lo + batch_size]
            x, y, w = d.batch(idx, device)
            t0 = time.perf_counter()
            loss, _ = weighted_step(model, opt, x, y, w, mean_weight=mean_w, weight_loss=weight_loss)  # line 5
            stats["sgd_seconds"] += time.perf_counter() - t0
            stats["sgd_rows"] += len(idx)
            acc[0].add_(loss, alpha=len(idx))
            model.eval()
            x_enc = encode(x, storage)
            src = torch.from_numpy(d.source[idx]).to(device)
            if stats["reuse_used"] is None:  # the "auto" pilot: attack every row, and price the reuse
                adv = fresh(x, y)
                row_steps, n_row = last["steps"], last["n_steps"]
                stats["fresh_attacks"] += len(idx)
                stats["fresh_steps"] += n_row
                before = stats["gradient_steps"]
                refreshed = reuser.refresh(src, k, fresh)
                cand, ok = reuser.transplant(model, x_enc, y, src)
                stats["center_refreshes"] += refreshed
                stats["center_steps"] += stats["gradient_steps"] - before
                stats["check_forwards"] += len(idx)
                pilot["rows"] += len(idx)
                pilot["fresh_steps"] += n_row
                pilot["fail_steps"] += int(row_steps[~ok].sum())
                pilot["center_steps"] += stats["gradient_steps"] - before
                pilot["centers"] += refreshed
                pilot["transferred"] += int(ok.sum())
                if ssim is not None and bool(ok.any()):
                    pilot["ssim_transplant"] += float(one_minus_ssim(decode(cand[ok]), x[ok]).sum())
                    pilot["ssim_fresh"] += float(one_minus_ssim(decode(adv[ok]), x[ok]).sum())
                    pilot["ssim_n"] += int(ok.sum())
                if pilot["rows"] >= pilot_rows or lo + batch_size >= n:
                    decision = _decide_reuse(pilot, n, rounds, clustering.assignment, stats, kmeans_seconds)
                    stats["reuse_decision"] = decision
                    stats["reuse_used"] = decision["use_reuse"]
                    log.info("Attack reuse %s: projected %.0f gradient steps per round with it, %.0f without",
                             "on" if decision["use_reuse"] else "off",
                             decision["projected_steps_per_round_with_reuse"],
                             decision["projected_steps_per_round_without_reuse"])
            elif stats["reuse_used"]:  # appendix D
                t0 = time.perf_counter()
                attack_s = stats["attack_seconds"]
                before_steps = stats["gradient_steps"]
                refreshed = reuser.refresh(src, k, fresh)
                stats["center_steps"] += stats["gradient_steps"] - before_steps
                adv, ok = reuser.transplant(model, x_enc, y, src)
                redo = (~ok).nonzero().squeeze(1)
                if redo.numel():
                    adv[redo] = fresh(x[redo], y[redo])
                    stats["fresh_steps"] += last["n_steps"]
                # transplant bookkeeping = the reuse step's time minus the attacks inside it
                stats["transplant_seconds"] += time.perf_counter() - t0 - (stats["attack_seconds"] - attack_s)
                stats["center_refreshes"] += refreshed
                stats["transplant_tries"] += len(idx)
                stats["check_forwards"] += len(idx)
                stats["reused"] += int(ok.sum())
                stats["fresh_attacks"] += len(idx) - int(ok.sum())
            else:
                adv = fresh(x, y)
                stats["fresh_attacks"] += len(idx)
                stats["fresh_steps"] += last["n_steps"]
            adv_f = decode(adv)
            with torch.no_grad():
                acc[1].add_((model(adv_f).argmax(1) != y).sum())
            acc[2].add_((adv == x_enc).flatten(1).all(1).sum())
            if ssim is not None:
                acc[3].add_(one_minus_ssim(adv_f, decode(x_enc)).sum())
                stats["one_minus_ssim_n"] += len(idx)
            positions = np.arange(lo, lo + len(idx)) + 1
            d.append(adv, y.cpu().numpy(), (k - 1) * n + positions, d.source[idx], k)  # line 7
            stats["appended"] += len(idx)
        loss_sum, successes, unchanged, ssim_sum = acc.tolist()
        stats["successes"] += int(successes)
        stats["unchanged"] += int(unchanged)
        stats["one_minus_ssim_sum"] += ssim_sum
        stats["rounds_done"] = k
        stats["attacks_per_round"].append(stats["attacks_computed"] - attacks_before)
        stats["steps_per_round"].append(stats["gradient_steps"] - steps_before)
        stats["success_rate_per_round"].append((stats["successes"] - succ_before) / n)
        stats["loss_per_round"].append(loss_sum / n)
        stats["wall_seconds"] += time.perf_counter() - t_round
        d.flush(stats=_finish_stats(stats, reuse))
        round_state = {"round": k, "model": model.state_dict(), "optimizer": opt.state_dict(),
                       "rng": rng.bit_generator.state, "stats": stats}
        if reuse is not False:
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
