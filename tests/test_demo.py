"""`geoaudit demo`: the comparison plan, Holm, the report, and the quick run end to end."""
import json
import re
import time

import numpy as np
import pytest

from geoaudit._errors import InputError
from geoaudit.cli import main
from geoaudit.demo import (
    COMPARISON_PLAN,
    ORACLE_COPIES,
    PRESETS,
    comparison_plan,
    demo_settings,
    holm_adjust,
    paired_difference_ci,
    run_comparisons,
    settings_table,
)

ALL = {"capture": ("plain", "pgd", "perceptual", "oracle"), "colour": ("plain", "pgd", "perceptual"),
       "null": ("plain", "pgd", "perceptual")}


# ------------------------------------------------------------------------------ the plan and Holm
def test_plan_names_one_primary_a_positive_control_and_negative_checks():
    plan = comparison_plan(ALL)
    assert len(plan) == len(COMPARISON_PLAN) == 8
    primary = [c for c in plan if c.role == "primary"]
    assert [(c.mechanism, c.a, c.b) for c in primary] == [("capture", "perceptual", "pgd")]
    assert primary[0].family == "primary" and plan[0] is primary[0]
    assert [(c.mechanism, c.a, c.b) for c in plan if c.role == "positive control"] == [("capture", "oracle", "plain")]
    negative = {(c.mechanism, c.a) for c in plan if c.role == "negative check"}
    assert negative == {("colour", "perceptual"), ("colour", "pgd"), ("null", "perceptual"), ("null", "pgd")}
    assert all(c.family == "secondary" for c in plan if c.role not in ("primary", "positive control"))
    # the positive control checks the experiment; it is no claim, so it is tested alone, not in Holm's family
    assert [c.family for c in plan if c.role == "positive control"] == ["control"]


def test_plan_keeps_only_comparisons_of_trained_populations():
    quick = comparison_plan({"capture": ALL["capture"]})
    assert [c.key for c in quick] == ["capture: perceptual < pgd", "capture: oracle < plain",
                                      "capture: perceptual < plain", "capture: pgd < plain"]
    no_pgd = comparison_plan({"capture": ALL["capture"], "null": ("plain", "perceptual")})
    assert "null: perceptual < plain" in {c.key for c in no_pgd} and "null: pgd < plain" not in {c.key for c in no_pgd}


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = np.random.default_rng(0).uniform(0, 0.2, 7)
    assert holm_adjust(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert holm_adjust([]) == []


def test_paired_ci_matches_scipy():
    from scipy import stats

    a, b = np.array([0.1, 0.12, 0.09, 0.15]), np.array([0.05, 0.11, 0.02, 0.1])
    diff, lo, hi = paired_difference_ci(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a - b)) and (lo, hi) == pytest.approx((ci.low, ci.high))


def _synthetic_betas(k=6, seed=0):
    """Known truth: the oracle halves the capture slope; nothing differs on colour and null."""
    rng = np.random.default_rng(seed)
    names = [f"model_{i:03d}" for i in range(k)]
    seed_effect = rng.normal(0, 0.01, k)  # shared by models of one seed (paired design)

    def pop(mu, sd=0.003):
        return {n: float(mu + s + rng.normal(0, sd)) for n, s in zip(names, seed_effect)}

    return {"capture": {"plain": pop(0.08), "pgd": pop(0.08), "perceptual": pop(0.08), "oracle": pop(0.02)},
            "colour": {"plain": pop(0.10), "pgd": pop(0.10), "perceptual": pop(0.10)},
            "null": {"plain": pop(0.0), "pgd": pop(0.0), "perceptual": pop(0.0)}}


def test_comparisons_detect_the_planted_improvement_and_stay_silent_elsewhere():
    rows = run_comparisons(_synthetic_betas(), comparison_plan(ALL))
    by = {r["key"]: r for r in rows}
    pos = by["capture: oracle < plain"]
    assert pos["role"] == "positive control" and pos["rejected"] and pos["verdict"].startswith("DETECTED")
    assert pos["ci_low"] < pos["difference"] < pos["ci_high"] < 0 and pos["difference"] == pytest.approx(-0.06, abs=0.01)
    for r in rows:
        assert r["test"] == "paired" and r["n_pairs"] == 6 and r["alternative"] == "less"
        assert r["p_adjusted"] >= r["pvalue"] - 1e-12
        if r["role"] == "negative check":
            assert not r["rejected"] and r["verdict"].startswith("silent")
    prim = by["capture: perceptual < pgd"]
    assert prim["p_adjusted"] == prim["pvalue"] and prim["adjustment"].startswith("none")
    secondary = [r for r in rows if r["family"] == "secondary"]
    assert [r["p_adjusted"] for r in secondary] == pytest.approx(holm_adjust([r["pvalue"] for r in secondary]))
    assert all("Holm over 6" in r["adjustment"] for r in secondary)
    assert pos["p_adjusted"] == pos["pvalue"] and pos["adjustment"].startswith("none")


def test_a_narrow_detection_is_said_to_be_narrow():
    # one-sided p < 0.05 while the two-sided 95 % CI of the difference still reaches 0
    plain = {f"model_{i:03d}": b for i, b in enumerate([0.02, 0.03, 0.01, 0.04, 0.02, 0.03])}
    d = [-0.03, 0.005, -0.02, -0.025, 0.004, -0.02]
    betas = {"capture": {"plain": plain, "oracle": {k: v + x for (k, v), x in zip(plain.items(), d)}}}
    (row,) = run_comparisons(betas, comparison_plan({"capture": ("plain", "oracle")}))
    assert row["pvalue"] < 0.05 and row["ci_low"] < 0 <= row["ci_high"]
    assert row["verdict"].startswith("DETECTED") and "narrowly" in row["verdict"] and "90%" in row["verdict"]
    clear = run_comparisons(_synthetic_betas(), comparison_plan(ALL))
    assert all("narrowly" not in r["verdict"] for r in clear if r["ci_high"] < 0)


def test_a_missed_positive_control_and_a_firing_negative_check_are_said_so():
    betas = _synthetic_betas()
    betas["capture"]["oracle"] = dict(betas["capture"]["plain"])
    betas["capture"]["oracle"] = {k: v + 0.001 * (i % 2) for i, (k, v) in enumerate(betas["capture"]["plain"].items())}
    betas["null"]["perceptual"] = {k: v - 0.05 for k, v in betas["null"]["plain"].items()}
    betas["null"]["perceptual"]["model_000"] += 0.001
    by = {r["key"]: r for r in run_comparisons(betas, comparison_plan(ALL))}
    assert by["capture: oracle < plain"]["verdict"].startswith("NOT DETECTED")
    assert by["null: perceptual < plain"]["rejected"] and by["null: perceptual < plain"]["verdict"].startswith("FIRED")


def test_settings_table_says_what_differs_from_the_paper():
    s = demo_settings()
    rows = {r["setting"]: r for r in settings_table({**s.__dict__, "perceptual_cost": "ssim"})}
    assert rows["Algorithm 2 rounds (T1)"]["paper"] == "3" and rows["Algorithm 2 rounds (T1)"]["demo"] == str(s.dro_rounds)
    assert rows["perceptual attack steps (N)"]["paper"] == "100"
    assert rows["perceptual attack steps (N)"]["demo"].startswith(str(s.perceptual_steps))
    assert rows["models per population (K)"]["paper"] == "50" and all(r["why"] is not None for r in rows.values())
    assert rows["SGD (Algorithms 2 and 3)"]["demo"].startswith(f"lr {s.lr:g},") and s.lr == PRESETS["default"]["lr"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(models=1), "'models'"),
    (dict(check_models=1), "'check_models'"),
    (dict(spurious_strength=1.5), "'spurious_strength'"),
    (dict(capture_strength=0.0), "'capture_strength'"),
    (dict(n_images=10), "'n_images'"),
    (dict(mechanisms=["capture", "texture"]), "'mechanisms'"),
    (dict(mechanisms="capture"), "'mechanisms'"),
])
def test_demo_settings_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        demo_settings(**kwargs)


def test_presets_and_mechanism_subsets():
    d, q = demo_settings(), demo_settings(quick=True)
    assert d.mechanisms == ("capture", "colour", "null") and d.methods_of("capture") == ALL["capture"]
    assert q.mechanisms == ("capture",) and q.quick and q.models == PRESETS["quick"]["models"]
    assert d.methods_of("null") == d.methods_of("colour") == ("plain", "perceptual")
    # K is largest where the claims and the positive control are; the negative checks get fewer
    assert d.models_of("capture") == d.models > d.check_models == d.models_of("null") == d.models_of("colour")
    assert demo_settings(models=7).check_models == 7  # --models sets every population's K
    both = demo_settings(models=7, check_models=3)
    assert (both.models_of("capture"), both.models_of("colour")) == (7, 3)
    sub = demo_settings(mechanisms=["null", "capture"])
    assert sub.mechanisms == ("capture", "null") and sub.methods_of("null") == ("plain", "perceptual")


# ------------------------------------------------------------------------------ the report
def _synthetic_result(quick=False):
    import pandas as pd

    from geoaudit._demo.plan import verdicts as _verdicts
    from geoaudit.audit import gls_test
    from geoaudit.demo import MECHANISMS, METHOD_LABELS

    rng = np.random.default_rng(0)
    cov = np.exp(rng.uniform(6, 11, 12))
    n = rng.integers(60, 200, 12)
    correct = np.round(np.clip(0.3 + 0.04 * np.log(cov) + rng.normal(0, 0.02, 12), 0, 1) * n).astype(int)
    acc = correct / n
    groups = pd.DataFrame({"group": [f"G{i:02d}" for i in range(12)], "n": n, "accuracy": acc, "covariate": cov,
                           "correct": correct})
    fit = gls_test(groups, min_group_size=10)
    betas = _synthetic_betas()
    comps = run_comparisons(betas, comparison_plan(ALL))
    rows = [{"group": g, "n": int(k), "accuracy": float(a), "covariate": float(c)}
            for g, k, a, c in zip(groups["group"], n, acc, cov)]
    mechs = {m: {"planted": MECHANISMS[m], "data": f"/x/{m}", "splits": {"test": 100},
                 "populations": {k: {"label": METHOD_LABELS[k], "n_models": 6, "beta_mean": float(np.mean(list(b.values()))),
                                     "beta_sd": 0.01, "betas": b, "intercept_mean": 0.3, "mean_accuracy": 0.6,
                                     "groups": rows}
                                 for k, b in betas[m].items()}}
             for m in betas}
    s = demo_settings(quick=quick)
    return {"quick": quick, "settings": {**s.__dict__, "perceptual_cost": "ssim"},
            "paper_settings": settings_table({**s.__dict__, "perceptual_cost": "ssim"}),
            "reference": {"mechanism": "capture", "model": "model_000", **fit.to_dict()},
            "mechanisms": mechs, "comparisons": comps, "verdicts": _verdicts(comps),
            "attacks": {"n_images": 4}, "timings_seconds": {"total": 1.0}}, groups, fit


def test_render_demo_holds_every_mechanism_the_comparisons_and_the_settings():
    import torch

    from geoaudit.report import plot_attack_grid, render_demo

    result, groups, fit = _synthetic_result()
    images = torch.rand(4, 3, 8, 8)
    grid = plot_attack_grid(images, {"FGSM": (images + 0.01).clamp(0, 1)}, n=2)
    assert len(grid.axes) == 2 * 3
    html, figs = render_demo(result, reference_groups=groups, reference_fit=fit,
                             attack_rows=[{"attack": "FGSM", "success rate": 0.5}])
    for title in ("Summary", "Comparisons", "Slopes per population", "Accuracy against GDP per population",
                  "Dataset &#x27;capture&#x27;", "Dataset &#x27;colour&#x27;", "Dataset &#x27;null&#x27;",
                  "Reference model", "Settings: the paper", "Attack quality", "Run"):
        assert f"<h2>{title}" in html, title
    assert "a check of the experiment rather than a claim, also tested alone" in html
    assert "Positive control: DETECTED" in html and "Negative checks: all 4 negative checks stayed silent" in html
    assert "Primary comparison: capture: perceptual &lt; pgd" in html
    assert "adjusted p" in html and "Holm" in html and "difference A - B" in html and "95% CI of difference" in html
    assert "QUICK RUN" not in html
    assert {"slopes_by_mechanism", "accuracy_by_mechanism", "accuracy_vs_gdp"} <= set(figs)
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in figs.values())
    assert html.count("data:image/png;base64,") == len(figs)


def test_demo_result_is_a_read_only_mapping():
    from geoaudit.demo import DemoResult

    r = DemoResult({"kind": "geoaudit-demo", "reference": {"beta": 0.5, "values": [1, 2]}})
    assert r["reference"]["beta"] == 0.5 and set(r) == {"kind", "reference"} and len(r) == 2
    assert r.to_dict() == {"kind": "geoaudit-demo", "reference": {"beta": 0.5, "values": [1, 2]}}
    with pytest.raises(TypeError):
        r["reference"]["beta"] = 1.0
    with pytest.raises(AttributeError):
        r.data = {}


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


def test_cli_help_states_the_presets_defaults_and_the_control_outside_holm(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = PRESETS["default"]
    assert f"default {d['models']} on capture, {d['check_models']} on colour and null" in text
    assert f"(default {d['check_models']}, or --models" in text
    assert f"images per dataset (default {d['n_images']})" in text
    assert f"pixels (default {d['image_size']};" in text and f"Algorithm 3 (default {d['epochs']})" in text
    assert f"{PRESETS['quick']['models']} models per population" in text
    # the positive control is tested alone; only the secondary comparisons are Holm-adjusted
    control, holm = text.index("positive control:"), text.index("secondary, adjusted by Holm")
    assert "alone at alpha 0.05" in text[control:holm] and "oracle" in text[control:holm]
    assert "oracle" not in text[holm:]


def test_cli_passes_check_models_to_run_demo(monkeypatch, tmp_path):
    import geoaudit.demo

    seen = {}
    monkeypatch.setattr(geoaudit.demo, "run_demo", lambda out, **kw: seen.update(kw))
    assert main(["demo", "--models", "6", "--check-models", "3", "--out", str(tmp_path / "x")]) == 0
    assert seen["models"] == 6 and seen["check_models"] == 3
    assert main(["demo", "--out", str(tmp_path / "y")]) == 0
    assert seen["models"] is None and seen["check_models"] is None  # the preset decides


def test_cli_bad_check_models_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--check-models", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'check_models'" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------ the quick run, end to end
@pytest.mark.slow
def test_quick_demo_report_holds_the_plan_and_its_results(quick_demo):
    out, rc, _, printed = quick_demo
    assert rc == 0
    html = (out / "report.html").read_text()
    assert "QUICK RUN" in html and "not evidence" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "geoaudit-demo" and report["quick"] is True
    assert list(report["mechanisms"]) == list(PRESETS["quick"]["mechanisms"])
    # the planted capture bias is found: the plain population's mean slope is positive
    assert report["mechanisms"]["capture"]["populations"]["plain"]["beta_mean"] > 0
    for mech in report["mechanisms"]:
        assert f"Dataset &#x27;{mech}&#x27;" in html
        pops = report["mechanisms"][mech]["populations"]
        assert set(pops) == {"plain", "pgd", "perceptual", "oracle"}
        for pop in pops.values():
            assert pop["n_models"] == len(pop["betas"]) == PRESETS["quick"]["models"]
            assert sorted(pop["betas"]) == sorted(pops["plain"]["betas"])  # same seeds: paired
    comps = {c["key"]: c for c in report["comparisons"]}
    prim = comps["capture: perceptual < pgd"]
    assert prim["role"] == "primary" and prim["test"] == "paired" and prim["p_adjusted"] == prim["pvalue"]
    pos = comps["capture: oracle < plain"]
    assert pos["role"] == "positive control" and pos["verdict"].split(":")[0] in ("DETECTED", "NOT DETECTED")
    secondary = [c for c in report["comparisons"] if c["family"] == "secondary"]
    assert [c["p_adjusted"] for c in secondary] == pytest.approx(holm_adjust([c["pvalue"] for c in secondary]))
    for c in report["comparisons"]:
        assert c["ci_low"] <= c["difference"] <= c["ci_high"] and 0 <= c["pvalue"] <= 1
    assert "Primary comparison" in html and "Positive control" in html and "adjusted p" in html
    assert {r["setting"] for r in report["paper_settings"]} >= {"Algorithm 2 rounds (T1)", "perceptual attack steps (N)"}
    # the oracle trains on the clean images plus capture-corrupted copies, as many steps as plain
    manifest = json.loads((out / "populations" / "capture" / "oracle" / "manifest.json").read_text())
    n_train = report["mechanisms"]["capture"]["splits"]["train"]
    assert manifest["weighted_dataset"]["size"] == (ORACLE_COPIES + 1) * n_train
    assert "capture-corrupted" in manifest["data"]["source"] and manifest["settings"]["samples_per_epoch"] == n_train
    assert manifest["settings"]["lr"] == report["settings"]["lr"] == PRESETS["quick"]["lr"]  # the demo's SGD step
    assert report["settings"]["perceptual_cost"] == "ssim"  # no PieAPP weights offline
    # defenses are evaluated adaptively (BPDA) as well as obliviously
    metrics = json.loads((out / "attacks" / "metrics.json").read_text())
    for d in metrics["attacks"].values():
        for v in d["defenses"].values():
            assert v["adaptive_success_rate"] is not None and v["oblivious_success_rate"] is not None
    assert re.search(r"\[\s*\d+ s\] \[2/5\] plain on 'capture' \(1/4\): training 3 models", printed)


@pytest.mark.slow
def test_rerun_resumes_and_says_so(quick_demo, capsys):
    out, _, first, _ = quick_demo
    before = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/*/model_*/weights.pt")}
    t = time.perf_counter()
    assert main(["--threads", "1", "demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    again = time.perf_counter() - t
    printed = capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in out.glob("populations/*/*/model_*/weights.pt")}
    assert before == after and len(before) == 4 * PRESETS["quick"]["models"]
    assert "training 3" not in printed and printed.count("already trained; reusing them") == 4
    assert "already built; reusing it" in printed
    assert again < first
    # the report's stage times add up every call on the folder, and show this call's apart
    report = json.loads((out / "report.json").read_text())
    assert report["runs"] == 2 and "over 2 calls" in printed
    assert report["timings_seconds"]["total"] > report["timings_this_run_seconds"]["total"]
    assert "seconds, all calls" in (out / "report.html").read_text()


@pytest.mark.slow
def test_other_settings_into_same_folder_are_refused(quick_demo, capsys):
    out, _, _, _ = quick_demo
    assert main(["demo", "--quick", "--models", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "models" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ populations in parallel processes
def test_populations_trained_in_worker_processes_equal_those_trained_here(tmp_path):
    """Two worker processes train the same populations, bit for bit, as this process does."""
    import torch

    from geoaudit._demo.parallel import PopulationJob, train_populations
    from geoaudit.data import build_geoshapes

    build_geoshapes(tmp_path / "data", n_images=120, image_size=24, n_classes=4, random_state=0)
    params = {"eps": 0.5, "step_size": 0.1, "steps": 2, "norm": "l2"}

    def jobs(where):
        common = {"n_models": 2, "epochs": 1, "arch": "small_cnn", "device": "cpu", "bn_samples": 64}
        return [PopulationJob(key=("d", "plain"), label="plain", data=str(tmp_path / "data"),
                              kwargs=dict(common, augment="plain", out_dir=str(where / "plain"))),
                PopulationJob(key=("d", "pgd"), label="PGD", data=str(tmp_path / "data"), attack=("pgd", params),
                              cost=2.0, kwargs=dict(common, augment="pgd", out_dir=str(where / "pgd"))),
                PopulationJob(key=("d", "oracle"), label="oracle", data=str(tmp_path / "data"), oracle=(1, 0),
                              kwargs=dict(common, augment="plain", out_dir=str(where / "oracle")))]

    said = []
    threads = torch.get_num_threads()
    here = train_populations(jobs(tmp_path / "here"), workers=1, threads=threads, say=said.append)
    there = train_populations(jobs(tmp_path / "there"), workers=2, threads=threads, say=said.append)
    assert set(here) == set(there) == {("d", "plain"), ("d", "pgd"), ("d", "oracle")}
    for key, (result, seconds) in there.items():
        assert seconds > 0 and result.method == key[1].replace("oracle", "plain")
        assert len(result.checkpoints) == 2 and result.manifest["stats"]["done"] == 2
        for a, b in zip(here[key][0].checkpoints, result.checkpoints):
            assert (a / "weights.pt").read_bytes() == (b / "weights.pt").read_bytes()
    # the workers' progress reaches the caller, one line per model
    assert sum("trained" in m for m in said) == 2 * 6


def test_jobs_validation_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    from geoaudit.demo import run_demo

    with pytest.raises(InputError, match=r"'jobs'.*\[1, inf\]"):
        run_demo(tmp_path / "api", jobs=0)
    assert not (tmp_path / "api").exists()
    assert main(["demo", "--jobs", "0", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--jobs" in err and "Traceback" not in err
    assert not (tmp_path / "cli").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_worker_processes_and_a_rerun_resumes(tmp_path):
    """A real SIGINT to the process group, as a terminal's Ctrl-C sends: the parent and its workers
    stop within seconds with the one-line message, and the same command finishes the run."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = ["--threads", "1", "demo", "--quick", "--models", "2", "--epochs", "1", "--n-images", "1200",
            "--out", str(out), "--device", "cpu", "--jobs", "2"]
    p = subprocess.Popen([sys.executable, "-m", "geoaudit.cli", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, GEOAUDIT_PROGRESS="0"),
                         # a terminal's default disposition, even where CI runs the tests in the background
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in p.stdout:  # interrupt once a worker has finished a model and goes on training
        lines.append(line)
        if "model_000 trained" in line:
            break
    assert any("in 2 processes at once" in x for x in lines), "".join(lines)
    t = time.perf_counter()
    os.killpg(p.pid, signal.SIGINT)
    rest, err = p.communicate(timeout=120)
    stopped = time.perf_counter() - t
    assert p.returncode == 130, err
    assert "interrupted; finished work is kept, re-run the same command to resume" in err
    assert "Traceback" not in err and "Traceback" not in rest
    assert stopped < 30  # the workers stop too; queued populations are not started
    assert "[3/5]" not in rest
    kept = {q: q.stat().st_mtime_ns for q in out.glob("populations/*/*/model_*/weights.pt")}
    assert kept  # the model whose line was printed
    assert main(argv) == 0
    assert {q: q.stat().st_mtime_ns for q in kept} == kept  # reused, not retrained
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["jobs"] == 2
    assert all(p_["n_models"] == 2 for p_ in report["mechanisms"]["capture"]["populations"].values())


def test_a_failing_population_lets_the_running_one_finish_and_raises_its_error(tmp_path):
    import torch

    from geoaudit._demo.parallel import PopulationJob, train_populations
    from geoaudit.data import build_geoshapes

    build_geoshapes(tmp_path / "data", n_images=120, image_size=24, n_classes=4, random_state=0)
    (tmp_path / "a_file").write_text("someone's file")
    common = {"n_models": 1, "epochs": 1, "arch": "small_cnn", "device": "cpu", "bn_samples": 64, "augment": "plain"}
    jobs = [PopulationJob(key=("d", "ok"), label="ok", data=str(tmp_path / "data"), cost=2.0,
                          kwargs=dict(common, out_dir=str(tmp_path / "ok"))),
            PopulationJob(key=("d", "bad"), label="bad", data=str(tmp_path / "data"),
                          kwargs=dict(common, out_dir=str(tmp_path / "a_file")))]
    said = []
    with pytest.raises(InputError, match="is a file"):  # the worker's own error, not a pool error
        train_populations(jobs, workers=2, threads=torch.get_num_threads(), say=said.append)
    assert any("letting the 1 running finish" in m for m in said)
    assert (tmp_path / "ok" / "model_000" / "weights.pt").exists()  # nothing lost
    assert (tmp_path / "a_file").read_text() == "someone's file"
