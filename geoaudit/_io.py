"""Atomic file writes: a reader never sees a half-written file, a killed job never leaves one."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _umask() -> int:
    """The process's file-creation mask (read without changing it where /proc tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _tmp_beside(path: Path, suffix=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode open() would (0644 under umask 022)
        os.fchmod(fd, 0o666 & ~_umask())
    except (AttributeError, OSError):  # no fchmod (Windows) or a filesystem without modes
        pass
    finally:
        os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file beside it, then rename.

    Parameters
    ----------
    path : str or Path
        The target; its folder is created when missing.
    data : bytes
    """
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
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8.

    Parameters
    ----------
    path : str or Path
    text : str
    """
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
    if hasattr(o, "to_dict"):  # result objects
        return o.to_dict()
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def to_json(obj, indent=2) -> str:
    """JSON text of ``obj`` (numpy scalars and arrays and paths accepted; NaN refused).

    Parameters
    ----------
    obj : object
    indent : int

    Returns
    -------
    str
    """
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)


def atomic_write_json(path, obj):
    """:func:`atomic_write_text` of :func:`to_json` of ``obj`` plus a newline.

    Parameters
    ----------
    path : str or Path
    obj : object
    """
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
    try:  # mkdtemp made it 0700; give it the mode mkdir would (0755 under umask 022)
        os.chmod(tmp_dir, 0o777 & ~_umask())
    except OSError:
        pass
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)
