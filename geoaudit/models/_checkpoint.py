"""One checkpoint format for every geoaudit model: a folder with ``config.json`` (architecture,
classes, input size, normalization, training method and seed) and ``weights.pt`` (the state
dict).  Written atomically: a folder either is complete or does not exist.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_json, replace_dir
from geoaudit.models._zoo import ARCHITECTURES, NormalizedModel, build_model

FORMAT = "geoaudit-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.pt"


def make_config(*, arch, class_names, in_channels, image_size, normalization=None,
                weights_source="scratch", training=None, extra=None) -> dict:
    """The JSON config of a checkpoint.

    ``normalization`` is None (the model takes [0, 1] pixels) or {"mean": [...], "std": [...]},
    applied by a Normalize layer in front of the architecture.
    """
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "normalization": normalization,
        "weights_source": weights_source,
        "training": training or {},
    }
    if extra:
        cfg.update(extra)
    return cfg


def model_from_config(cfg: dict):
    """An untrained model with the checkpoint's architecture (and normalization layer)."""
    model, _ = build_model(cfg["arch"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                           image_size=cfg["image_size"], pretrained=False)
    norm = cfg.get("normalization")
    if norm:
        model = NormalizedModel(model, norm["mean"], norm["std"])
    return model


def save_checkpoint(path, model, config: dict):
    """Write ``model``'s weights and ``config`` to the folder ``path`` atomically.

    ``model`` is either what ``model_from_config(config)`` builds, or, when the config names a
    normalization, the bare architecture (the Normalize layer is then added here).
    """
    path = Path(path)
    norm = config.get("normalization")
    if norm and not isinstance(model, NormalizedModel):
        model = NormalizedModel(model, norm["mean"], norm["std"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, tmp / WEIGHTS)
        atomic_write_json(tmp / CONFIG, config)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_config(path) -> dict:
    """The config of the checkpoint folder (or its config.json) at ``path``, validated."""
    path = Path(path)
    cfg_path = path / CONFIG if path.is_dir() else path
    if not cfg_path.exists():
        raise InputError(f"No geoaudit checkpoint at {str(path)!r}: expected a folder with {CONFIG} and {WEIGHTS}.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"Corrupt checkpoint config {str(cfg_path)!r}: {e}") from e
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise InputError(f"{str(cfg_path)!r} is not a geoaudit checkpoint config (no \"format\": \"{FORMAT}\").")
    if cfg.get("arch") not in ARCHITECTURES:
        raise InputError(f"Checkpoint {str(path)!r} names unknown architecture {cfg.get('arch')!r}; known: {', '.join(ARCHITECTURES)}.")
    return cfg


def load_model(path, *, device="cpu", arch=None):
    """Load a checkpoint folder into a ready model (eval mode, on ``device``).

    Parameters
    ----------
    path : str or Path
        The checkpoint folder (or its config.json).
    device : str or torch.device
    arch : str, optional
        When given, the checkpoint must be of this architecture.

    Returns
    -------
    (model, config)
    """
    path = Path(path)
    cfg = read_config(path)
    if arch is not None and cfg["arch"] != arch:
        raise InputError(f"Checkpoint {str(path)!r} holds a {cfg['arch']!r} model, not {arch!r}.")
    folder = path if path.is_dir() else path.parent
    wpath = folder / WEIGHTS
    if not wpath.exists():
        raise InputError(f"Checkpoint {str(folder)!r} has no {WEIGHTS}.")
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"Corrupt checkpoint weights {str(wpath)!r}: {e}") from e
    model = model_from_config(cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise InputError(
            f"Checkpoint weights {str(wpath)!r} do not fit a {cfg['arch']!r} model with "
            f"{cfg['num_classes']} classes: {str(e).splitlines()[0]}"
        ) from e
    model.eval()
    return model.to(device), cfg
