"""Atomic file writes: a reader never sees a half-written file, a killed job never leaves one."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping


def _tmp_beside(path: Path, suffix=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path, data: bytes):
    path = Path(path)
    tmp = _tmp_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str):
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Mapping):  # read-only mappings of frozen results
        return dict(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def to_json(obj, indent=2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)


def atomic_write_json(path, obj):
    atomic_write_text(path, to_json(obj) + "\n")


def atomic_save(path, save_fn):
    """Call ``save_fn(tmp_path)`` then move the result into place (for torch.save, savefig...)."""
    path = Path(path)
    tmp = _tmp_beside(path, suffix=path.suffix)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def replace_dir(tmp_dir, final_dir):
    """Move a finished directory into place, replacing any older one."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)
