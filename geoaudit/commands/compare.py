"""`geoaudit compare`: compare the betas of model populations (two or more audit reports)."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

HELP = """\
Compare model populations by their betas (one per model, from 'geoaudit audit' reports).
With two reports A and B: a one-sided test of H1: mean beta of A < mean beta of B (A is fairer
than B).  The default test (auto) is the paired t-test when the populations share seeds (their
models can be matched by seed or by the number ending their names) and Welch's t-test otherwise;
the result names the test run and gives a confidence interval of the difference.
With more reports: the first pair (or --primary A,B) is the primary comparison, tested at
--alpha; every other pair (A before B in the order given) is secondary, Holm-adjusted.
The permutation test assumes exchangeable betas (equal distributions under H0): it is not
valid when the populations differ in spread.

examples:
  geoaudit compare audit/dro/report.json audit/plain/report.json --out compare.json
  geoaudit compare audit/perceptual audit/pgd audit/plain --out compare.json
"""

_SAME = ("group", "covariate", "log_covariate", "variance", "min_group_size", "adjust_classes")


def register(sub):
    import argparse

    p = sub.add_parser("compare", help="compare the betas of model populations (paired / Welch t-test, Holm)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", metavar="REPORT",
                   help="report.json of each population (or its folder); two or more")
    p.add_argument("--alternative", default="less", metavar="{less,greater,two-sided}",
                   help="H1: mean beta of A < B (less, default), > B (greater) or != B (two-sided)")
    p.add_argument("--test", default="auto", metavar="{auto,welch,student,paired,permutation}",
                   help="auto (default): paired when the populations share seeds, else Welch; or welch, "
                        "student, paired, permutation")
    p.add_argument("--primary", default=None, metavar="A,B",
                   help="with more than two reports: the primary comparison, as two population labels "
                        "(default: the first two reports)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    p.add_argument("--n-resamples", type=int, default=9999, help="permutation test resamples (default: 9999)")
    p.add_argument("--seed", type=int, default=0, help="permutation test seed (default: 0)")
    p.add_argument("--label-a", default=None, help="name of the first population (default: its report's folder name)")
    p.add_argument("--label-b", default=None, help="name of the second population (default: its report's folder name)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the result as JSON (with FILE's stem .html and _betas.png beside it)")
    p.set_defaults(func=run)


def _label(path):
    p = Path(path)
    p = p.parent if p.name == "report.json" else p
    return p.resolve().name or str(path)


def _check_comparable(reports, labels):
    from geoaudit._errors import InputError

    s0 = reports[0].get("settings", {})
    for r, lab in zip(reports[1:], labels[1:]):
        s = r.get("settings", {})
        if s0.get("log_covariate") != s.get("log_covariate") or s0.get("covariate") != s.get("covariate"):
            raise InputError(
                f"The reports of {labels[0]!r} and {lab!r} regress on different covariates "
                f"({'ln ' if s0.get('log_covariate') else ''}{s0.get('covariate')} vs "
                f"{'ln ' if s.get('log_covariate') else ''}{s.get('covariate')}); their betas are not comparable."
            )
        differ = [k for k in _SAME if s0.get(k) != s.get(k)]
        if differ:
            log.warning("warning: the reports of %r and %r differ in %s; the betas may not be comparable.",
                        labels[0], lab, ", ".join(differ))


def run(args) -> int:
    from geoaudit._errors import InputError
    from geoaudit._validation import check_options
    from geoaudit.audit import (
        ALTERNATIVES,
        TESTS,
        compare_many,
        compare_populations,
        load_report,
        report_betas,
        report_seeds,
    )

    caller = "geoaudit compare"
    check_options("--test", args.test, TESTS, caller=caller)
    check_options("--alternative", args.alternative, ALTERNATIVES, caller=caller)
    if len(args.reports) < 2:
        raise InputError("geoaudit compare needs at least two reports (one per population).")
    if args.out and Path(args.out).is_dir():
        raise InputError(f"--out {args.out!r} is a folder; pass a file name such as compare.json.")
    if args.out:  # the JSON and its HTML must not replace an audit's report.json / report.html
        stem = Path(args.out).with_suffix("") if Path(args.out).suffix else Path(args.out)
        written = {Path(args.out).resolve(), Path(f"{stem}.html").resolve()}
        given = [Path(r) / "report.json" if Path(r).is_dir() else Path(r) for r in args.reports]
        kept = {q.resolve() for r in given for q in (r, r.with_suffix(".html"))}
        if written & kept or Path(args.out).name == "report.json":
            raise InputError(f"--out {args.out!r} would overwrite an audit report (report.json or its HTML); "
                             "pass a new file name such as compare.json.")
    reports = [load_report(r) for r in args.reports]
    labels = [_label(r) for r in args.reports]
    if args.label_a:
        labels[0] = args.label_a
    if args.label_b:
        labels[1] = args.label_b
    if len(set(labels)) < len(labels):
        labels = [lab if labels.count(lab) == 1 else str(path) for lab, path in zip(labels, args.reports)]
    if len(set(labels)) < len(labels):
        raise InputError("Two reports have the same label; pass each population's report once.")
    _check_comparable(reports, labels)
    betas = [report_betas(r) for r in reports]
    seeds = [report_seeds(r) for r in reports]
    common = dict(test=args.test, alternative=args.alternative, alpha=args.alpha,
                  n_resamples=args.n_resamples, random_state=args.seed)
    if len(reports) == 2:
        if args.primary:
            raise InputError("--primary goes with more than two reports; with two, the comparison is A vs B.")
        result = compare_populations(betas[0], betas[1], label_a=labels[0], label_b=labels[1],
                                     seeds_a=seeds[0], seeds_b=seeds[1], **common)
    else:
        primary = (labels[0], labels[1])
        if args.primary:
            primary = tuple(x.strip() for x in args.primary.split(","))
            if len(primary) != 2 or any(x not in labels for x in primary):
                raise InputError(f"--primary must name two of the populations {', '.join(labels)} as A,B; "
                                 f"got {args.primary!r}.")
        result = compare_many(dict(zip(labels, betas)), primary=primary, seeds=dict(zip(labels, seeds)),
                              **common)
    if args.out:
        from geoaudit.report import write_compare

        written = write_compare(result, args.out, sources=dict(zip(labels, args.reports)))
    print(result.summary())
    if args.out:
        print(f"wrote {written['json']} and {written['html']}")
    return 0
