"""Progress bars.  Shown on a terminal; GEOAUDIT_PROGRESS=1 forces them on, 0 turns them off."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    """Whether progress bars are shown: ``GEOAUDIT_PROGRESS`` when set, else when stderr is a terminal.

    Returns
    -------
    bool
    """
    env = os.environ.get("GEOAUDIT_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    """tqdm with geoaudit's defaults (stderr, ETA, off when not wanted).

    Parameters
    ----------
    iterable : iterable, optional
    **kwargs
        Passed to ``tqdm``; geoaudit's defaults fill what is not given.

    Returns
    -------
    tqdm.tqdm
    """
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
