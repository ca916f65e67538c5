"""Progress with an ETA.  A bar on a terminal; plain lines (one every ~10 s, only for steps that
run that long) when the output is a file or a pipe, so a log holds more than stage lines.
GEOAUDIT_PROGRESS=1 forces bars, ``lines`` forces lines, 0 turns progress off; GEOAUDIT_PROGRESS_LABEL
prefixes every description (whose work it is, where several processes share one output)."""
from __future__ import annotations

import io
import os
import sys
import time

from tqdm.auto import tqdm

LINE_INTERVAL_S = 10.0


def progress_mode() -> str:
    """How progress is shown: ``"bar"``, ``"lines"`` or ``"off"``.

    ``GEOAUDIT_PROGRESS`` when set (1/true/yes/bar: bars, lines: lines, 0/false/no/empty: off),
    else bars when stderr is a terminal and lines when it is not.

    Returns
    -------
    str
    """
    env = os.environ.get("GEOAUDIT_PROGRESS")
    if env is not None:
        env = env.strip().lower()
        if env in ("0", "", "false", "no", "off"):
            return "off"
        return "lines" if env == "lines" else "bar"
    return "bar" if sys.stderr.isatty() else "lines"


def progress_enabled() -> bool:
    """Whether progress bars are shown: ``GEOAUDIT_PROGRESS`` when set, else when stderr is a terminal.

    Returns
    -------
    bool
    """
    return progress_mode() == "bar"


class ProgressLines(tqdm):
    """tqdm that writes whole lines ("desc: 40/120 batch (33%), 0:31 elapsed, ETA 1:02, 1.3 batch/s")
    instead of redrawing a bar: the first after ``interval`` seconds, then one per interval, and a
    last one when a step that printed finishes.  Steps shorter than ``interval`` print nothing."""

    def __init__(self, *args, interval=LINE_INTERVAL_S, **kwargs):
        self._interval = float(interval)
        self._started = time.monotonic()
        self._printed_at = None
        self._printed_n = None
        kwargs["dynamic_ncols"] = False
        kwargs["leave"] = False  # a bar's last newline; these lines end themselves
        kwargs["mininterval"] = min(float(kwargs.get("mininterval", 1.0)), self._interval)
        super().__init__(*args, **kwargs)

    def _line(self) -> str:
        d = self.format_dict
        desc = (d.get("prefix") or "progress").rstrip(": ")
        unit, n, total = d.get("unit") or "it", d["n"], d.get("total")
        el = self.format_interval(d["elapsed"])
        rate = d.get("rate") or (n / d["elapsed"] if d["elapsed"] else None)
        if d.get("unit_scale"):
            n_s, t_s = self.format_sizeof(n), (self.format_sizeof(total) if total else None)
        else:
            n_s, t_s = f"{n:,}", (f"{total:,}" if total else None)
        rate_s = f", {rate:.3g} {unit}/s" if rate else ""
        if total:
            eta = self.format_interval((total - n) / rate) if rate else "?"
            return f"{desc}: {n_s}/{t_s} {unit} ({100 * n / total:.0f}%), {el} elapsed, ETA {eta}{rate_s}"
        return f"{desc}: {n_s} {unit}, {el} elapsed{rate_s}"

    def _write(self):
        self.fp.write(self._line() + "\n")
        self.fp.flush()
        self._printed_at, self._printed_n = time.monotonic(), self.n

    def display(self, msg=None, pos=None):
        now = time.monotonic()
        last = self._printed_at if self._printed_at is not None else self._started
        if now - last >= self._interval and self.n != self._printed_n:
            self._write()
        return True

    def close(self):
        if not self.disable and self._printed_at is not None and self.n != self._printed_n:
            self._write()  # the end of a step that reported along the way
        fp, self.fp = self.fp, io.StringIO()  # tqdm's closing '\r' belongs to bars, not to a log
        try:
            super().close()
        finally:
            self.fp = fp


def progress(iterable=None, **kwargs):
    """Progress with geoaudit's defaults (stderr, ETA; bar or lines, see :func:`progress_mode`).

    Parameters
    ----------
    iterable : iterable, optional
    **kwargs
        Passed to ``tqdm``; geoaudit's defaults fill what is not given (``disable=None`` means
        "geoaudit's default").

    Returns
    -------
    tqdm.tqdm
    """
    if kwargs.get("disable", False) is None:
        del kwargs["disable"]
    mode = progress_mode()
    label = os.environ.get("GEOAUDIT_PROGRESS_LABEL")
    if label:
        kwargs["desc"] = f"{label} {kwargs['desc']}" if kwargs.get("desc") else label
    kwargs.setdefault("disable", mode == "off")
    kwargs.setdefault("leave", False)
    if mode == "lines":
        return ProgressLines(iterable, **kwargs)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
