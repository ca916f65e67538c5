"""`geoaudit demo --quick` end to end: the README's main job, as CI runs it."""
import json
import re
import time

import pytest

from geoaudit.cli import main
from geoaudit.demo import PRESETS, demo_settings

pytestmark = pytest.mark.slow

SECTIONS = ["Summary", "Accuracy against log GDP", "World map", "Slopes per training method", "Populations",
            "Population comparisons", "Attack quality", "GeoShapes samples", "Run"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    t = time.perf_counter()
    rc = main(["--threads", "1", "demo", "--quick", "--out", str(out), "--device", "cpu"])
    return out, rc, time.perf_counter() - t


def test_quick_demo_writes_every_section(quick_run, capsys):
    out, rc, _ = quick_run
    assert rc == 0
    html = (out / "report.html").read_text()
    for title in SECTIONS:
        assert f"<h2" in html and title in html, title
    assert "QUICK RUN" in html
    # self-contained: no external scripts, styles or images
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert html.count("data:image/png;base64,") >= 5

    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "geoaudit-demo" and report["quick"] is True
    assert set(report["populations"]) == {"plain", "pgd", "perceptual"}
    for pop in report["populations"].values():
        assert pop["n_models"] == PRESETS["quick"]["models"]
        assert len(pop["betas"]) == PRESETS["quick"]["models"]
    tests = {(c["label_a"], c["label_b"], c["test"]) for c in report["comparisons"]}
    assert ("perceptual-DRO", "PGD-DRO", "welch") in tests and ("perceptual-DRO", "PGD-DRO", "permutation") in tests
    assert all(c["alternative"] == "less" for c in report["comparisons"])
    ref = report["reference"]
    assert ref["df_num"] == 1 and 0 <= ref["p_value"] <= 1
    assert report["settings"]["perceptual_cost"] == "ssim"  # no PieAPP weights offline
    for name, m in report["attacks"]["metrics"].items():
        assert 0 <= m["success_rate"] <= 1, name
        assert "lpips" in m["unavailable"]  # marked unavailable, not zero
    for method in ("plain", "pgd", "perceptual"):
        assert (out / "audits" / method / "report.json").exists()
    assert (out / "attacks" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_resumes_instead_of_retraining(quick_run, capsys):
    out, _, first = quick_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/model_*/weights.pt")}
    t = time.perf_counter()
    assert main(["--threads", "1", "demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    again = time.perf_counter() - t
    after = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/model_*/weights.pt")}
    assert before == after and len(before) == 3 * PRESETS["quick"]["models"]
    assert again < first


def test_other_settings_into_same_folder_are_refused(quick_run, capsys):
    out, _, _ = quick_run
    assert main(["demo", "--quick", "--models", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "models" in err and "Traceback" not in err


@pytest.mark.parametrize("kwargs,match", [
    (dict(models=1), "'models'"),
    (dict(spurious_strength=1.5), "'spurious_strength'"),
    (dict(n_images=10), "'n_images'"),
])
def test_demo_settings_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        demo_settings(**kwargs)
