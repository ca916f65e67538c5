"""One checkpoint format for every geoaudit model: a folder with ``config.json`` (architecture,
classes, input size, normalization, training method and seed, and the sha256 of the weights)
and ``weights.pt`` (the state dict).  Written atomically: a folder either is complete or does
not exist; the recorded hash catches a weights file damaged afterwards.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import torch

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_bytes, atomic_write_json, replace_dir
from geoaudit.models._zoo import ARCHITECTURES, NormalizedModel, build_model

FORMAT = "geoaudit-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.pt"
HASH_KEY = "weights_sha256"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_weights_bytes(folder, cfg) -> bytes:
    """The bytes of the checkpoint's weights file, checked against the hash its config records.

    Parameters
    ----------
    folder : Path
        The checkpoint folder.
    cfg : dict
        Its config (checkpoints written before hashes were recorded are not checked).

    Returns
    -------
    bytes

    Raises
    ------
    InputError
        When the file is missing, unreadable or does not match the recorded sha256.
    """
    wpath = Path(folder) / WEIGHTS
    if not wpath.exists():
        raise InputError(f"Checkpoint {str(folder)!r} has no {WEIGHTS}.")
    try:
        data = wpath.read_bytes()
    except OSError as e:
        raise InputError(f"Checkpoint weights {str(wpath)!r} cannot be read: {e}") from e
    expected = cfg.get(HASH_KEY)
    if expected is not None and _sha256(data) != expected:
        raise InputError(f"Corrupt checkpoint weights {str(wpath)!r}: their sha256 does not match the one "
                         f"recorded in {CONFIG} at save ({len(data)} bytes on disk); retrain or restore this model.")
    return data


def verify_checkpoint(folder, cfg) -> str | None:
    """Why the checkpoint's weights cannot be used (missing, unreadable, hash mismatch), or None.

    Checkpoints without a recorded hash are checked by loading their weights.
    """
    try:
        data = read_weights_bytes(folder, cfg)
        if cfg.get(HASH_KEY) is None:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except InputError as e:
        return str(e)
    except Exception as e:  # an old checkpoint whose weights do not load
        return f"Corrupt checkpoint weights {str(Path(folder) / WEIGHTS)!r}: {e}"
    return None


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
    normalization, the bare architecture (the Normalize layer is then added here).  The config
    written records the sha256 of ``weights.pt`` (``weights_sha256``), checked on load.

    Parameters
    ----------
    path : str or Path
        The checkpoint folder (replaced whole if it exists).
    model : torch.nn.Module
    config : dict
        From :func:`make_config`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    norm = config.get("normalization")
    if norm and not isinstance(model, NormalizedModel):
        model = NormalizedModel(model, norm["mean"], norm["std"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        atomic_write_bytes(tmp / WEIGHTS, data)  # fsync'd: the hash is of what is on disk
        atomic_write_json(tmp / CONFIG, dict(config, **{HASH_KEY: _sha256(data)}))
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
        ``config`` as it was given to :func:`save_checkpoint`.

    Raises
    ------
    InputError
        For a missing or corrupt config, or weights that are missing, unreadable, do not match
        the sha256 recorded at save, or do not fit the architecture.
    """
    path = Path(path)
    cfg = read_config(path)
    if arch is not None and cfg["arch"] != arch:
        raise InputError(f"Checkpoint {str(path)!r} holds a {cfg['arch']!r} model, not {arch!r}.")
    folder = path if path.is_dir() else path.parent
    wpath = folder / WEIGHTS
    data = read_weights_bytes(folder, cfg)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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
    # the hash describes the file, not the model: the config comes back as it was saved
    return model.to(device), {k: v for k, v in cfg.items() if k != HASH_KEY}
