"""Populations: the population verdict, comparisons (auto/paired/Welch, CI, Holm, degenerate
input), report reading, the class-adjusted audit, and small versions of the size checks of
benchmarks/calibration_populations.py (tolerances: 3.5 Monte Carlo SE)."""
import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from geoaudit._errors import InputError
from geoaudit._results import Result
from geoaudit.audit import (
    CompareResult,
    MultiCompareResult,
    PopulationSummary,
    PopulationVerdict,
    audit_predictions,
    class_adjusted_accuracy,
    compare_many,
    compare_populations,
    gls_test,
    holm,
    load_report,
    mean_accuracy_table,
    mean_accuracy_variance,
    report_betas,
)
from geoaudit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("calibration_populations",
                                                  ROOT / "benchmarks" / "calibration_populations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _within(rate, nominal, reps, k=3.5):
    """|rate - nominal| within k Monte Carlo SE of a binomial proportion over ``reps`` draws."""
    return abs(rate - nominal) <= k * math.sqrt(nominal * (1 - nominal) / reps)


# ----------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("a, b", [
    ([0.1] * 3, [0.2] * 3),
    ([0.1, 0.1 + 1e-17, 0.1 - 2e-17], [0.2, 0.2 + 3e-17, 0.2]),
    ([1e-9, 1e-9 * (1 + 1e-15), 1e-9], [2e-9] * 3),  # tiny betas: the tolerance is relative
])
def test_constant_betas_are_refused_not_given_a_huge_t(a, b):
    for test in ("welch", "student", "auto"):
        with pytest.raises(InputError, match="constant within each population"):
            compare_populations(a, b, test=test)
    with pytest.raises(InputError, match="paired difference of betas is the same"):
        compare_populations(a, b, test="paired")
    # the permutation test is defined: all C(6, 3) relabellings, the observed one the most extreme
    r = compare_populations(a, b, test="permutation")
    assert r.exact and r.pvalue == pytest.approx(1 / 20)


def test_small_but_real_spread_is_still_tested():
    r = compare_populations([1e-9, 1.1e-9, 0.9e-9], [2e-9, 2.1e-9, 1.9e-9], test="welch")
    assert r.statistic == pytest.approx(st.ttest_ind([1e-9, 1.1e-9, 0.9e-9], [2e-9, 2.1e-9, 1.9e-9],
                                                     equal_var=False).statistic)


def test_auto_pairs_when_seeds_are_shared_and_names_the_test():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 1, 8)
    a = {f"dro_seed{i}": 0.1 + s + rng.normal(0, 0.1) for i, s in enumerate(seed_effect)}
    b = {f"plain_seed{i}": 0.3 + s + rng.normal(0, 0.1) for i, s in enumerate(seed_effect)}
    r = compare_populations(a, b)
    assert r.test == "paired" and r.requested_test == "auto" and r.df == 7
    assert "paired t-test (chosen by 'auto'" in r.summary()
    ref = st.ttest_rel(list(a.values()), list(b.values()), alternative="less")
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (-math.inf, pytest.approx(ci.high))
    assert r.to_dict()["ci_low"] is None  # -inf in JSON
    # the same betas without names cannot be paired: Welch
    w = compare_populations(list(a.values()), list(b.values()))
    assert w.test == "welch" and w.pvalue > r.pvalue and "do not share seeds" in w.summary()
    # seeds given explicitly pair too
    s = compare_populations(list(a.values()), list(b.values()), seeds_a=range(8), seeds_b=range(8))
    assert s.test == "paired" and s.pairing == "seed"


def test_two_sided_ci_of_the_difference_matches_the_formulas():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 12), rng.normal(0.5, 2, 9)
    r = compare_populations(a, b, test="welch", alternative="two-sided", alpha=0.1)
    va, vb = a.var(ddof=1) / 12, b.var(ddof=1) / 9
    df = (va + vb) ** 2 / (va ** 2 / 11 + vb ** 2 / 8)
    half = st.t.ppf(0.95, df) * math.sqrt(va + vb)
    assert r.difference == pytest.approx(a.mean() - b.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx((r.difference - half, r.difference + half))
    p = compare_populations(a[:9], b, test="paired", alternative="two-sided")
    d = a[:9] - b
    half = st.t.ppf(0.975, 8) * d.std(ddof=1) / 3
    assert (p.ci_low, p.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert compare_populations(a, b, test="permutation", n_resamples=99).ci_low is None


def test_compare_result_follows_the_result_protocol():
    r = compare_populations([0.1, 0.2, 0.15], [0.3, 0.5, 0.4])
    assert isinstance(r, Result) and isinstance(r, CompareResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.pvalue = 0.5
    with pytest.warns(DeprecationWarning, match="p_value is deprecated"):
        assert r.p_value == r.pvalue
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["pvalue"] == d["p_value"] == r.pvalue and d["test"] == "welch" and d["statistic"] == r.statistic
    assert "<pre>" in r._repr_html_()


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert len(holm([])) == 0


def test_compare_many_primary_unadjusted_others_holm():
    rng = np.random.default_rng(3)
    pops = {name: {f"s{i}": mu + rng.normal(0, 0.01) for i in range(6)}
            for name, mu in (("perceptual", 0.01), ("pgd", 0.03), ("plain", 0.04), ("jpeg", 0.035))}
    m = compare_many(pops, primary=("perceptual", "pgd"))
    assert isinstance(m, MultiCompareResult) and isinstance(m, Result)
    assert (m.primary.label_a, m.primary.label_b) == ("perceptual", "pgd")
    assert m.primary.pvalue == compare_populations(pops["perceptual"], pops["pgd"]).pvalue
    names = [(r.label_a, r.label_b) for r in m.secondary]
    assert len(names) == 5 and ("perceptual", "pgd") not in names
    assert m.adjusted_pvalues == pytest.approx(tuple(holm([r.pvalue for r in m.secondary])))
    assert all(r.test == "paired" for r in m.results)  # every population has seeds s0..s5
    one = compare_many(pops, primary=("perceptual", "pgd"), others=[("pgd", "plain")])
    assert one.adjusted_pvalues == (one.secondary[0].pvalue,)
    d = m.to_dict()
    json.dumps(d, allow_nan=False)
    assert len(d["secondary"]) == 5 and "pvalue_holm" in d["secondary"][0]
    assert "Holm-adjusted" in m.summary()
    with pytest.raises(InputError, match="primary comparison of compare_many must be a pair"):
        compare_many(pops, primary=("perceptual", "nope"))


# ----------------------------------------------------------------------------- reports and CLI
def _report(tmp_path, name, betas, *, version=1, seeds=None):
    models = []
    for i, (model, beta) in enumerate(betas):
        m = {"model": model, "beta": beta}
        m.update({"p_value": 0.5, "f_stat": 1.0, "se": 0.01, "t_stat": 1.0} if version == 1 else
                 {"pvalue": 0.5, "fvalue": 1.0, "bse": 0.01, "tvalue": 1.0})
        if seeds is not None:
            m["seed"] = seeds[i]
        models.append(m)
    rep = {"format": "geoaudit-audit-report", "format_version": version,
           "settings": {"group": "country_iso3", "covariate": "gdp", "log_covariate": True}, "models": models}
    path = tmp_path / name / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rep))
    return path


def test_load_report_reads_both_key_spellings(tmp_path):
    for version in (1, 2):
        rep = load_report(_report(tmp_path, f"v{version}", [("a", 0.1), ("b", 0.2)], version=version))
        m = rep["models"][0]
        assert m["pvalue"] == m["p_value"] == 0.5 and m["bse"] == m["se"] and m["fvalue"] == m["f_stat"]
        assert m["tvalue"] == m["t_stat"] == 1.0
        assert report_betas(rep) == {"a": 0.1, "b": 0.2}


def test_duplicate_model_names_are_refused_not_merged(tmp_path):
    path = _report(tmp_path, "dup", [("m", 0.1), ("m", 0.2), ("k", 0.3)])
    with pytest.raises(InputError, match="lists model\\(s\\) 'm' more than once"):
        load_report(path)
    with pytest.raises(InputError, match="more than once"):
        report_betas({"models": [{"model": "m", "beta": 0.1}, {"model": "m", "beta": 0.2}]})


def test_cli_compare_degenerate_and_one_model_reports_give_one_line(tmp_path, capsys):
    one_a = _report(tmp_path, "oa", [("a", 0.1)])
    one_b = _report(tmp_path, "ob", [("b", 0.2)])
    const_a = _report(tmp_path, "ca", [("s0", 0.1), ("s1", 0.1), ("s2", 0.1 + 1e-17)])
    const_b = _report(tmp_path, "cb", [("t0", 0.2), ("t1", 0.2), ("t2", 0.2)])
    dup = _report(tmp_path, "dup", [("m", 0.1), ("m", 0.2)])
    cases = [
        ([one_a, one_b, "--test", "permutation"], "needs at least 2 per population"),
        ([one_a, one_b], "needs at least 2 per population"),
        ([const_a, const_b, "--test", "welch"], "constant within each population"),
        ([const_a, dup], "more than once"),
        ([const_a], "at least two reports"),
    ]
    for argv, message in cases:
        out = tmp_path / "c.json"
        code = main(["compare", *map(str, argv), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
        assert not out.exists()


def test_cli_compare_several_reports_primary_and_holm(tmp_path, capsys):
    rng = np.random.default_rng(4)
    paths = [_report(tmp_path, name, [(f"{name}_seed{i}", mu + rng.normal(0, 0.01)) for i in range(5)])
             for name, mu in (("perceptual", 0.0), ("pgd", 0.02), ("plain", 0.03))]
    out = tmp_path / "many.json"
    assert main(["compare", *map(str, paths), "--primary", "perceptual,plain", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "primary comparison: perceptual vs plain" in text and "Holm-adjusted" in text
    d = json.loads(out.read_text())
    assert d["format"] == "geoaudit-compare-many" and d["primary"]["test"] == "paired"
    assert [(s["label_a"], s["label_b"]) for s in d["secondary"]] == [("perceptual", "pgd"), ("pgd", "plain")]
    assert (tmp_path / "many.html").exists()
    code = main(["compare", *map(str, paths), "--primary", "perceptual,nope"])
    assert code == 2 and "--primary must name two of the populations" in capsys.readouterr().err


# ----------------------------------------------------------------------------- population verdict
def _population_frame(rng, *, n_models=4, m=24, beta=0.0, tau=0.05):
    x = rng.uniform(np.log(300), np.log(60000), m)
    n = rng.integers(60, 400, m)
    u = rng.normal(0, tau, m)
    rows = []
    for k in range(n_models):
        for i in range(m):
            p = np.clip(0.7 + beta * (x[i] - x.mean()) + u[i] + rng.normal(0, 0.02), 0.05, 0.95)
            correct = rng.random(n[i]) < p
            rows.append(pd.DataFrame({"country": f"C{i:02d}", "gdp": np.exp(x[i]), "label": 1,
                                      "prediction": np.where(correct, 1, 0), "model": f"seed{k}"}))
    return pd.concat(rows, ignore_index=True)


def test_population_verdict_is_one_test_on_the_mean_accuracy():
    rep = audit_predictions(_population_frame(np.random.default_rng(5), beta=0.03), group="country",
                            covariate="gdp", min_group_size=20)
    pop = rep.population
    assert isinstance(pop, PopulationSummary) and isinstance(pop.verdict, PopulationVerdict)
    v = pop.verdict
    df = _population_frame(np.random.default_rng(5), beta=0.03)
    parts = {k: g for k, g in df.groupby("model", sort=False)}
    var = mean_accuracy_variance(parts, group="country", label_col="label", pred_col="prediction")
    assert var is not None and v.image_agreement
    table = mean_accuracy_table(rep.model_groups, min_group_size=20, variance=var)
    assert ((table["n"] >= table["n_images"]) & (table["n"] <= 4 * table["n_images"])).all()
    fit = gls_test(table[["group", "n", "accuracy", "covariate"]], min_group_size=1, variance=rep.settings["variance"])
    assert v.beta == pytest.approx(fit.beta) and v.n_models == 4 and v.n_groups == len(table)
    assert v.beta == pytest.approx(pop.beta_mean, rel=0.1)  # about the mean of the models' betas
    assert v.ci_low < v.beta < v.ci_high and v.significant == (v.pvalue < 0.05)
    assert pop.significant == v.significant
    d = rep.to_dict()["population"]
    json.dumps(d, allow_nan=False)
    assert d["verdict"]["pvalue"] == pytest.approx(v.pvalue) and d["n_significant"] == pop.n_significant
    assert "population verdict" in pop.summary() and "a count, not a verdict" in pop.summary()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pop.verdict = None
    single = audit_predictions(_population_frame(np.random.default_rng(6), n_models=1), group="country",
                               covariate="gdp", min_group_size=20)
    assert single.population.verdict is None and single.to_dict()["population"]["verdict"] is None


def test_population_verdict_size_beats_the_vote():
    """Shared test set, correlated models, tau = 0.05, no GDP effect (a small version of the benchmark)."""
    b = _bench()
    rng = np.random.default_rng(7)
    reps = 1500
    acc, n, x = b.sim_population(rng, reps, K=20, tau=0.0, agree=0.3)
    mean, n_eff, _ = b.verdict_table(acc.mean(1), n, 20, 0.3, rng)
    new = np.mean(b.test_re_kh(mean, b.binomial_var(mean, n_eff), x) < 0.05)
    acc, n, x = b.sim_population(rng, reps, K=5, tau=0.05, agree=0.6)
    vote_paper = np.mean((b.test_paper(acc, n, x) < 0.05).sum(-1) > 2.5)
    assert _within(new, 0.05, reps), new
    assert vote_paper > 0.05  # the old vote's false alarms (0.06-0.09 measured)


def test_mean_accuracy_variance_from_image_agreement():
    rng = np.random.default_rng(12)
    n = 200
    base = pd.DataFrame({"image_id": [f"i{j}" for j in range(n)], "g": np.repeat(["a", "b"], n // 2),
                         "label": 1, "prediction": (rng.random(n) < 0.7).astype(int)})
    same = {"m0": base, "m1": base.copy()}  # models agreeing on every image: one model's variance
    v = mean_accuracy_variance(same, group="g", label_col="label", pred_col="prediction")
    c = base["prediction"].to_numpy().astype(float)
    assert v["a"] == pytest.approx(c[: n // 2].var(ddof=1) / (n // 2))
    other = base.assign(prediction=(rng.random(n) < 0.7).astype(int))
    shuffled = other.sample(frac=1, random_state=0)  # matched by image_id, not position
    v2 = mean_accuracy_variance({"m0": base, "m1": shuffled}, group="g", label_col="label", pred_col="prediction")
    mean_c = (c + other["prediction"].to_numpy()) / 2
    assert v2["b"] == pytest.approx(mean_c[n // 2:].var(ddof=1) / (n // 2))
    assert v2["b"] < v["b"]  # independent models: a smaller variance of the mean
    no_ids = {"m0": base.drop(columns="image_id"), "m1": other.drop(columns="image_id")}
    v3 = mean_accuracy_variance(no_ids, group="g", label_col="label", pred_col="prediction")
    assert v3.to_numpy() == pytest.approx(v2.to_numpy())  # matched by position
    assert mean_accuracy_variance({"m0": base, "m1": base.iloc[:-1]}, group="g", label_col="label",
                                  pred_col="prediction") is None


# ----------------------------------------------------------------------------- class adjustment
def test_class_adjusted_accuracy_by_hand():
    # group a: class 0 2/2 right, class 1 0/2; group b: class 0 1/1, class 1 1/3
    y = [0, 0, 1, 1, 0, 1, 1, 1]
    yhat = [0, 0, 0, 0, 0, 1, 0, 0]
    g = ["a"] * 4 + ["b"] * 4
    t = class_adjusted_accuracy(y, yhat, g, prior_strength=1.0)
    w = np.array([3, 5]) / 8
    p_c = np.array([3 / 3, 1 / 5])
    pa = (np.array([2, 0]) + p_c) / (np.array([2, 2]) + 1)
    pb = (np.array([1, 1]) + p_c) / (np.array([1, 3]) + 1)
    assert t["accuracy"].tolist() == pytest.approx([pa @ w, pb @ w])
    assert t["accuracy_crude"].tolist() == [0.5, 0.5] and t["n_images"].tolist() == [4, 4]
    qa = (np.array([2, 0]) + p_c + 0.5) / (np.array([2, 2]) + 2)
    var_a = (w ** 2 * qa * (1 - qa) / (np.array([2, 2]) + 2)).sum()
    assert t["n"].iloc[0] == round(pa @ w * (1 - pa @ w) / var_a)
    # one class everywhere: adjustment is only the shrinkage of that class's cells
    one = class_adjusted_accuracy([0] * 6, [0, 0, 1, 0, 1, 1], ["a"] * 3 + ["b"] * 3, prior_strength=1e-9)
    assert one["accuracy"].tolist() == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(InputError, match="prior_strength"):
        class_adjusted_accuracy(y, yhat, g, prior_strength=0)


def _class_mix_frame(rng, *, beta=0.0, m=30):
    """Accuracy depends on the class only; the class mix depends on GDP."""
    rows = []
    x = np.linspace(np.log(500), np.log(50000), m)
    z = (x - x.mean()) / x.std()
    acc_c = np.array([0.95, 0.8, 0.6, 0.4])
    for i in range(m):
        pi = np.exp(np.array([1.2, 0.4, -0.4, -1.2]) * z[i])
        pi /= pi.sum()
        n = 400
        cls = rng.choice(4, n, p=pi)
        p = st.norm.cdf(st.norm.ppf(acc_c[cls]) + beta * z[i])
        ok = rng.random(n) < p
        rows.append(pd.DataFrame({"country": f"C{i:02d}", "gdp": np.exp(x[i]), "label": cls,
                                  "prediction": np.where(ok, cls, (cls + 1) % 4)}))
    return pd.concat(rows, ignore_index=True)


def test_adjust_classes_removes_class_mix_confounding():
    df = _class_mix_frame(np.random.default_rng(8))
    crude = audit_predictions(df, group="country", covariate="gdp")
    adj = audit_predictions(df, group="country", covariate="gdp", adjust_classes=True)
    fc, fa = crude.fits["model"], adj.fits["model"]
    assert fc.significant and fc.beta > 0.03  # class mix read as a GDP effect
    assert abs(fa.beta) < fc.beta / 4
    assert adj.settings["adjust_classes"] is True and crude.settings["adjust_classes"] is False
    t = adj.model_groups["model"]
    assert {"accuracy_crude", "n_images"} <= set(t.columns) and (t["n_images"] == 400).all()
    real = audit_predictions(_class_mix_frame(np.random.default_rng(9), beta=0.4), group="country",
                             covariate="gdp", adjust_classes=True)
    assert real.fits["model"].significant and real.fits["model"].beta > 0


def test_adjust_classes_drops_groups_by_image_count(tmp_path, capsys):
    df = _class_mix_frame(np.random.default_rng(10), m=8)
    df = df[~((df["country"] == "C03") & (df.index % 10 != 0))]  # 40 images left
    rep = audit_predictions(df, group="country", covariate="gdp", adjust_classes=True, min_group_size=50)
    assert rep.fits["model"].dropped_groups == ("C03",) and rep.fits["model"].min_group_size == 50
    p = tmp_path / "p.csv"
    df.to_csv(p, index=False)
    assert main(["audit", str(p), "--group", "country", "--covariate", "gdp", "--adjust-classes",
                 "--out", str(tmp_path / "out")]) == 0
    assert "pooled class mix" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "report.json").read_text())["settings"]["adjust_classes"] is True


def test_adjusted_test_size_under_class_mix_confounding():
    """A small version of the benchmark: crude rejects ~always, adjusted near 5%."""
    b = _bench()
    rng = np.random.default_rng(11)
    reps = 1000
    crude, n, adj, var, x = b.sim_classes(rng, reps, beta=0.0, mix=1.0)
    n_eff = np.maximum(np.round(adj * (1 - adj) / var), 1)
    adj_r = np.round(adj * n_eff) / n_eff
    size_adj = np.mean(b.test_re_kh(adj_r, b.binomial_var(adj_r, n_eff), x) < 0.05)
    size_crude = np.mean(b.test_re_kh(crude, b.binomial_var(crude, n), x) < 0.05)
    assert size_crude > 0.95
    assert _within(size_adj, 0.05, reps), size_adj


def test_vectorised_random_effects_matches_statsmodels_wls_when_tau_is_zero():
    """With tau^2 = 0 the random-effects fit is WLS with weights 1/v, and its KH t is WLS's t."""
    import statsmodels.api as sm

    b = _bench()
    x = np.log(np.array([500., 1500, 4000, 9000, 20000, 45000]))
    acc = np.array([0.60, 0.66, 0.64, 0.70, 0.69, 0.74])
    v = np.full(6, 1.0)  # a large sampling variance: Q < df, so tau^2 = 0
    p = b.test_re_kh(acc[None], v[None], x)[0]
    ref = sm.WLS(acc, sm.add_constant(x), weights=1 / v).fit()
    assert p == pytest.approx(ref.pvalues[1], rel=1e-9)


def test_html_report_states_the_population_verdict_not_the_vote(tmp_path):
    from geoaudit.report import render_audit

    rep = audit_predictions(_population_frame(np.random.default_rng(13), beta=0.03), group="country",
                            covariate="gdp", min_group_size=20)
    html, _ = render_audit(rep)
    cls, sentence = rep.population.verdict_sentence()
    assert f'class="verdict {cls}"' in html and "averaged over the models" in html
    assert cls == ("reject" if rep.population.verdict.significant else "keep")
    assert "a count, not a verdict" in sentence
