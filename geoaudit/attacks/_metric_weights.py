"""Weights of the LPIPS and DISTS metrics from a path the user gives, not only torch's hub cache.

``$GEOAUDIT_LPIPS_WEIGHTS``: the AlexNet backbone file (``alexnet-owt-7be5be79.pth``; LPIPS's
own linear layers ship with the ``lpips`` package) or a folder holding it.
``$GEOAUDIT_DISTS_WEIGHTS``: a folder holding ``vgg16-397923af.pth`` and ``dists_weights.pt``.
The files are shown to torchvision / piq through a temporary hub folder of links, so nothing
is downloaded and the user's cache is left as it is.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from geoaudit._errors import InputError

ENV_VARS = {"lpips": "GEOAUDIT_LPIPS_WEIGHTS", "dists": "GEOAUDIT_DISTS_WEIGHTS"}


def env_weight_files(name, files) -> dict:
    """``{expected file name: path}`` from the metric's environment variable, or ``{}`` when unset.

    Parameters
    ----------
    name : {"lpips", "dists"}
    files : sequence of str
        The file names torchvision / piq look for in the hub cache.

    Returns
    -------
    dict of str -> Path
    """
    value = os.environ.get(ENV_VARS[name])
    if not value:
        return {}
    path = Path(value)
    if path.is_dir():
        return {f: path / f for f in files}
    if path.is_file() and len(files) == 1:
        return {files[0]: path}
    raise InputError(f"${ENV_VARS[name]} = {value!r} is not "
                     + (f"a file or a folder holding {files[0]}." if len(files) == 1
                        else f"a folder holding {', '.join(files)}."))


@contextlib.contextmanager
def hub_dir_with(files):
    """Point torch's hub folder, for the duration, at a temporary folder whose ``checkpoints/``
    links to ``files`` (``{name: path}``); does nothing for an empty mapping.

    Parameters
    ----------
    files : dict of str -> Path
    """
    if not files:
        yield
        return
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="geoaudit_hub_") as tmp:
        ckpt = Path(tmp) / "checkpoints"
        ckpt.mkdir()
        for fname, path in files.items():
            (ckpt / fname).symlink_to(Path(path).resolve())
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)
