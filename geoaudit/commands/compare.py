"""`geoaudit compare`: compare the betas of two model populations (two audit reports)."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

HELP = """\
Compare two model populations by their betas (one per model, from two 'geoaudit audit' reports).
By default a one-sided Welch t-test of H1: mean beta of A < mean beta of B (A is fairer than B).

example:
  geoaudit compare audit/dro/report.json audit/plain/report.json --out compare.json
"""

_SAME = ("group", "covariate", "log_covariate", "variance", "min_group_size")


def register(sub):
    import argparse

    p = sub.add_parser("compare", help="compare the betas of two model populations (t-test / permutation test)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report_a", metavar="A", help="report.json of population A (or its folder)")
    p.add_argument("report_b", metavar="B", help="report.json of population B (or its folder)")
    p.add_argument("--alternative", default="less", metavar="{less,greater,two-sided}",
                   help="H1: mean beta of A < B (less, default), > B (greater) or != B (two-sided)")
    p.add_argument("--test", default="welch", metavar="{welch,student,paired,permutation}",
                   help="Welch t-test (default), Student t-test, paired t-test (same seeds) or permutation test")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    p.add_argument("--n-resamples", type=int, default=9999, help="permutation test resamples (default: 9999)")
    p.add_argument("--seed", type=int, default=0, help="permutation test seed (default: 0)")
    p.add_argument("--label-a", default=None, help="name of population A (default: its report's folder name)")
    p.add_argument("--label-b", default=None, help="name of population B (default: its report's folder name)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the result as JSON (with FILE's stem .html and _betas.png beside it)")
    p.set_defaults(func=run)


def _label(path):
    p = Path(path)
    p = p.parent if p.name == "report.json" else p
    return p.resolve().name or str(path)


def run(args) -> int:
    from geoaudit._errors import InputError
    from geoaudit._validation import check_options
    from geoaudit.audit import ALTERNATIVES, TESTS, compare_populations, load_report, report_betas, report_seeds

    check_options("--test", args.test, TESTS, caller="geoaudit compare")
    check_options("--alternative", args.alternative, ALTERNATIVES, caller="geoaudit compare")
    if args.out and Path(args.out).is_dir():
        raise InputError(f"--out {args.out!r} is a folder; pass a file name such as compare.json.")
    ra, rb = load_report(args.report_a), load_report(args.report_b)
    sa, sb = ra.get("settings", {}), rb.get("settings", {})
    if sa.get("log_covariate") != sb.get("log_covariate") or sa.get("covariate") != sb.get("covariate"):
        raise InputError(
            "The two reports regress on different covariates "
            f"(A: {'ln ' if sa.get('log_covariate') else ''}{sa.get('covariate')}, "
            f"B: {'ln ' if sb.get('log_covariate') else ''}{sb.get('covariate')}); their betas are not comparable."
        )
    differ = [k for k in _SAME if sa.get(k) != sb.get(k)]
    if differ:
        log.warning("warning: the reports differ in %s; the betas may not be comparable.", ", ".join(differ))
    result = compare_populations(
        report_betas(ra), report_betas(rb), test=args.test, alternative=args.alternative, alpha=args.alpha,
        n_resamples=args.n_resamples, random_state=args.seed,
        label_a=args.label_a or _label(args.report_a), label_b=args.label_b or _label(args.report_b),
        seeds_a=report_seeds(ra), seeds_b=report_seeds(rb),
    )
    if args.out:
        from geoaudit.report import write_compare

        written = write_compare(result, args.out)
    print(result.summary())
    if args.out:
        print(f"wrote {written['json']} and {written['html']}")
    return 0
