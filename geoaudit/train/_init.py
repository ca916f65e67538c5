"""Initial weights of a population: random per seed (default), one theta0 for every member
(``init_from``: the paper's Algorithm 3 runs fifty times from the same theta0), or torchvision's
pretrained ResNet weights (``pretrained``: a weights name or a file, never a silent fallback).

The resolved weights are written once to ``<population>/init_weights.pt`` and described by a
JSON-safe spec that travels in the population's settings (so it is part of its identity, is
recorded in every checkpoint's config, and reaches Ray workers as a path).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from geoaudit._errors import DependencyError, InputError
from geoaudit.models._zoo import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NormalizedModel,
    build_model,
)

INIT_FILE = "init_weights.pt"
#: torchvision weight names accepted by ``pretrained`` (besides True = "DEFAULT" and a file).
PRETRAINED_NAMES = ("DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state(path: Path, what: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, pickled code: one clear message
        raise InputError(f"Could not read {what} {str(path)!r} as a PyTorch state dict: {type(e).__name__}: {e}") \
            from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{what.capitalize()} {str(path)!r} is not a state dict (a mapping of names to tensors).")
    return obj


def _torchvision_weights(arch: str, name: str) -> tuple[dict, str]:
    """ResNet weights ``name`` from torch's hub cache (never downloaded here)."""
    import torchvision

    enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}[arch]
    if name not in PRETRAINED_NAMES or (name != "DEFAULT" and not hasattr(enum, name)):
        names = [w.name for w in enum]
        raise InputError(f"{arch} has no torchvision weights {name!r}; accepted: DEFAULT, {', '.join(names)}, "
                         "or a state-dict file.")
    weights = enum.DEFAULT if name == "DEFAULT" else enum[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise DependencyError(
            f"The pretrained {arch} weights {weights} are not in torch's cache ({cached}). Download them once "
            f"(torchvision.models.{arch}(weights={weights!s:s})), give the file instead of the name, or leave "
            "pretrained off to start from random weights.")
    return _read_state(cached, "pretrained weights"), f"torchvision:{weights}"


def resolve_initial_weights(arch, *, pretrained=False, init_from=None, num_classes, in_channels, image_size,
                            out_dir, caller="train_population"):
    """Resolve ``pretrained`` / ``init_from`` to a weights file in ``out_dir`` and its spec.

    Parameters
    ----------
    arch : str
    pretrained : bool, str or Path
        False: random initial weights drawn per seed.  True or a name in :data:`PRETRAINED_NAMES`
        (ResNets): torchvision's ImageNet weights from torch's cache; a path: a state-dict file
        of the architecture.  The head (and a 1-channel first convolution) are drawn per seed
        when their shapes differ.  Weights that cannot be had raise; nothing falls back to
        random weights.
    init_from : str or Path, optional
        One theta0 for every member: a geoaudit checkpoint folder of the same architecture,
        classes and image size (its normalization comes with it), or a state-dict file.
    num_classes, in_channels, image_size : int
    out_dir : Path
        The population folder; the resolved weights go to ``out_dir / INIT_FILE``.
    caller : str

    Returns
    -------
    dict or None
        None for random initialisation, else ``{"kind", "source", "file", "sha256",
        "drawn_per_seed", "normalization"}`` (JSON-safe).

    Raises
    ------
    InputError
        Both given, an unreadable file, or weights that do not fit the architecture.
    DependencyError
        Named pretrained weights that are not in torch's cache.
    """
    if init_from is not None and pretrained not in (False, None):
        raise InputError(f"{caller} takes pretrained or init_from, not both: init_from already sets every weight.")
    if init_from is None and pretrained in (False, None):
        return None
    normalization = None
    if init_from is not None:
        kind, path = "init_from", Path(init_from)
        if path.is_dir() or path.name == "config.json":
            from geoaudit.models._checkpoint import load_model

            net, cfg = load_model(path)
            want = {"arch": arch, "num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
            have = {"arch": cfg.get("arch"), "num_classes": len(cfg.get("class_names") or []) or cfg.get("num_classes"),
                    "in_channels": cfg.get("in_channels"), "image_size": cfg.get("image_size")}
            diff = [f"{k} {have[k]!r} (this population: {want[k]!r})" for k in want if have[k] != want[k]]
            if diff:
                raise InputError(f"The initial checkpoint {str(path)!r} does not fit this population: {'; '.join(diff)}.")
            inner = net[1] if isinstance(net, NormalizedModel) else net
            state = {k: v.detach().cpu() for k, v in inner.state_dict().items()}
            normalization = cfg.get("normalization")
        elif path.is_file():
            state = _read_state(path, "initial weights")
        else:
            raise InputError(f"The initial weights {str(path)!r} are neither a checkpoint folder nor a file.")
        source = f"init_from:{path}"
    else:
        kind = "pretrained"
        if isinstance(pretrained, (str, Path)) and Path(pretrained).is_file():
            state, source = _read_state(Path(pretrained), "pretrained weights"), f"file:{pretrained}"
        elif arch not in ("resnet18", "resnet50"):
            raise InputError(f"Pretrained weights by name exist for resnet18 and resnet50, not {arch!r}; "
                             "give a state-dict file, or init_from a checkpoint.")
        else:
            name = "DEFAULT" if pretrained is True else str(pretrained)
            state, source = _torchvision_weights(arch, name)
        normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if in_channels == 1:
            normalization = {"mean": [sum(IMAGENET_MEAN) / 3], "std": [sum(IMAGENET_STD) / 3]}
    reference, _ = build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    ref = reference.state_dict()
    unknown = [k for k in state if k not in ref]
    if unknown:
        raise InputError(f"The initial weights from {source} do not fit {arch}: unknown entries "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}.")
    fitting = {k: v for k, v in state.items() if tuple(v.shape) == tuple(ref[k].shape)}
    drawn = sorted(k for k in ref if k not in fitting)
    if kind == "init_from" and drawn:
        raise InputError(f"The initial weights from {source} do not fit {arch}: {', '.join(drawn[:5])} "
                         "missing or of another shape.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(fitting, out / INIT_FILE)
    return {"kind": kind, "source": source, "file": INIT_FILE, "sha256": _file_sha256(out / INIT_FILE),
            "drawn_per_seed": drawn, "normalization": normalization}


def apply_initial_weights(model, spec) -> None:
    """Load the resolved initial weights (``spec`` from :func:`resolve_initial_weights`) into
    ``model`` (the bare architecture), leaving the entries drawn per seed as they are.

    Parameters
    ----------
    model : torch.nn.Module
    spec : dict
        Its ``file`` is the path of the weights (the population folder's :data:`INIT_FILE`).
    """
    state = torch.load(Path(spec["file"]), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=False)
