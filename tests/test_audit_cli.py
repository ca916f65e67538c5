"""`geoaudit audit` and `geoaudit compare` through geoaudit.cli.main: the contract, every bad
input (exit 2, one clear message, nothing written), and auditing checkpoints directly."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geoaudit.cli import main

ROOT = Path(__file__).resolve().parents[1]
COLS = ["--group", "country_iso3", "--covariate", "gdp_per_capita_usd"]


def _make_predictions():
    spec = importlib.util.spec_from_file_location("make_predictions", ROOT / "examples" / "make_predictions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_predictions


@pytest.fixture(scope="module")
def preds():
    return _make_predictions()(n_countries=14, n_models=3, slope=0.3, seed=5)


@pytest.fixture
def csv(tmp_path, preds):
    p = tmp_path / "preds.csv"
    preds.to_csv(p, index=False)
    return p


def _audit(path, out, *extra):
    return main(["audit", str(path), *COLS, "--out", str(out), *extra])


def test_audit_writes_the_report_contract(tmp_path, csv, preds, capsys):
    out = tmp_path / "rep"
    assert _audit(csv, out, "--min-group-size", "30") == 0
    stdout = capsys.readouterr().out
    assert "seed0" in stdout and "population of 3 model(s)" in stdout and "report.json" in stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"] == {**rep["settings"], "group": "country_iso3", "covariate": "gdp_per_capita_usd",
                               "log_covariate": True, "min_group_size": 30, "variance": "random-effects",
                               "tau2_method": "REML", "paper_method": False}
    assert rep["format_version"] == 2 and "Knapp-Hartung" in rep["settings"]["method"]
    assert "differs from the paper" in rep["settings"]["why_not_paper"] and rep["assumptions"]
    g = rep["groups"][0]
    assert {"group", "n", "accuracy", "covariate"} <= set(g)
    assert g["n"] == int((preds["country_iso3"] == g["group"]).sum())  # pooled over the 3 models
    assert [m["model"] for m in rep["models"]] == ["seed0", "seed1", "seed2"]
    for m in rep["models"]:
        assert {"model", "beta", "intercept", "bse", "fvalue", "df_num", "df_denom", "pvalue", "n_groups", "tau2",
                "i2", "q", "q_pvalue", "influence"} <= set(m)
        assert [c["min_group_size"] for c in m["influence"]["cuts"]] == [20, 30, 50, 100]
        assert m["df_num"] == 1 and m["df_denom"] == m["n_groups"] - 2
    per_model = preds.groupby(["model", "country_iso3"]).size().groupby("country_iso3").first()
    assert rep["dropped_groups"] == sorted(per_model[per_model < 30].index)
    assert rep["population"]["n_models"] == 3
    assert rep["population"]["beta_mean"] == pytest.approx(np.mean([m["beta"] for m in rep["models"]]))
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and (out / "accuracy_vs_covariate.png").exists()
    assert (out / "world_map.png").exists()  # groups are ISO3 codes


def test_audit_parquet_single_model_and_options(tmp_path, preds):
    one = preds[preds["model"] == "seed1"].drop(columns="model").rename(
        columns={"label": "y", "prediction": "yhat"})
    one = one.assign(log_gdp=np.log(one["gdp_per_capita_usd"]))
    p = tmp_path / "one.parquet"
    one.to_parquet(p)
    out = tmp_path / "rep"
    code = main(["audit", str(p), "--group", "country_iso3", "--covariate", "log_gdp", "--label-col", "y",
                 "--pred-col", "yhat", "--no-log-covariate", "--variance", "binomial", "--min-group-size", "20",
                 "--out", str(out)])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["models"]) == 1 and rep["settings"]["log_covariate"] is False
    assert rep["settings"]["variance"] == "binomial" and rep["population"]["beta_sd"] is None
    # the same slope as regressing on ln GDP with the log taken by the audit
    out2 = tmp_path / "rep2"
    assert main(["audit", str(p), *COLS, "--label-col", "y", "--pred-col", "yhat", "--variance", "binomial",
                 "--min-group-size", "20", "--out", str(out2)]) == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert rep2["models"][0]["beta"] == pytest.approx(rep["models"][0]["beta"], rel=1e-6)


def _bad(tmp_path, frame, *extra, name="bad.csv"):
    p = tmp_path / name
    frame.to_csv(p, index=False)
    return p


@pytest.mark.parametrize("case, message", [
    ("missing_column", "has no column 'gdp_per_capita_usd'; columns present: 'image_id', 'country_iso3'"),
    ("few_groups", "the GLS test needs at least 3 groups"),
    ("nonpositive", "it is <= 0 for groups"),
    ("nan_label", "column 'prediction' has 1 missing (NaN) value(s)"),
    ("nan_covariate", "column 'gdp_per_capita_usd' is missing (NaN) for"),
    ("constant", "there is no slope to fit"),
    ("bad_variance", "The '--variance' parameter of geoaudit audit must be one of 'random-effects', 'hc3', 'paper', 'binomial'"),
    ("no_file", "does not exist"),
    ("no_group", "--group is required with a predictions file"),
    ("model_col_missing", "has no column 'run'"),
    ("wrong_format", "must be CSV"),
])
def test_audit_bad_input_exits_2_with_one_message_and_writes_nothing(tmp_path, preds, capsys, case, message):
    df = preds.copy()
    args = []
    if case == "missing_column":
        df = df.drop(columns="gdp_per_capita_usd")
    elif case == "few_groups":
        args = ["--min-group-size", "100000"]
    elif case == "nonpositive":
        df.loc[df["country_iso3"] == df["country_iso3"].iloc[0], "gdp_per_capita_usd"] = 0.0
    elif case == "nan_label":
        df.loc[7, "prediction"] = np.nan
    elif case == "nan_covariate":
        df.loc[3, "gdp_per_capita_usd"] = np.nan
    elif case == "constant":
        df["gdp_per_capita_usd"] = 1234.5
    elif case == "bad_variance":
        args = ["--variance", "sandwich"]
    elif case == "model_col_missing":
        args = ["--model-col", "run"]
    path = _bad(tmp_path, df, name="bad.txt.json" if case == "wrong_format" else "bad.csv")
    if case == "no_file":
        path = tmp_path / "nope.csv"
    out = tmp_path / "out"
    if case == "no_group":
        code = main(["audit", str(path), "--covariate", "gdp_per_capita_usd", "--out", str(out)])
    else:
        code = _audit(path, out, *args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("geoaudit audit: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def _two_reports(tmp_path, make, slope_a=0.0, slope_b=0.4, n_models=4):
    """Two population reports (report.json only: the audit CLI itself is tested above)."""
    from geoaudit._io import atomic_write_json
    from geoaudit.audit import audit_predictions

    outs = []
    for name, slope in (("fair", slope_a), ("plain", slope_b)):
        df = make(n_countries=12, n_models=n_models, slope=slope, prefix=f"{name}_seed", seed=9)
        rep = audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", min_group_size=20)
        atomic_write_json(tmp_path / name / "report.json", rep.to_dict())
        outs.append(tmp_path / name / "report.json")
    return outs


def test_compare_contract_and_tests(tmp_path, capsys):
    a, b = _two_reports(tmp_path, _make_predictions())
    capsys.readouterr()
    out = tmp_path / "cmp" / "compare.json"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # the populations share seeds (fair_seed0 <-> plain_seed0 ...): the default test pairs them
    assert "paired t-test (chosen by 'auto'" in text and "H1: mean beta of A < mean beta of B" in text
    res = json.loads(out.read_text())
    assert {"test", "alternative", "statistic", "df", "p_value", "mean_a", "mean_b", "n_a", "n_b"} <= set(res)
    assert res["test"] == "paired" and res["alternative"] == "less" and res["n_a"] == res["n_b"] == 4
    assert res["mean_a"] < res["mean_b"] and res["p_value"] < 0.05
    assert (tmp_path / "cmp" / "compare.html").exists() and (tmp_path / "cmp" / "compare_betas.png").exists()
    for test in ("welch", "student", "paired", "permutation"):
        o = tmp_path / f"{test}.json"
        assert main(["compare", str(a), str(b), "--test", test, "--alternative", "two-sided", "--out", str(o)]) == 0
        r = json.loads(o.read_text())
        assert r["test"] == test and r["alternative"] == "two-sided"
        assert (r["df"] is None) == (test == "permutation")
    assert json.loads((tmp_path / "paired.json").read_text())["df"] == 3
    assert len(json.loads((tmp_path / "paired.json").read_text())["pairs"]) == 4


def test_compare_bad_input(tmp_path, csv, capsys):
    a, b = _two_reports(tmp_path, _make_predictions(), n_models=3)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"format": "something-else"}))
    other = json.loads(b.read_text())
    other["models"] = [dict(m, model=f"x{i}y") for i, m in enumerate(other["models"])][:2]
    other_p = tmp_path / "other" / "report.json"
    other_p.parent.mkdir()
    other_p.write_text(json.dumps(other))
    cases = [
        ([str(a), str(b), "--test", "anova"], "The '--test' parameter of geoaudit compare must be one of 'welch'"),
        ([str(a), str(b), "--alternative", "lower"], "The '--alternative' parameter"),
        ([str(a), str(csv)], "is not a geoaudit audit report (not valid JSON"),
        ([str(a), str(odd)], "is not a geoaudit audit report (expected \"format\""),
        ([str(a), str(tmp_path / "missing.json")], "does not exist"),
        ([str(a), str(other_p), "--test", "paired"], "cannot be matched one to one"),
    ]
    for argv, message in cases:
        out = tmp_path / "c.json"
        code = main(["compare", *argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err and "Traceback" not in err, (argv, err)
        assert not out.exists()


def test_audit_needs_exactly_one_source(tmp_path, csv, capsys):
    assert main(["audit", *COLS, "--out", str(tmp_path / "o")]) == 2
    assert "Give exactly one of PREDICTIONS" in capsys.readouterr().err
    assert main(["audit", str(csv), "--models", str(tmp_path), *COLS, "--out", str(tmp_path / "o")]) == 2
    assert main(["audit", "--models", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--data DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tiny_geo(tmp_path_factory):
    """A 'test' split with 4 countries x 24 tiny images, saved with save_to_disk, and two checkpoints."""
    import datasets
    import torch

    from geoaudit.train import build_model, make_config, save_checkpoint

    root = tmp_path_factory.mktemp("geo")
    rng = np.random.default_rng(0)
    countries = [("USA", 80000.0), ("BRA", 9000.0), ("IND", 2400.0), ("DEU", 52000.0)]
    rows = {"image": [], "label": [], "image_id": [], "country_iso3": [], "gdp_per_capita_usd": []}
    for c, g in countries:
        for i in range(24):
            rows["image"].append(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
            rows["label"].append(int(rng.integers(0, 3)))
            rows["image_id"].append(f"{c}{i}")
            rows["country_iso3"].append(c)
            rows["gdp_per_capita_usd"].append(g)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                               "image_id": datasets.Value("string"), "country_iso3": datasets.Value("string"),
                               "gdp_per_capita_usd": datasets.Value("float64")})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=feats)}).save_to_disk(str(root / "data"))
    for seed, classes in ((0, ["a", "b", "c"]), (1, ["c", "a", "b"])):
        torch.manual_seed(seed)
        model, _ = build_model("mlp7", num_classes=3, in_channels=3, image_size=8)
        cfg = make_config(arch="mlp7", class_names=classes, in_channels=3, image_size=8,
                          training={"seed": seed, "method": "plain"})
        save_checkpoint(root / "models" / f"plain_seed{seed}", model, cfg)
    return root


def test_audit_checkpoints_directly(tmp_path, tiny_geo, capsys):
    out = tmp_path / "rep"
    code = main(["audit", "--models", str(tiny_geo / "models"), "--data", str(tiny_geo / "data"), "--split", "test",
                 *COLS, "--min-group-size", "10", "--device", "cpu", "--batch-size", "16", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    assert [m["model"] for m in rep["models"]] == ["plain_seed0", "plain_seed1"]
    assert [m["seed"] for m in rep["models"]] == [0, 1]
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == 2 * 96 and set(pred["model"]) == {"plain_seed0", "plain_seed1"}
    # predictions of the model with permuted class names are mapped onto the dataset's order
    from geoaudit.audit import predict
    from geoaudit.data import load_geo_dataset
    from geoaudit.train import load_model

    ds = load_geo_dataset(tiny_geo / "data", "test")
    m1, _ = load_model(tiny_geo / "models" / "plain_seed1")
    raw = predict(m1, ds, image_size=8, batch_size=32)
    names_model, names_data = ["c", "a", "b"], ["a", "b", "c"]
    expect = [names_data.index(names_model[k]) for k in raw]
    assert pred[pred["model"] == "plain_seed1"]["prediction"].tolist() == expect
    # re-audit the written predictions: same betas
    out2 = tmp_path / "again"
    assert main(["audit", str(out / "predictions.parquet"), *COLS, "--min-group-size", "10", "--out", str(out2)]) == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert [m["beta"] for m in rep2["models"]] == pytest.approx([m["beta"] for m in rep["models"]])
    # one checkpoint with --model
    out3 = tmp_path / "one"
    assert main(["audit", "--model", str(tiny_geo / "models" / "plain_seed0"), "--data", str(tiny_geo / "data"),
                 "--min-group-size", "10", "--device", "cpu", "--out", str(out3)]) == 0
    assert len(json.loads((out3 / "report.json").read_text())["models"]) == 1


def test_audit_checkpoints_bad_input(tmp_path, tiny_geo, capsys):
    out = tmp_path / "rep"
    code = main(["audit", "--models", str(tmp_path), "--data", str(tiny_geo / "data"), "--out", str(out)])
    assert code == 2 and "No geoaudit checkpoints" in capsys.readouterr().err
    code = main(["audit", "--models", str(tiny_geo / "models"), "--data", str(tiny_geo / "data"), "--split", "val",
                 "--device", "cpu", "--out", str(out)])
    assert code == 2 and "has no split 'val'" in capsys.readouterr().err
    code = main(["audit", "--models", str(tiny_geo / "models"), "--data", str(tiny_geo / "data"),
                 "--device", "cpu", "--out", str(out)])  # 24 images per country < 50
    assert code == 2 and "needs at least 3 groups" in capsys.readouterr().err
    assert not out.exists()


def test_drop_missing_covariate_leaves_those_groups_out(tmp_path, preds):
    df = preds.copy()
    first = df["country_iso3"].iloc[0]
    df.loc[df["country_iso3"] == first, "gdp_per_capita_usd"] = np.nan
    p = tmp_path / "p.parquet"
    df.to_parquet(p)
    out = tmp_path / "o"
    assert _audit(p, out, "--min-group-size", "20") == 2 and not out.exists()
    from geoaudit.audit import audit_predictions

    rep = audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", min_group_size=20,
                            drop_missing_covariate=True)
    assert list(rep.settings["groups_without_covariate"]) == [first]
    assert first not in set(rep.groups["group"])


def test_audit_paper_method_is_named_and_reproduces_the_paper_weights(tmp_path, csv, capsys):
    out = tmp_path / "rep"
    assert _audit(csv, out, "--min-group-size", "30", "--variance", "paper") == 0
    stdout = capsys.readouterr().out
    assert "variance=paper" in stdout and "the paper's choice" in stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["settings"]["paper_method"] is True and "why_not_paper" not in rep["settings"]
    html = (out / "report.html").read_text()
    assert "This is the paper&#x27;s method" in html and "Assumptions" in html


def test_audit_refuses_duplicate_rows_unless_asked(tmp_path, preds, capsys):
    df = pd.concat([preds, preds.iloc[:5]], ignore_index=True)
    p = tmp_path / "dup.csv"
    df.to_csv(p, index=False)
    out = tmp_path / "o"
    assert _audit(p, out, "--min-group-size", "20") == 2
    err = capsys.readouterr().err
    assert "5 row(s) repeat an 'image_id'" in err and "pass --deduplicate" in err and err.count("\n") == 1
    assert not out.exists()
    assert _audit(p, out, "--min-group-size", "20", "--deduplicate") == 0
    assert "dropped 5 duplicate row(s)" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["settings"]["duplicate_rows_dropped"] == 5


def test_drop_missing_covariate_message_matches_the_report(tmp_path, preds, capsys):
    df = preds.copy()
    countries = sorted(df["country_iso3"].unique())
    df.loc[df["country_iso3"] == countries[0], "gdp_per_capita_usd"] = np.nan
    df.loc[df.index[df["country_iso3"] == countries[1]][:3], "gdp_per_capita_usd"] = np.nan
    p = tmp_path / "p.csv"
    df.to_csv(p, index=False)
    out = tmp_path / "o"
    assert _audit(p, out, "--min-group-size", "20") == 2
    assert "pass --drop-missing-covariate" in capsys.readouterr().err
    assert _audit(p, out, "--min-group-size", "20", "--drop-missing-covariate") == 0
    stdout = capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    n_rows = int(df["gdp_per_capita_usd"].isna().sum())
    assert f"dropped {n_rows} row(s) without a covariate value" in stdout
    assert f"groups left out entirely: {countries[0]}" in stdout
    assert f"groups kept with their other rows: {countries[1]}" in stdout
    groups = {g["group"]: g for g in rep["groups"]}
    assert countries[0] not in groups and countries[1] in groups
    assert rep["settings"]["rows_without_covariate"] == n_rows
