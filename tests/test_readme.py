"""Every command and snippet of README.md and docs/*.md runs as written, or says why it cannot here.

The fenced ```bash and ```python blocks are read from the pages themselves, so a page cannot
drift from what works. Each page's runnable blocks run in order in one scratch folder (a later
block may use an earlier one's output, as a reader's shell would), with ``geoaudit`` meaning this
checkout's CLI. A block is skipped only when ``SKIP`` says why: real ImageNet, Flickr or a GPU, a
network download, hours of training, or an API reference whose names stand for the reader's
own objects. docs/any_classifier.md has its own test (tests/test_docs_any_classifier.py).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# any_classifier.md and reproduce.md have tests of their own that set up their assets
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
                               if p.name not in ("any_classifier.md", "reproduce.md"))
FENCE = re.compile(r"^```(bash|python)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

_API = "an API reference: names such as model, images and labels stand for the reader's own objects"
# (page, text in the block) -> why it does not run in the test suite
SKIP = {
    ("README.md", "geoaudit demo --out geoaudit-demo"):
        "installs the package and runs the whole demo (minutes); tests/test_demo.py runs the demo, .ci/run the install",
    ("docs/demo.md", "geoaudit demo --out geoaudit-demo"):
        "runs the whole demo (minutes); tests/test_demo.py runs the quick demo and its report",
    ("docs/demo.md", 'run_demo("geoaudit-demo")'): "runs the whole demo (minutes); tests/test_demo.py runs it quick",
    ("README.md", "download.pytorch.org/whl/cpu"): "downloads torch from the network; the tests run offline",
    ("README.md", "ILSVRC2012/train"): "needs ImageNet (ILSVRC2012), a Flickr API key and a GPU",
    ("README.md", "python -m pytest      # the whole suite"): "runs this test suite itself, and a benchmark (minutes)",
    ("docs/audit.md", "[--label-col label]"):
        "a syntax reference ([...] marks optional flags); the runnable forms run from README.md and the block above",
    ("docs/audit.md", "from geoaudit.audit import (group_accuracy"): _API,
    ("docs/attacks.md", "result = attack(model, images, labels)"): _API,
    ("docs/attacks.md", "ev = evaluate(model, images, result"): _API,
    ("docs/calibrate.md", "calibrate_epsilon(images, labels"): _API,
    ("docs/defenses.md", "CentroidDefense.from_data(model"): _API,
    ("docs/defenses.md", 'evaluate_centroid_checkpoint("CHECKPOINT"'): _API + " (a checkpoint folder)",
    ("docs/imagenet_geo.md", "ILSVRC2012/train"): "needs ImageNet (ILSVRC2012) and, for most lines, the Flickr API",
    ("docs/training.md", "--models 50 --epochs 10"): "trains 150 models (hours on a CPU); tests/test_train.py runs the same at small size",
    ("docs/training.md", "n_models=50, epochs=10"): "trains 50 models on a GPU (device='cuda')",
}


def blocks(page):
    """The fenced bash/python blocks of a page: (language, text)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((ROOT / page).read_text(encoding="utf-8"))]


def skip_reason(page, text):
    return next((why for (p, key), why in SKIP.items() if p == page and key in text), None)


def _shell(text):
    """A bash block with `geoaudit` and `python` meaning this checkout and this interpreter."""
    py = f'"{sys.executable}"'
    out = []
    for line in text.splitlines():
        line = re.sub(r"(^|&&\s*|;\s*|\|\s*)geoaudit\s", rf"\1{py} -m geoaudit.cli ", line)
        line = re.sub(r"(^|&&\s*|;\s*)python\s", rf"\1{py} ", line)
        out.append(line)
    return "set -euo pipefail\n" + "\n".join(out) + "\n"


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GEOAUDIT_PROGRESS="0", MPLBACKEND="Agg",
               HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    return env


def _params():
    out = []
    for page in PAGES:
        runnable = [(lang, text) for lang, text in blocks(page) if skip_reason(page, text) is None]
        if not runnable:
            continue
        out.append(pytest.param(page, marks=[pytest.mark.slow], id=page))  # each page takes 30 s to minutes
    return out


def test_every_block_runs_or_says_why():
    """A skip names a block that exists (no stale entries), and reads as a reason."""
    for (page, key), why in SKIP.items():
        assert any(key in text for _, text in blocks(page)), f"{page}: no block holds {key!r} any more"
        assert len(why) > 20
    assert sum(len(blocks(p)) for p in PAGES) >= 10  # the pages do hold examples


@pytest.mark.parametrize("page", _params())
def test_page_blocks_run_as_written(page, tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for i, (lang, text) in enumerate(blocks(page)):
        if skip_reason(page, text) is not None:
            continue
        if lang == "bash":
            cmd = ["bash", "-c", _shell(text)]
        else:
            cmd = [sys.executable, "-c", text]
        r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900,
                           check=False)
        assert r.returncode == 0, f"{page} block {i} ({lang}) failed:\n{text}\n--- stderr:\n{r.stderr[-3000:]}"
    if page == "README.md":
        for report in ("audit-example", "audit-fair", "audit-model"):
            assert (tmp_path / report / "report.html").exists(), report
        assert (tmp_path / "compare.html").exists()


def test_readme_names_no_missing_file():
    """The README's commands read only files the README makes or the repository ships."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for lang, block in blocks("README.md"):
        if skip_reason("README.md", block) is not None:
            continue
        for path in re.findall(r"(examples/[\w./-]+)", block):
            assert (ROOT / path).exists(), path
    assert "[--model-col" not in text and 'load_dataset("imagenet-geo"' not in text


def test_every_cli_option_has_help():
    """`geoaudit ... --help` explains every option (hidden test hooks excepted)."""
    import argparse

    from geoaudit.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(" ".join(path + [action.option_strings[0] if action.option_strings else action.dest]))

    walk(build_parser(), ["geoaudit"])
    assert not missing, f"options without help: {missing}"
