"""The package's layering: which subpackage may import which, checked on the source (lazy
imports inside functions included), so no cycle and no upward arrow can creep in."""
import ast
from pathlib import Path

import geoaudit

ROOT = Path(geoaudit.__file__).parent

# What each part may import (besides geoaudit's private top-level modules, geoaudit._*).
ALLOWED = {
    "data": set(),
    "models": {"data"},
    "attacks": {"data", "models"},
    "calibrate": {"attacks"},  # the re-export kept for one release
    "defenses": {"attacks", "data", "models"},
    "train": {"attacks", "data", "models"},
    "audit": {"data", "models"},
    "report": {"attacks", "audit", "data", "models"},
    "demo": {"attacks", "audit", "data", "defenses", "models", "report", "train"},
    "commands": {"attacks", "audit", "calibrate", "data", "defenses", "demo", "models", "report", "train"},
    "cli": {"commands"},
}

# Thin conveniences that reach into report lazily, each kept for existing callers; nothing
# else may import upward.
LAZY_EXCEPTIONS = {
    ("audit/__init__.py", "report"),  # geoaudit.audit.write_report -> geoaudit.report.write_report
    ("attacks/_calibrate.py", "report"),  # CalibrationResult.plot_heatmaps (deprecated)
    ("defenses/_centroid_eval.py", "report"),  # CentroidCurve.plot
}


def _part(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "geoaudit" else None


def _edges():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        src = rel.parts[0].removesuffix(".py")
        if src.startswith("_"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("geoaudit"):
                names = ([f"geoaudit.{a.name}" for a in node.names] if node.module == "geoaudit"
                         else [node.module])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("geoaudit.")]
            for name in names:
                dst = _part(name)
                if dst and dst != src and not dst.startswith("_") and dst != "__version__":
                    yield rel.as_posix(), src, dst


def test_every_import_follows_the_layering():
    bad = sorted({(f, dst) for f, src, dst in _edges()
                  if dst not in ALLOWED.get(src, set()) and (f, dst) not in LAZY_EXCEPTIONS})
    assert bad == [], f"imports against the layering (file, imported part): {bad}"


def test_the_allowed_graph_has_no_cycle():
    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, seen + (n,))) for n in ALLOWED.get(a, ()))

    assert [p for p in ALLOWED if reaches(p, p)] == []


def test_the_lazy_exceptions_still_exist():
    # a stale exception would silently widen what the first test allows
    edges = {(f, dst) for f, _, dst in _edges()}
    assert LAZY_EXCEPTIONS <= edges
