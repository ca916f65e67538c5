"""Model populations: Algorithm 2 once, then Algorithm 3 K times with different seeds.

Output folder::

    OUT/
      manifest.json          method, settings, seeds, per-model status and statistics
      weighted_dataset/      D (uint8 memory map): Algorithm 2's output, or the clean data for "plain"
      model_000/             one checkpoint per model (config.json + weights.pt)
      model_001/ ...
      .state/model_001.pt    resume state of an unfinished model (deleted when it finishes)

Every file is written atomically.  Re-running with the same settings resumes: D is reused
(or its build resumes at its unfinished round), finished models are kept as they are, an
unfinished model resumes at its last finished epoch.  The checkpoint folders are the source of
truth; the manifest is rewritten from them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

import geoaudit.attacks as _attacks
from geoaudit._errors import GeoauditError, InputError
from geoaudit._io import atomic_write_json, to_json
from geoaudit._progress import progress
from geoaudit._results import Result, frozen_mapping
from geoaudit._validation import check_interval, check_options
from geoaudit.models._checkpoint import (
    CONFIG,
    make_config,
    read_config,
    save_checkpoint,
    verify_checkpoint,
)
from geoaudit.models._zoo import ARCHITECTURES
from geoaudit.train._data import load_training_data
from geoaudit.train._init import resolve_initial_weights
from geoaudit.train._dro import (
    _algorithm2_line,
    as_seed,
    build_adversarial_dataset,
    describe_attack,
    take_deprecated,
)
from geoaudit.train._kmeans import KMEANS_BACKENDS
from geoaudit.train._sample import BN_SAMPLES, performance_settings, sample_model
from geoaudit.train._stacked import STACKABLE, check_stack, group_size, stack_mode
from geoaudit.train._store import META, STORAGES, WeightedDataset

log = logging.getLogger(__name__)

METHODS = ("plain", "pgd", "perceptual")
BACKENDS = ("local", "ray")
MANIFEST = "manifest.json"
DATASET_DIR = "weighted_dataset"
STATE_DIR = ".state"
FORMAT = "geoaudit-population"

#: The training preset: attack hyperparameters sized for small images (16-64 px GeoShapes, sklearn
#: digits) on a CPU, where T1 x N attacks must finish in minutes.  Not the attacks' defaults (those
#: live once, on the attack classes, see :func:`geoaudit.attacks.make_attack`); for the paper's
#: 224 px ImageNet setting pass the paper's values explicitly.
DEFAULT_ATTACK_PARAMS = {
    "pgd": {"eps": 0.5, "step_size": 0.1, "steps": 10, "norm": "l2"},
    "perceptual": {"cost": "ssim", "lam": 1.0, "step_size": 0.1, "steps": 20, "confidence": 0.0},
}


def make_attack(augment, **params):
    """The attack of a training method, built from the training preset.

    Parameters
    ----------
    augment : {"pgd", "perceptual"}
        The training method; its attack is ``geoaudit.attacks.make_attack(augment, ...)``.
    **params
        Hyperparameters over :data:`DEFAULT_ATTACK_PARAMS` (``None`` keeps the preset); any
        parameter the attack class accepts may be given.

    Returns
    -------
    Attack
        ``PGD`` for "pgd", ``PerceptualDRO`` for "perceptual".

    Raises
    ------
    InputError
        For another ``augment`` or a parameter the attack does not accept.
    """
    check_options("augment", augment, ("pgd", "perceptual"), caller="make_attack")
    merged = dict(DEFAULT_ATTACK_PARAMS[augment])
    merged.update({k: v for k, v in params.items() if v is not None})
    return _attacks.make_attack(augment, **merged)


@dataclass(frozen=True)
class PopulationResult(Result):
    """What :func:`train_population` returns.

    Attributes
    ----------
    out_dir : Path
    method : str
        "plain", "pgd" or "perceptual".
    checkpoints : tuple of Path
        The finished checkpoint folders, in model order.
    seeds : tuple of int
        The members' seeds (a member's identity: ``model_003`` of a default population has seed 3).
    manifest : Mapping
        The content of ``manifest.json`` (read-only).
    """

    out_dir: Path
    method: str
    checkpoints: tuple = ()
    seeds: tuple = ()
    manifest: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "checkpoints", tuple(Path(p) for p in self.checkpoints))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "manifest", frozen_mapping(self.manifest))

    def summary(self) -> str:
        """Method, how many members are done, D's size and Algorithm 2's work, one line each."""
        m = self.manifest
        models = m.get("models", ())
        done = sum(1 for e in models if e.get("status") == "done")
        lines = [f"{self.method} population in {self.out_dir}: {done}/{len(models)} models done "
                 f"(seeds {', '.join(map(str, self.seeds[:5]))}{', ...' if len(self.seeds) > 5 else ''})"]
        wd = m.get("weighted_dataset") or {}
        if wd:
            lines.append(f"D: {wd.get('size')} examples, {wd.get('bytes', 0) / 1e6:.1f} MB "
                         f"({wd.get('storage', 'uint8')})")
        a2 = wd.get("algorithm2") or {}
        if a2:
            lines.append(_algorithm2_line(a2))
        return "\n".join(lines)


def _hash(obj) -> str:
    return hashlib.sha256(to_json(obj, indent=None).encode()).hexdigest()[:16]


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def train_member(spec: dict) -> dict:
    """Train one population member (Algorithm 3) and write its checkpoint atomically.

    ``spec`` is JSON-like so the same function runs in this process or as a Ray task.
    Resumes from ``.state/<name>.pt`` when present.  Returns the model's manifest entry.
    """
    out = Path(spec["out_dir"])
    st = spec["settings"]
    name, seed = spec["name"], int(spec["seed"])
    d = WeightedDataset.open(out / DATASET_DIR)
    state_dir = out / STATE_DIR
    state_dir.mkdir(exist_ok=True)
    state_path = state_dir / f"{name}.pt"
    started = _now()
    model, info = sample_model(
        d, arch=st["arch"], class_names=spec["class_names"], seed=seed, epochs=st["epochs"],
        batch_size=st["batch_size"], lr=st["lr"], momentum=st["momentum"], weight_decay=st["weight_decay"],
        weight_loss=st["weight_loss"], samples_per_epoch=st["samples_per_epoch"], normalization=st["normalization"],
        pretrained=st["pretrained"], device=spec["device"], state_path=state_path,
        on_epoch_end=spec.get("on_epoch_end"), desc=name, bn_samples=st.get("bn_samples", 0),
        **spec.get("performance", {}))
    return _save_member(spec, d, model, dict(info, stacked=1), started)


def train_group(specs: list) -> list:
    """Train population members together and write each one's checkpoint atomically, as
    :func:`train_member` does: as one grouped module (:func:`geoaudit.train._stacked.train_stacked`)
    for the stackable architectures, else on CUDA streams (``train_concurrent``).

    ``specs`` are :func:`train_member`'s, alike but for name, index and seed; a spec's
    ``on_epoch_end(epoch, stats)`` is called for its member.  A grouped module saves nothing
    between epochs (an interrupted group starts over); members on streams save their resume
    states as :func:`train_member` does.  Returns the members' manifest entries, in order.
    """
    from geoaudit.train import _stacked

    s0 = specs[0]
    out = Path(s0["out_dir"])
    st = s0["settings"]
    d = WeightedDataset.open(out / DATASET_DIR)
    started = _now()
    names = [s["name"] for s in specs]

    def epoch_end(k, epoch, stats):
        cb = specs[k].get("on_epoch_end")
        if cb is not None:
            cb(epoch, stats)

    kw = {}
    if _stacked.stack_mode(st["arch"]) == "grouped":
        train = _stacked.train_stacked
    else:  # a resume state per member and epoch, as one at a time
        train = _stacked.train_concurrent
        (out / STATE_DIR).mkdir(exist_ok=True)
        kw["state_paths"] = [out / STATE_DIR / f"{n}.pt" for n in names]
    trained = train(
        d, arch=st["arch"], class_names=s0["class_names"], seeds=[int(s["seed"]) for s in specs], epochs=st["epochs"],
        batch_size=st["batch_size"], lr=st["lr"], momentum=st["momentum"], weight_decay=st["weight_decay"],
        weight_loss=st["weight_loss"], samples_per_epoch=st["samples_per_epoch"], normalization=st["normalization"],
        pretrained=st["pretrained"], device=s0["device"], on_epoch_end=epoch_end,
        desc=f"{names[0]}..{names[-1]} together", bn_samples=st.get("bn_samples", 0), **kw,
        **s0.get("performance", {}))
    return [_save_member(spec, d, model, info, started) for spec, (model, info) in zip(specs, trained)]


def _save_member(spec, d, model, info, started) -> dict:
    """Write a trained member's checkpoint (config from ``spec`` and ``info``); its manifest entry."""
    out = Path(spec["out_dir"])
    st = spec["settings"]
    name, seed = spec["name"], int(spec["seed"])
    hist = info["history"]
    timing = {"train_seconds": info["train_seconds"], "started": started, "finished": _now(),
              "resumed_from_epoch": info["resumed_from_epoch"], "device": str(spec["device"])}
    if "group_seconds" in info:
        timing["group_seconds"] = info["group_seconds"]
    training = {
        "method": st["method"], "algorithm": 3, "seed": seed, "epochs": st["epochs"],
        "batch_size": st["batch_size"], "lr": st["lr"], "momentum": st["momentum"],
        "weight_decay": st["weight_decay"], "weight_loss": st["weight_loss"],
        "samples_per_epoch": st["samples_per_epoch"] or d.size, "optimizer": "SGD",
        "attack": st["attack"], "dro": st["dro"], "init": st["pretrained"] or None,
        "data": spec["data"], "weighted_dataset": {"size": d.size, "bytes": d.nbytes},
        "history": hist, "final_loss": hist[-1]["loss"], "train_accuracy": hist[-1]["train_accuracy"],
        "timing": timing,
        "performance": info["performance"],
        "bn_samples": int(info.get("bn_samples", 0)),
        # members trained together (1: alone); a grouped member equals its lone twin up to float rounding
        "stacked": int(info.get("stacked", 1)),
        "stack_mode": info.get("stack_mode", "alone"),
        "population": {"name": name, "index": spec["index"], "settings_hash": spec["settings_hash"]},
    }
    cfg = make_config(arch=st["arch"], class_names=spec["class_names"], in_channels=st["channels"],
                      image_size=st["image_size"], normalization=info["normalization"],
                      weights_source=info["weights_source"], training=training)
    save_checkpoint(out / name, model, cfg)
    state_path = out / STATE_DIR / f"{name}.pt"
    if state_path.exists():
        state_path.unlink()
    return {"name": name, "index": spec["index"], "seed": seed, "status": "done",
            "train_seconds": info["train_seconds"], "final_loss": training["final_loss"],
            "train_accuracy": training["train_accuracy"], "resumed_from_epoch": info["resumed_from_epoch"],
            "weights_source": info["weights_source"]}


def _check_existing(out: Path, name: str, seed: int, settings_hash: str, arch: str):
    """The manifest entry of a finished checkpoint folder, or None if there is none yet."""
    folder = out / name
    if not folder.exists():
        return None
    cfg = read_config(folder)  # clear InputError when corrupt
    if cfg["arch"] != arch:
        raise InputError(f"Checkpoint {str(folder)!r} holds a {cfg['arch']!r} model, but this population trains "
                         f"{arch!r}; use another output folder.")
    tr = cfg.get("training", {})
    pop = tr.get("population", {})
    if pop.get("settings_hash") != settings_hash or tr.get("seed") != seed:
        raise InputError(f"Checkpoint {str(folder)!r} was trained with other settings or seed "
                         f"(seed {tr.get('seed')!r}, expected {seed}); use another output folder.")
    problem = verify_checkpoint(folder, cfg)
    if problem is not None:  # a finished model whose weights were damaged later: trained again
        return {"name": name, "seed": seed, "status": "damaged", "problem": problem}
    return {"name": name, "index": pop.get("index"), "seed": seed, "status": "done",
            "train_seconds": tr.get("timing", {}).get("train_seconds"), "final_loss": tr.get("final_loss"),
            "train_accuracy": tr.get("train_accuracy"),
            "resumed_from_epoch": tr.get("timing", {}).get("resumed_from_epoch"),
            "weights_source": cfg.get("weights_source")}


def _settings_diff(old: dict, new: dict):
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def train_population(data, *, augment="plain", n_models=50, epochs=10, arch="small_cnn", seeds=None, out_dir,
                     backend="local", attack=None, device="cpu", split="train", image_size=None, channels=3,
                     batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, weight_loss=True,
                     samples_per_epoch=None, dro_rounds=3, dro_random_state=0, reuse="auto", cluster_size=5,
                     kmeans="auto", storage="float16", pretrained=False, ray_address=None, ray_gpus_per_model=0.0,
                     on_epoch_end=None, on_model_end=None, dro_seed=None, init_from=None, amp="off",
                     channels_last=False, compile=False, stack=False, bn_samples=BN_SAMPLES) -> PopulationResult:
    """Train a population of K models alike but for their seeds.

    ``plain`` runs Algorithm 3 on the clean data with uniform weights.  ``pgd`` and
    ``perceptual`` run Algorithm 2 once (seeded by ``dro_random_state``) to build the weighted adversarial
    dataset D, then Algorithm 3 on D once per seed.  Populations trained with the same seeds
    (default 0..K-1) under different methods are paired.

    Parameters
    ----------
    data : dataset folder, datasets object or TrainingData
        Needs the columns ``image`` and ``label``.
    augment : {"plain", "pgd", "perceptual"}
    n_models : int
        K (the paper: 50).
    epochs : int
        Epochs of Algorithm 3 per model (T2).
    arch : str
        One of :data:`geoaudit.train.ARCHITECTURES`.
    seeds : sequence of int, optional
        One seed per model, the member's identity (its initial weights and draws); default
        ``range(n_models)``.
    out_dir : str or Path
        Output folder (see the module docstring); re-running with the same settings resumes,
        other settings are refused.
    backend : {"local", "ray"}
        "ray": each model is a Ray task (``pip install 'geoaudit[ray]'``); an already
        initialised Ray is used, else ``ray.init(address=ray_address)``.
    attack : geoaudit.attacks attack, optional
        The attack of Algorithm 2; default ``make_attack(augment)``.  Ignored for "plain".
    device : str or torch.device
    split, image_size, channels : which data and at what size (see ``load_training_data``).
    batch_size, lr, momentum, weight_decay, weight_loss, samples_per_epoch :
        SGD of Algorithms 2 and 3 (see ``geoaudit.train._sample``).
    dro_rounds : int
        T1 of Algorithm 2.
    dro_random_state : int, numpy.random.Generator, torch.Generator or None
        Randomness of Algorithm 2 (D is shared by the whole population); recorded as an int.
    reuse, cluster_size, kmeans :
        The appendix-D attack reuse (see :func:`build_adversarial_dataset`); ``reuse="auto"``
        keeps it only where a pilot shows it saves gradient steps.
    storage : {"float16", "uint8"}
        How D stores the attacks (float16 keeps perturbations finer than 1/255); ``plain``
        populations store their clean uint8 images as uint8 (exact).
    pretrained : bool, str or Path
        False: every member draws its initial weights from its seed.  True or a torchvision
        weights name ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2"; ResNets, from torch's cache)
        or a state-dict file: every member starts from those weights (a head of another size
        is drawn per seed).  Weights that cannot be had raise :class:`DependencyError`.
    amp, channels_last, compile
        Switches of Algorithm 3's training step (:func:`geoaudit.train.performance_settings`),
        recorded in each checkpoint's ``training.performance``; they do not change the
        population's identity, so a resumed population may use others.
    stack : False, int or "auto", default False
        Members trained together, local backend.  False: one after another.  An int K: groups
        of K ``small_cnn``, ``lenet5`` or ``mlp7`` members trained at once as one module of
        grouped layers (:mod:`geoaudit.train._stacked`); members of the other (large)
        architectures K at a time on K CUDA streams, on CUDA only (elsewhere one at a time).
        "auto": groups of 10 stackable members on CUDA, else one at a time: on a CPU grouped
        kernels were measured slower than one member after another (0.55-0.79x for 10 small
        CNNs at 24-32 px, batch 64; ``benchmarks/populations_stacked.py``), while on a GPU a
        small member leaves the device idle and a group fills it.  A grouped member's weights
        equal the one-at-a-time member's up to float32 rounding (grouped kernels sum in
        another order; equal to 1e-14 in float64), a gap that SGD amplifies with steps; each
        checkpoint records ``training.stacked`` (K, 1 alone) and ``training.stack_mode``
        ("grouped", "streams" or "alone").  Like the switches above, it does not change the
        population's identity.  Resume: finished members are kept, a member with a resume
        state resumes alone, an interrupted grouped module starts its group over.
    bn_samples : int, default 2048
        After training, each member's BatchNorm running statistics are re-estimated on this
        many draws from D ("precise BN", :func:`geoaudit.train.recalibrate_batchnorm`); 0 keeps
        the statistics as trained (the exponential average of the last batches, which leaves
        some seeds near chance at a constant learning rate).  Part of the population's settings.
    ray_address : str, optional
    ray_gpus_per_model : float
        GPUs reserved per Ray task (0: CPU tasks).
    on_epoch_end : callable, optional
        Local backend: ``on_epoch_end(name, epoch, stats)`` after each saved epoch.
    on_model_end : callable, optional
        ``on_model_end(entry)`` after each finished model (its manifest entry).
    dro_seed : int, optional
        Deprecated name of ``dro_random_state``.
    init_from : str or Path, optional
        One theta0 for every member (the paper's setting): a checkpoint folder of the same
        architecture, classes and image size, or a state-dict file.  Recorded in the settings
        (source, sha256) and in each checkpoint's config; Algorithm 2's model starts from it too.

    Returns
    -------
    PopulationResult
    """
    caller = "train_population"
    augment = check_options("augment", augment, METHODS, caller=caller)
    arch = check_options("arch", arch, ARCHITECTURES, caller=caller)
    backend = check_options("backend", backend, BACKENDS, caller=caller)
    n_models = check_interval("n_models", n_models, 1, None, caller=caller, integer=True)
    epochs = check_interval("epochs", epochs, 1, None, caller=caller, integer=True)
    batch_size = check_interval("batch_size", batch_size, 1, None, caller=caller, integer=True)
    lr = check_interval("lr", lr, 0, None, caller=caller, closed="neither")
    momentum = check_interval("momentum", momentum, 0, 1, caller=caller, closed="left")
    weight_decay = check_interval("weight_decay", weight_decay, 0, None, caller=caller)
    dro_rounds = check_interval("dro_rounds", dro_rounds, 1, None, caller=caller, integer=True)
    dro_random_state = take_deprecated("dro_random_state", dro_random_state, "dro_seed", dro_seed, caller=caller,
                                       default=0)
    dro_seed = as_seed(dro_random_state, caller=caller, name="dro_random_state")
    check_options("kmeans", kmeans, KMEANS_BACKENDS, caller=caller)
    check_options("storage", storage, STORAGES, caller=caller)
    if reuse not in (True, False, "auto") or not isinstance(reuse, (bool, str)):
        raise InputError(f"The 'reuse' parameter of {caller} must be one of True, False, 'auto'. Got {reuse!r} instead.")
    if samples_per_epoch is not None:
        samples_per_epoch = check_interval("samples_per_epoch", samples_per_epoch, 1, None, caller=caller, integer=True)
    bn_samples = check_interval("bn_samples", bn_samples, 0, None, caller=caller, integer=True)
    stack = check_stack(stack, caller=caller)
    if backend == "ray" and stack not in (False, 1, "auto"):
        raise InputError(f"The 'stack' parameter of {caller} applies to backend='local' (each Ray task trains one "
                         f"model). Got stack={stack!r} with backend='ray'.")
    if seeds is None:
        seeds = list(range(n_models))
    else:
        seeds = [check_interval("seeds", s, 0, None, caller=caller, integer=True) for s in seeds]
        if len(seeds) != n_models:
            raise InputError(f"The 'seeds' parameter of {caller} must hold n_models={n_models} seeds. Got {len(seeds)}.")
        if len(set(seeds)) != len(seeds):
            raise InputError(f"The 'seeds' parameter of {caller} must not repeat a seed. Got {seeds!r}.")
    device = torch.device(device)
    group = group_size(stack, arch=arch, device=device) if backend == "local" else 1
    if isinstance(stack, int) and stack is not False and stack > 1 and group == 1:
        log.info("stack=%d: %s members train one at a time on %s (grouped: %s; streams: CUDA only).", stack, arch,
                 device, ", ".join(STACKABLE))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"The output {str(out)!r} is a file, not a folder.")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise InputError(f"The output folder {str(out)!r} is not empty and holds no population manifest; "
                         "use a new folder.")
    if augment != "plain" and attack is None:
        attack = make_attack(augment)
    if augment == "plain":
        attack = None

    data = load_training_data(data, split=split, image_size=image_size, channels=channels)
    mean, std = data.channel_stats()
    normalization = {"mean": mean, "std": std}
    dro = None
    if augment != "plain":
        dro = {"rounds": dro_rounds, "seed": dro_seed, "reuse": reuse, "cluster_size": cluster_size,
               "kmeans": kmeans, "storage": storage}
    settings = {"method": augment, "arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "momentum": momentum, "weight_decay": weight_decay, "weight_loss": bool(weight_loss),
                "samples_per_epoch": samples_per_epoch, "pretrained": bool(pretrained),
                "normalization": normalization, "image_size": data.image_size, "channels": data.channels,
                "data_fingerprint": data.fingerprint, "attack": describe_attack(attack), "dro": dro,
                "bn_samples": bn_samples}
    init = resolve_initial_weights(arch, pretrained=pretrained, init_from=init_from,
                                   num_classes=len(data.class_names), in_channels=data.channels,
                                   image_size=data.image_size, out_dir=out, caller=caller)
    if init is not None:  # the weights' identity (sha256) in the hash, not the folder's path
        settings["pretrained"] = init
    settings_hash = _hash(settings)
    if init is not None:
        settings["pretrained"] = dict(init, file=str((out / init["file"]).resolve()))
    width = max(3, len(str(max(n_models - 1, 0))))
    names = [f"model_{i:0{width}d}" for i in range(n_models)]

    entries = {}
    manifest = None
    if (out / MANIFEST).exists():
        try:
            manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"Corrupt population manifest {str(out / MANIFEST)!r}: {e}") from e
        if manifest.get("format") != FORMAT:
            raise InputError(f"{str(out / MANIFEST)!r} is not a geoaudit population manifest.")
        if manifest.get("settings_hash") != settings_hash:
            diff = _settings_diff(manifest.get("settings", {}), settings)
            raise InputError(
                f"The population in {str(out)!r} was trained with other settings (differing: {', '.join(diff)}); "
                "re-run with the same settings to resume, or use another output folder.")
        for e in manifest.get("models", []):
            entries[e["name"]] = e
        for name, seed in zip(names, seeds):
            if name in entries and entries[name]["seed"] != seed:
                raise InputError(f"{name} in {str(out)!r} has seed {entries[name]['seed']}, not {seed}; "
                                 "resume with the same seeds or use another output folder.")
    for i, (name, seed) in enumerate(zip(names, seeds)):
        entries[name] = {"name": name, "index": i, "seed": seed, "status": "pending"}
    retrained = []
    for name, e in list(entries.items()):
        done = _check_existing(out, name, e["seed"], settings_hash, arch)
        if done is not None and done["status"] == "damaged":
            log.warning("%s: %s; training it again.", name, done["problem"])
            retrained.append({"name": name, "reason": done["problem"]})
            entries[name]["status"] = "pending"
        elif done is not None:
            entries[name] = dict(done, index=e["index"])
        elif (out / STATE_DIR / f"{name}.pt").exists():
            entries[name]["status"] = "partial"

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".model_*"):  # temp folders of checkpoint writes cut short by a kill
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    t_start = time.perf_counter()
    manifest = {
        "format": FORMAT, "format_version": 1, "method": augment, "arch": arch,
        "n_models": len(entries), "seeds": [entries[k]["seed"] for k in sorted(entries)],
        "settings": settings, "settings_hash": settings_hash, "class_names": list(data.class_names),
        "data": data.to_dict(), "backend": backend, "device": str(device),
        "created": (manifest or {}).get("created", _now()), "updated": _now(),
        "weighted_dataset": (manifest or {}).get("weighted_dataset"),
        "models": [entries[k] for k in sorted(entries)],
        "timing": (manifest or {}).get("timing", {}),
        "retrained_damaged": retrained,
        "stack": {"requested": stack, "group_size": group, "mode": stack_mode(arch) if group > 1 else "alone"},
    }

    def write_manifest():
        manifest["models"] = [entries[k] for k in sorted(entries)]
        manifest["updated"] = _now()
        done = [e for e in manifest["models"] if e["status"] == "done"]
        manifest["stats"] = {"done": len(done), "pending": len(manifest["models"]) - len(done),
                             "mean_train_seconds": (sum(e["train_seconds"] or 0 for e in done) / len(done)) if done else None}
        atomic_write_json(out / MANIFEST, manifest)

    write_manifest()

    # D: built once per population, cached on disk.
    t0 = time.perf_counter()
    dfolder = out / DATASET_DIR
    if augment == "plain":
        meta_ok = (dfolder / META).exists() and WeightedDataset.open(dfolder).complete
        if not meta_ok:
            if dfolder.exists():
                shutil.rmtree(dfolder)
            WeightedDataset.create(dfolder, data.images, data.labels, capacity=data.n,
                                   meta={"kind": "clean", "class_names": list(data.class_names),
                                         "data": data.to_dict()}).flush(complete=True)
        dstats = None
    else:
        res = build_adversarial_dataset(
            data, attack=attack, out_dir=dfolder, arch=arch, rounds=dro_rounds, batch_size=batch_size, lr=lr,
            momentum=momentum, weight_decay=weight_decay, weight_loss=weight_loss, random_state=dro_seed, reuse=reuse,
            cluster_size=cluster_size, kmeans=kmeans, storage=storage, device=device, pretrained=settings["pretrained"],
            normalization=normalization)
        dstats = res.stats
    dset = WeightedDataset.open(dfolder)
    manifest["weighted_dataset"] = {"folder": DATASET_DIR, "size": dset.size, "bytes": dset.nbytes,
                                    "storage": dset.storage, "bytes_per_image": dset.bytes_per_image,
                                    "float32_bytes": dset.size * int(dset.images[0].size) * 4,
                                    "algorithm2": dstats}
    manifest["timing"]["dataset_seconds_this_run"] = time.perf_counter() - t0
    write_manifest()
    del dset

    pending = [entries[n_] for n_ in names if entries[n_]["status"] != "done"]
    data_info = data.to_dict()
    common = {"out_dir": str(out), "settings": settings, "settings_hash": settings_hash,
              "class_names": list(data.class_names), "data": data_info,
              "performance": performance_settings(amp, channels_last, compile, caller="train_population")}

    def finished(entry):
        entries[entry["name"]] = entry
        write_manifest()
        if on_model_end is not None:
            on_model_end(entry)

    t1 = time.perf_counter()
    failures = []
    if backend == "local":
        # a member with a resume state resumes alone; the others train in groups of `group`
        alone = [e for e in pending if e["status"] == "partial" or group == 1]
        fresh = [e for e in pending if e["status"] != "partial" and group > 1]
        units = [[e] for e in alone] + [fresh[i:i + group] for i in range(0, len(fresh), group)]
        bar = progress(total=len(pending), desc=f"{augment} models", unit="model")
        for unit in units:
            specs = []
            for e in unit:
                spec = dict(common, name=e["name"], index=e["index"], seed=e["seed"], device=str(device))
                if on_epoch_end is not None:
                    spec["on_epoch_end"] = (lambda name: lambda ep, s: on_epoch_end(name, ep, s))(e["name"])
                specs.append(spec)
            try:
                if len(specs) == 1:
                    finished(train_member(specs[0]))
                else:
                    for entry in train_group(specs):
                        finished(entry)
            except BaseException as exc:
                for e in unit:
                    if entries[e["name"]]["status"] == "done":
                        continue
                    entries[e["name"]]["status"] = ("partial" if (out / STATE_DIR / f"{e['name']}.pt").exists()
                                                    else "pending")
                    entries[e["name"]]["error"] = f"{type(exc).__name__}: {exc}"
                write_manifest()
                raise
            bar.update(len(unit))
        bar.close()
    else:
        from geoaudit.train._ray import run_on_ray

        specs = [dict(common, name=e["name"], index=e["index"], seed=e["seed"],
                      device="cuda" if ray_gpus_per_model else "cpu") for e in pending]

        def on_result(spec, entry, exc):
            if exc is None:
                finished(entry)
            else:
                entries[spec["name"]]["status"] = "failed"
                entries[spec["name"]]["error"] = f"{type(exc).__name__}: {exc}"
                failures.append(spec["name"])
                write_manifest()

        run_on_ray(specs, address=ray_address, gpus_per_model=ray_gpus_per_model, on_result=on_result)
    manifest["timing"]["models_seconds_this_run"] = time.perf_counter() - t1
    manifest["timing"]["total_seconds_this_run"] = time.perf_counter() - t_start
    manifest["timing"]["models_trained_this_run"] = len(pending) - len(failures)
    write_manifest()
    state_dir = out / STATE_DIR
    if state_dir.exists() and not any(state_dir.iterdir()):
        state_dir.rmdir()
    if failures:
        errs = "; ".join(f"{n_}: {entries[n_]['error']}" for n_ in failures)
        raise GeoauditError(f"{len(failures)} model(s) failed ({errs}); re-run the same command to retry them.")
    ckpts = tuple(out / n_ for n_ in names if (out / n_ / CONFIG).exists())
    return PopulationResult(out, augment, ckpts, tuple(seeds), manifest)
