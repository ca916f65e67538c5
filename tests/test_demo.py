"""`geoaudit demo --quick` end to end: the README's main job, as CI runs it."""
import json
import re
import time

import pytest

from geoaudit._errors import InputError
from geoaudit.cli import main
from geoaudit.demo import PRESETS, demo_settings

SECTIONS = ["Summary", "Accuracy against log GDP", "World map", "Slopes per training method", "Populations",
            "Population comparisons", "Attack quality", "GeoShapes samples", "Run"]


@pytest.fixture
def quick_run(quick_demo):
    return quick_demo


@pytest.mark.slow
def test_quick_demo_writes_every_section(quick_run, capsys):
    out, rc, _ = quick_run
    assert rc == 0
    html = (out / "report.html").read_text()
    for title in SECTIONS:
        assert "<h2" in html and title in html, title
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
    pvalue = ref["pvalue"] if "pvalue" in ref else ref["p_value"]
    assert ref["df_num"] == 1 and 0 <= pvalue <= 1
    # the planted bias is found: the reference model is more accurate in richer countries
    assert ref["beta"] > 0
    assert report["settings"]["perceptual_cost"] == "ssim"  # no PieAPP weights offline
    for name, m in report["attacks"]["metrics"].items():
        assert 0 <= m["success_rate"] <= 1, name
        assert "lpips" in m["unavailable"]  # marked unavailable, not zero
    for method in ("plain", "pgd", "perceptual"):
        assert (out / "audits" / method / "report.json").exists()
    assert (out / "attacks" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rerun_resumes_instead_of_retraining(quick_run, capsys):
    out, _, first = quick_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/model_*/weights.pt")}
    t = time.perf_counter()
    assert main(["--threads", "1", "demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    again = time.perf_counter() - t
    after = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/model_*/weights.pt")}
    assert before == after and len(before) == 3 * PRESETS["quick"]["models"]
    assert again < first


@pytest.mark.slow
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
    with pytest.raises(InputError, match=match):
        demo_settings(**kwargs)


def test_missing_pieapp_weights_fail_in_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--quick", "--out", str(out), "--pieapp-weights", str(tmp_path / "none.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PieAPP weights file" in err and "does not exist" in err
    assert "--" not in err.split("error:", 1)[1]  # the library's message names no option
    assert not out.exists()


def test_out_that_is_a_file_fails_in_one_line(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep me")
    assert main(["demo", "--quick", "--out", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a file" in err and "internal error" not in err
    assert f.read_text() == "keep me"


def test_demo_result_is_a_read_only_mapping():
    from geoaudit.demo import DemoResult

    r = DemoResult({"kind": "geoaudit-demo", "reference": {"beta": 0.5, "values": [1, 2]}})
    assert r["reference"]["beta"] == 0.5 and set(r) == {"kind", "reference"} and len(r) == 2
    assert r.to_dict() == {"kind": "geoaudit-demo", "reference": {"beta": 0.5, "values": [1, 2]}}
    with pytest.raises(TypeError):
        r["reference"]["beta"] = 1.0
    with pytest.raises(AttributeError):
        r.data = {}


def test_render_demo_composes_the_page_from_report_blocks():
    """The demo page without the minutes-long run: synthetic fit, populations and comparisons."""
    import numpy as np
    import pandas as pd
    import torch

    from geoaudit.audit import compare_populations, gls_test
    from geoaudit.demo import METHOD_LABELS
    from geoaudit.report import plot_attack_grid, render_demo

    rng = np.random.default_rng(0)
    cov = np.exp(rng.uniform(6, 11, 12))
    n = rng.integers(60, 200, 12)
    correct = np.round(np.clip(0.3 + 0.04 * np.log(cov) + rng.normal(0, 0.02, 12), 0, 1) * n).astype(int)
    groups = pd.DataFrame({"group": [f"G{i:02d}" for i in range(12)], "n": n, "accuracy": correct / n,
                           "covariate": cov, "correct": correct})
    fit = gls_test(groups, min_group_size=10)
    betas = {m: {f"model_{i:03d}": float(b) for i, b in enumerate(rng.normal(mu, 0.01, 3))}
             for m, mu in (("plain", 0.05), ("pgd", 0.04), ("perceptual", 0.02))}
    comps = [compare_populations(betas["perceptual"], betas[b], test="welch", alternative="less",
                                 label_a="perceptual-DRO", label_b=METHOD_LABELS[b]).to_dict() for b in ("pgd", "plain")]
    result = {
        "quick": True, "settings": {"models": 3, "perceptual_cost": "ssim"},
        "reference": {"model": "model_000", **fit.to_dict()},
        "populations": {m: {"n_models": 3, "beta_mean": float(np.mean(list(b.values()))),
                            "beta_sd": float(np.std(list(b.values()))), "betas": b} for m, b in betas.items()},
        "comparisons": comps, "attacks": {"n_images": 4}, "timings_seconds": {"total": 1.0},
    }
    images = torch.rand(4, 3, 8, 8)
    grid = plot_attack_grid(images, {"FGSM": (images + 0.01).clamp(0, 1)}, n=2)
    assert len(grid.axes) == 2 * 3
    html, figs = render_demo(result, reference_groups=groups, reference_fit=fit, labels=METHOD_LABELS,
                             attack_rows=[{"attack": "FGSM", "success rate": 0.5}])
    for title in ("Summary", "Accuracy against log GDP", "Slopes per training method", "Populations",
                  "Population comparisons", "Attack quality", "Run"):
        assert f"<h2>{title}" in html, title
    assert "QUICK RUN" in html and "perceptual-DRO vs PGD-DRO" in html
    assert {"accuracy_vs_gdp", "slopes_by_method"} <= set(figs)
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figs.values())
    assert html.count("data:image/png;base64,") == len(figs)
