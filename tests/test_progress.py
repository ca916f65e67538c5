"""Progress: bars on a terminal, plain lines with an ETA in a log, nothing for short steps."""
from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from geoaudit._progress import ProgressLines, progress, progress_mode


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr("geoaudit._progress.time.monotonic", c)
    return c


@pytest.mark.parametrize("env, tty, mode", [(None, True, "bar"), (None, False, "lines"), ("0", True, "off"),
                                            ("1", False, "bar"), ("lines", True, "lines")])
def test_mode_follows_the_terminal_and_the_environment(monkeypatch, env, tty, mode):
    if env is None:
        monkeypatch.delenv("GEOAUDIT_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("GEOAUDIT_PROGRESS", env)
    monkeypatch.setattr("sys.stderr.isatty", lambda: tty, raising=False)
    assert progress_mode() == mode


def test_a_log_gets_lines_with_eta_every_interval(clock):
    out = io.StringIO()
    bar = ProgressLines(total=100, desc="k-means (torch)", unit="image", file=out, interval=10, mininterval=0)
    for _ in range(4):
        clock.t += 5  # 20 s in all: two lines on the way
        bar.update(25)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("k-means (torch): 50/100 image (50%)") and "ETA" in lines[0]
    assert lines[-1].startswith("k-means (torch): 100/100 image (100%)")
    assert "\r" not in out.getvalue() and len(lines) == 2


def test_a_short_step_prints_nothing(clock):
    out = io.StringIO()
    bar = ProgressLines(total=10, desc="quick", file=out, interval=10, mininterval=0)
    for _ in range(10):
        clock.t += 0.1
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_progress_picks_lines_off_a_terminal(monkeypatch):
    monkeypatch.setenv("GEOAUDIT_PROGRESS", "lines")
    p = progress(range(3), desc="x", file=io.StringIO(), disable=None)
    assert isinstance(p, ProgressLines) and not p.disable
    monkeypatch.setenv("GEOAUDIT_PROGRESS", "1")
    p = progress(range(3), desc="x", file=io.StringIO())
    assert isinstance(p, tqdm) and not isinstance(p, ProgressLines)


def test_a_label_says_whose_progress_it_is(monkeypatch, clock):
    # workers training populations side by side share one stderr
    monkeypatch.setenv("GEOAUDIT_PROGRESS", "lines")
    monkeypatch.setenv("GEOAUDIT_PROGRESS_LABEL", "[capture/pgd]")
    out = io.StringIO()
    bar = progress(total=2, desc="round 1", unit="batch", file=out, interval=1, mininterval=0)
    clock.t += 2
    bar.update(1)
    bar.close()
    assert out.getvalue().startswith("[capture/pgd] round 1: 1/2 batch")
    assert progress(range(1), file=io.StringIO()).desc.startswith("[capture/pgd]")
    monkeypatch.delenv("GEOAUDIT_PROGRESS_LABEL")
    assert progress(range(1), desc="x", file=io.StringIO()).desc == "x"
