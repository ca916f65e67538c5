"""Size and power of geoaudit's population-level tests, by simulation (vectorised numpy).

Three tables, each rate with its Monte Carlo standard error sqrt(r (1 - r) / R):

1. The population verdict (``population_verdict``: the audit's test on each country's
   accuracy averaged over the population's models) against the old majority vote of the
   models' own tests, when the models share one test set, agree on most images, and the
   countries scatter around the line (tau > 0) with no GDP effect.
2. The comparison tests (welch, student, paired, permutation, auto) at a nominal 5% when two
   populations share seeds (paired structure) and when their spreads differ.
3. The class-adjusted audit (``adjust_classes=True``: direct standardisation) under pure
   class-mix confounding (the class mix varies with GDP, accuracy depends on the class only)
   and its power when a real GDP effect exists.

The random-effects meta-regression (DerSimonian-Laird tau^2, Knapp-Hartung t-test) is written
here in vectorised form over the replicates; when geoaudit's ``gls_test`` offers
``variance="random-effects"`` the script checks the two agree on a few replicates.

    python benchmarks/calibration_populations.py            # 4,000 replicates per cell, writes docs
    python benchmarks/calibration_populations.py --quick    # 400, prints only
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- populations:begin -->", "<!-- populations:end -->"


# ----------------------------------------------------------------------------- regression tests
def _design(x):
    return np.stack([np.ones_like(x), x], axis=-1)  # (..., m, 2)


def _wls(y, w, x):
    """Weighted least squares of y on (1, x) per replicate: (beta, residuals, (X'WX)^-1)."""
    X = _design(np.broadcast_to(x, y.shape))
    XtW = X.swapaxes(-1, -2) * w[..., None, :]
    A = np.linalg.inv(XtW @ X)
    coef = (A @ (XtW @ y[..., None]))[..., 0]
    resid = y - (X @ coef[..., None])[..., 0]
    return coef[..., 1], resid, A, X


def test_paper(acc, n, x):
    """p-values of the paper's GLS F-test, Sigma = diag(1/sqrt(n)) (weights sqrt(n))."""
    w = np.sqrt(n)
    beta, r, A, _ = _wls(acc, w, x)
    m = acc.shape[-1]
    s2 = (w * r * r).sum(-1) / (m - 2)
    t = beta / np.sqrt(s2 * A[..., 1, 1])
    return 2 * stats.t.sf(np.abs(t), m - 2)


def binomial_var(acc, n):
    """Sampling variance with the smoothed proportion (correct + 0.5) / (n + 1)."""
    p = (np.round(acc * n) + 0.5) / (n + 1.0)
    return p * (1 - p) / n


def test_re_kh(acc, v, x, *, return_beta=False):
    """p-values of the random-effects meta-regression: DerSimonian-Laird tau^2, Knapp-Hartung t."""
    m = acc.shape[-1]
    w0 = 1.0 / v
    _, r0, A0, X = _wls(acc, w0, x)
    Q = (w0 * r0 * r0).sum(-1)
    # trace of P = W - W X (X'WX)^-1 X'W:  sum w - tr((X'WX)^-1 X'W^2 X)
    XtW2X = (X.swapaxes(-1, -2) * (w0 * w0)[..., None, :]) @ X
    c = w0.sum(-1) - np.trace(A0 @ XtW2X, axis1=-2, axis2=-1)
    tau2 = np.maximum(0.0, (Q - (m - 2)) / c)
    w = 1.0 / (v + tau2[..., None])
    beta, r, A, _ = _wls(acc, w, x)
    s2 = (w * r * r).sum(-1) / (m - 2)
    t = beta / np.sqrt(s2 * A[..., 1, 1])
    p = 2 * stats.t.sf(np.abs(t), m - 2)
    return (p, beta) if return_beta else p


def rate(reject):
    r = float(np.mean(reject))
    return r, math.sqrt(max(r * (1 - r), 1e-12) / len(reject))


def fmt(rs):
    r, se = rs
    return f"{r:.3f} ({se:.3f})"


# ----------------------------------------------------------------------------- 1. verdict
def sim_population(rng, R, *, m=40, K=5, tau=0.05, tau_model=0.02, agree=0.6, beta=0.0):
    """Per-model country accuracies (R, K, m) on one shared test set, and n (m,), x (m,)."""
    x = rng.uniform(np.log(300), np.log(60000), m)
    n = np.round(np.exp(rng.uniform(np.log(50), np.log(5000), m)))
    xc = x - x.mean()
    p = 0.72 + beta * xc + rng.normal(0, tau, (R, 1, m)) + rng.normal(0, tau_model, (R, K, m))
    p = np.clip(p, 0.02, 0.98)
    sd = np.sqrt(p * (1 - p) / n)
    # a shared image-sampling term (the models see the same images and agree on most of them)
    shared = rng.normal(0, 1, (R, 1, m))
    own = rng.normal(0, 1, (R, K, m))
    acc = p + sd * (math.sqrt(agree) * shared + math.sqrt(1 - agree) * own)
    acc = np.clip(np.round(acc * n) / n, 0, 1)
    return acc, n, x


def verdict_table(mean, n, K, agree, rng):
    """(mean accuracy, effective n) as ``population_verdict`` builds them.  The library's sampling
    variance of the mean is the per-image mean correctness' variance / n; simulated as its
    expectation p(1-p)/n (shared + (1 - shared)/K) times chi^2_{n-1}/(n-1) estimation noise."""
    v_hat = (mean * (1 - mean) / n * (agree + (1 - agree) / K)
             * rng.chisquare(n - 1, size=mean.shape) / (n - 1))
    n_eff = np.round(np.clip(mean * (1 - mean) / np.maximum(v_hat, 1e-12), n, n * K))
    return np.round(mean * n_eff) / n_eff, n_eff, v_hat  # correct counts rounded, as the library


def library_verdicts(acc, n, x, v_hat, reps):
    """Rejection rate of geoaudit's own ``population_verdict`` (gls_test's default method) on the
    first ``reps`` replicates, and the method's name."""
    import pandas as pd

    from geoaudit.audit import population_verdict

    groups = [f"C{i:02d}" for i in range(len(n))]
    cov = np.exp(x)
    rejects, method = [], None
    for r in range(min(reps, len(acc))):
        tables = {f"m{k}": pd.DataFrame({"group": groups, "n": n.astype(int),
                                         "correct": np.round(acc[r, k] * n).astype(int),
                                         "accuracy": np.round(acc[r, k] * n) / n, "covariate": cov})
                  for k in range(acc.shape[1])}
        v = population_verdict(tables, min_group_size=1, sampling_variance=pd.Series(v_hat[r], index=groups))
        rejects.append(v.significant)
        method = v.method
    return rate(np.array(rejects)), method


def library_adjusted(adj, n_eff, x, reps):
    """Rejection rate of gls_test (default method) on class-adjusted tables, first ``reps`` replicates."""
    import pandas as pd

    from geoaudit.audit import gls_test

    groups = [f"C{i:02d}" for i in range(adj.shape[1])]
    rejects, method = [], None
    for r in range(min(reps, len(adj))):
        fit = gls_test(pd.DataFrame({"group": groups, "n": n_eff[r].astype(int), "accuracy": adj[r],
                                     "covariate": np.exp(x)}), min_group_size=1)
        rejects.append(bool(fit.significant))
        method = fit.variance
    return rate(np.array(rejects)), method


def table_verdict(R, rng, reps_lib):
    rows = []
    for K, tau, agree, beta in ((5, 0.0, 0.6, 0.0), (5, 0.05, 0.6, 0.0), (20, 0.0, 0.3, 0.0), (20, 0.05, 0.6, 0.0),
                                (5, 0.08, 0.9, 0.0), (5, 0.05, 0.6, 0.015)):
        acc, n, x = sim_population(rng, R, K=K, tau=tau, beta=beta, agree=agree)
        # old: each model's test, majority vote (> K / 2 reject)
        p_paper = test_paper(acc, n, x)
        p_re = test_re_kh(acc, binomial_var(acc, n), x)
        vote_paper = (p_paper < 0.05).sum(-1) > K / 2
        vote_re = (p_re < 0.05).sum(-1) > K / 2
        mean = acc.mean(1)
        mean_r, n_eff, v_hat = verdict_table(mean, n, K, agree, rng)
        lib, method = library_verdicts(acc, n, x, v_hat, reps_lib)
        new_re = test_re_kh(mean_r, binomial_var(mean_r, n_eff), x) < 0.05
        mean_n = np.round(mean * n) / n
        new_re_one = test_re_kh(mean_n, binomial_var(mean_n, n), x) < 0.05
        new_paper = test_paper(mean_r, n_eff, x) < 0.05
        rows.append((K, tau, agree, beta, rate(vote_paper), rate(vote_re), rate(new_re), rate(new_re_one),
                     rate(new_paper), float(np.mean(p_re < 0.05)), lib, method))
    return rows


# ----------------------------------------------------------------------------- 2. comparisons
def _t_tests(a, b):
    """One-sided (H1: mean A < mean B) p-values of Welch, Student, paired; a, b (R, n)."""
    na, nb = a.shape[1], b.shape[1]
    ma, mb, va, vb = a.mean(1), b.mean(1), a.var(1, ddof=1), b.var(1, ddof=1)
    se_w = np.sqrt(va / na + vb / nb)
    df_w = se_w ** 4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p_w = stats.t.cdf((ma - mb) / se_w, df_w)
    sp = np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2) * (1 / na + 1 / nb))
    p_s = stats.t.cdf((ma - mb) / sp, na + nb - 2)
    p_p = None
    if na == nb:
        d = a - b
        p_p = stats.t.cdf(d.mean(1) / (d.std(1, ddof=1) / math.sqrt(na)), na - 1)
    return p_w, p_s, p_p


def _perm(a, b, rng, B):
    """One-sided permutation p-values (difference of means, random relabellings, +1 correction)."""
    R, na = a.shape
    z = np.concatenate([a, b], 1)
    N = z.shape[1]
    obs = a.mean(1) - b.mean(1)
    count = np.ones(R)
    for start in range(0, B, 200):
        k = min(200, B - start)
        perm = np.argsort(rng.random((k, N)), axis=1)
        zp = z[:, perm]  # (R, k, N)
        d = zp[..., :na].mean(-1) - zp[..., na:].mean(-1)
        count += (d <= obs[:, None] + 1e-12).sum(1)
    return count / (B + 1)


def table_compare(R, rng, B):
    cells = [
        # name, n_a, n_b, sd_a, sd_b, seed sd (shared between A and B), shift
        ("shared seeds, equal spread", 10, 10, 0.5, 0.5, 1.0, 0.0),
        ("shared seeds, spreads 3:1", 10, 10, 1.5, 0.5, 1.0, 0.0),
        ("no shared seeds, spreads 3:1, n 5 vs 20", 5, 20, 3.0, 1.0, 0.0, 0.0),
        ("shared seeds, equal spread, shift 0.5 (power)", 10, 10, 0.5, 0.5, 1.0, -0.5),
    ]
    rows = []
    for name, na, nb, sa, sb, ss, shift in cells:
        paired = ss > 0
        seed = rng.normal(0, ss, (R, max(na, nb))) if paired else 0.0
        a = shift + (seed[:, :na] if paired else 0) + rng.normal(0, sa, (R, na))
        b = (seed[:, :nb] if paired else 0) + rng.normal(0, sb, (R, nb))
        p_w, p_s, p_p = _t_tests(a, b)
        p_perm = _perm(a, b, rng, B)
        auto = p_p if paired else p_w
        rows.append((name, rate(p_w < .05), rate(p_s < .05), None if p_p is None else rate(p_p < .05),
                     rate(p_perm < .05), rate(auto < .05), "paired" if paired else "welch"))
    return rows


# ----------------------------------------------------------------------------- 3. class adjustment
def sim_classes(rng, R, *, m=40, beta=0.0, tau=0.2, mix=1.0):
    """Per-(country, class) counts (R, m, C) under a GDP-dependent class mix."""
    from geoaudit.audit._adjust import standardise_cells

    C = 5
    x = rng.uniform(np.log(300), np.log(60000), m)
    z = (x - x.mean()) / x.std()
    n = np.round(np.exp(rng.uniform(np.log(50), np.log(2000), m))).astype(int)
    class_logit = stats.norm.ppf([0.95, 0.85, 0.7, 0.55, 0.4])  # easy to hard classes
    gamma = mix * np.array([1.0, 0.5, 0.0, -0.5, -1.0])  # richer countries show more easy classes
    logits = gamma[None, :] * z[:, None]
    pi = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    n_gc = _multinomial(rng, R, n, pi)
    eta = class_logit[None, None, :] + beta * z[None, :, None] + rng.normal(0, tau, (R, m, 1))
    p = stats.norm.cdf(eta)
    x_gc = rng.binomial(n_gc, p)
    crude = x_gc.sum(-1) / n
    adj, var = standardise_cells(n_gc, x_gc)
    return crude, n.astype(float), adj, var, x


def _multinomial(rng, R, n, pi):
    """(R, m, C) multinomial counts, vectorised by sequential binomials."""
    m, C = pi.shape
    out = np.zeros((R, m, C), dtype=np.int64)
    left = np.broadcast_to(n, (R, m)).copy()
    rest = np.ones(m)
    for c in range(C - 1):
        q = np.clip(pi[:, c] / rest, 0, 1)
        out[..., c] = rng.binomial(left, q)
        left -= out[..., c]
        rest = rest - pi[:, c]
    out[..., C - 1] = left
    return out


def table_classes(R, rng, reps_lib):
    rows = []
    for label, beta, mix in (("no class-mix, no GDP effect", 0.0, 0.0),
                             ("class-mix confounding, no GDP effect", 0.0, 1.0),
                             ("class-mix confounding + GDP effect 0.05 (probit/sd)", 0.05, 1.0),
                             ("class-mix confounding + GDP effect 0.10 (probit/sd)", 0.10, 1.0)):
        crude, n, adj, var, x = sim_classes(rng, R, beta=beta, mix=mix)
        n_eff = np.maximum(np.round(adj * (1 - adj) / var), 1)
        adj_r = np.round(adj * n_eff) / n_eff  # what gls_test sees: correct = round(adj * n_eff)
        lib, method = library_adjusted(adj, n_eff, x, reps_lib)
        rows.append((label, lib, method,
                     rate(test_re_kh(crude, binomial_var(crude, n), x) < .05),
                     rate(test_re_kh(adj_r, binomial_var(adj_r, n_eff), x) < .05),
                     rate(test_paper(crude, n, x) < .05),
                     rate(test_paper(adj_r, n_eff, x) < .05)))
    return rows


# ----------------------------------------------------------------------------- library cross-check
def check_library(rng):
    """Compare the vectorised random-effects test with geoaudit's gls_test, when it offers it."""
    from geoaudit.audit import VARIANCES, gls_test

    name = next((v for v in VARIANCES if "random" in v), None)
    if name is None:
        return f"geoaudit.audit.gls_test offers {VARIANCES}; no random-effects option to cross-check"
    acc, n, x = sim_population(rng, 20, K=1, tau=0.05)
    acc = acc[:, 0]
    ours = test_re_kh(acc, binomial_var(acc, n), x)
    theirs = []
    for i in range(len(acc)):
        fit = gls_test({"accuracy": acc[i], "covariate": np.exp(x), "n": n, "correct": np.round(acc[i] * n)},
                       min_group_size=1, variance=name)
        theirs.append(getattr(fit, "pvalue", None) if hasattr(type(fit), "pvalue") or
                      "pvalue" in fit.__dataclass_fields__ else fit.p_value)
    diff = float(np.max(np.abs(ours - np.array(theirs))))
    return f"max |p(vectorised) - p(gls_test variance={name!r})| over 20 audits: {diff:.2g}"


# ----------------------------------------------------------------------------- output
USAGE = """\
A population of models trained alike is judged by one test of its own, not by a vote of its
models' tests (`report.population.verdict`, in `report.json` under `population.verdict` and in
the summary): each group's accuracy is averaged over the models and the audit's test is run
once on that mean accuracy; its slope and CI are the population's mean beta and its CI. How
many models' own tests reject stays in `population.n_significant`, as a count only.

Populations are compared with `compare_populations(a, b)` (default `test="auto"`: the paired
t-test when the models can be matched by seed, by name or by the number ending their names;
Welch's t-test otherwise; the result names the test run, `result.test`, and gives the CI of the
difference, `ci_low`/`ci_high`, one-sided for one-sided alternatives). Several populations:
`compare_many(pops, primary=("perceptual", "pgd"))` tests the primary comparison at alpha and
Holm-adjusts every other pair (`adjusted_pvalues`); `geoaudit compare A B C ... [--primary A,B]`
does the same. The permutation test (`test="permutation"`) assumes the betas of A and B are
exchangeable under H0 (one distribution, not only one mean): it is not valid when the spreads
differ (table below). Betas constant within each population up to rounding (relative
tolerance 1e-9 of their size) are refused, as are 1-model populations and reports naming a
model twice. `load_report` reads both key spellings of `report.json` (`p_value`/`pvalue`,
`f_stat`/`fvalue`, `se`/`bse`, `t_stat`/`tvalue`).

The class-adjusted audit (`audit_predictions(..., adjust_classes=True)`,
`geoaudit audit --adjust-classes`, `class_adjusted_accuracy`) standardises each group's
accuracy to the pooled class mix of the groups kept (direct standardisation); a group's
accuracy on a class is shrunk toward the class's pooled accuracy with the weight of one image
(so a class a group lacks borrows from the pool) and the adjusted accuracy's variance reaches
the regression as an effective sample size (column `n`; `n_images` and `accuracy_crude` are
kept). Groups are still dropped by their image count.
"""


def render(R, B, v_rows, c_rows, k_rows, check, cmd, seconds, reps_lib):
    L = [USAGE]
    L.append(f"Generated by `{cmd}` ({R:,} replicates per cell, {B} relabellings per permutation test; "
             f"{seconds:.0f} s, load average {os.getloadavg()[0]:.1f}). Rates at a nominal 5%, Monte Carlo SE in "
             f"parentheses. The vectorised columns use DerSimonian-Laird tau^2 with the Knapp-Hartung test; the "
             f"bold `population_verdict` / `gls_test` columns run geoaudit's own code with its default method. "
             f"{check}.")
    L.append("")
    L.append("**Population verdict.** 40 countries (50-5,000 images), K models audited on one shared test "
             "set: each model's true country accuracy = 0.72 + beta (ln GDP - mean) + u_country (sd tau, shared "
             "by the models) + v_model,country (sd 0.02); the models' sampling errors share a fraction "
             "of their variance (they agree on most images: 60% or 90%). Old verdict: biased when more than half of the models' "
             "own tests reject. New verdict (`population_verdict`): one random-effects (DL + Knapp-Hartung) "
             "test on each country's accuracy averaged over the models; its CI is the CI of the population's "
             "mean beta.")
    L.append("")
    L.append("| K | tau | shared sampling | beta | old vote, paper test | old vote, random-effects test | "
             "**new verdict, random-effects** | new verdict, random-effects, one model's variance | "
             "new verdict, paper test | one model's random-effects test | "
             f"**`population_verdict` itself ({v_rows[0][-1]})**, first {reps_lib} replicates |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for K, tau, agree, beta, vp, vr, nr, nr1, npp, one, lib, _ in v_rows:
        L.append(f"| {K} | {tau:g} | {agree:.0%} | {beta:g} | {fmt(vp)} | {fmt(vr)} | **{fmt(nr)}** | {fmt(nr1)} | "
                 f"{fmt(npp)} | {one:.3f} | **{fmt(lib)}** |")
    L.append("")
    L.append("The new verdict's sampling variance of the mean accuracy comes from the models' agreement on each "
             "image (`mean_accuracy_variance`: the variance over a group's images of the models' mean correctness, "
             "over n); simulated here as its expectation times chi^2(n-1)/(n-1) noise. Taking one model's "
             "binomial variance p(1-p)/n instead (next column) overstates it for small groups only, which "
             "distorts the weights and raises the size to 7-9% when the models agree little.")
    L.append("")
    L.append("With beta = 0 every column is a false-alarm rate; the last row (beta = 0.015 per ln GDP) is power. "
             "The vote's size depends on how strongly the models agree (it is no test of a stated hypothesis); "
             "the new verdict tests H0: mean beta = 0 with the size of the calibrated test. Its size rests on that "
             "test: with the paper's variance it inherits the paper test's false alarms under tau > 0.")
    L.append("")
    L.append("**Comparing populations** (H1: mean beta of A < B, one-sided 5%). Betas = shift + seed effect "
             "(sd 1, shared by A's and B's model of one seed when seeds are shared) + own noise.")
    L.append("")
    L.append("| cell | welch | student | paired | permutation | auto (chooses) |")
    L.append("|---|---|---|---|---|---|")
    for name, w, s, p, perm, auto, chosen in c_rows:
        L.append(f"| {name} | {fmt(w)} | {fmt(s)} | {'n/a' if p is None else fmt(p)} | {fmt(perm)} | "
                 f"{fmt(auto)} ({chosen}) |")
    L.append("")
    L.append("When seeds are shared, Welch, Student and the permutation test ignore the pairing: they stay "
             "valid but conservative and lose most of their power (last row); the paired test, which `auto` "
             "picks, holds 5%. The permutation test's assumption is exchangeability (the same distribution of "
             "betas in A and B under H0); at unequal spreads and unequal sizes it is not valid (third row), "
             "nor is Student's pooled variance; Welch is.")
    L.append("")
    L.append("**Class adjustment** (`adjust_classes=True`). 40 countries (50-2,000 images), 5 classes with "
             "accuracies 0.95-0.40; the class mix shifts with ln GDP (richer countries show more of the easy "
             "classes); a country effect (sd 0.2 on the probit scale) independent of GDP; a GDP effect, where "
             "present, on the probit scale per sd of ln GDP, the same for every class.")
    L.append("")
    L.append("| scenario | crude, random-effects | **adjusted, random-effects** | crude, paper | adjusted, paper | "
             f"**adjusted, `gls_test` itself ({k_rows[0][2]})**, first {reps_lib} replicates |")
    L.append("|---|---|---|---|---|---|")
    for label, lib, _, cr, ar, cp, ap in k_rows:
        L.append(f"| {label} | {fmt(cr)} | **{fmt(ar)}** | {fmt(cp)} | {fmt(ap)} | **{fmt(lib)}** |")
    L.append("")
    L.append("Direct standardisation to the pooled class mix, cells shrunk toward the class's pooled accuracy "
             "with the weight of 1 image, variance sum_c w_c^2 q(1-q)/(n_gc + 2) (q the cell's accuracy kept off 0 "
             "and 1) passed as an effective sample size.")
    return "\n".join(L)


def write_docs(text, path):
    doc = path.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n## Population verdict, comparisons and class adjustment (measured)\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 replicates, 199 relabellings, no docs")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--library-reps", type=int, default=None,
                    help="replicates run through geoaudit's own functions (default 600; 100 with --quick)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "audit.md"), help="markdown file to update")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    R = args.reps or (400 if args.quick else 4000)
    B = 199 if args.quick else 999
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    reps_lib = min(R, args.library_reps or (100 if args.quick else 600))
    v = table_verdict(R, rng, reps_lib)
    c = table_compare(R, rng, B)
    k = table_classes(R, rng, reps_lib)
    check = check_library(rng)
    cmd = "python benchmarks/calibration_populations.py" + (" --quick" if args.quick else "") \
        + (f" --reps {args.reps}" if args.reps else "")
    text = render(R, B, v, c, k, check, cmd, time.perf_counter() - t0, reps_lib)
    print(text)
    if not (args.quick or args.no_docs):
        write_docs(text, Path(args.docs))
        print(f"\nwrote the tables into {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
