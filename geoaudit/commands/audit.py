"""`geoaudit audit`: per-group accuracy and the GLS F-test, from a predictions file or from models."""
from __future__ import annotations

from pathlib import Path

from geoaudit._errors import InputError
from geoaudit.commands._common import add_device_arg

DEFAULT_GROUP = "country_iso3"
DEFAULT_COVARIATE = "gdp_per_capita_usd"

HELP = """\
Test whether a classifier's accuracy depends on the groups' covariate (by default: does accuracy
per country rise with ln GDP per capita?).  Input is a predictions file (CSV or Parquet, one row
per image and model) or geoaudit model checkpoints plus a dataset folder.  Writes
DIR/report.json, DIR/report.html (self-contained) and the figures as PNG.

examples:
  geoaudit audit examples/predictions.csv --group country_iso3 --covariate gdp_per_capita_usd --out audit/
  geoaudit audit --models runs/plain --data data/geoshapes --split test --out audit/plain
"""


def register(sub):
    import argparse

    p = sub.add_parser("audit", help="audit a classifier's accuracy per group against a covariate (GLS F-test)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", nargs="?", metavar="PREDICTIONS",
                   help="predictions file (.csv or .parquet): one row per image (and model)")
    p.add_argument("--group", metavar="COL", help="column of the group, e.g. country_iso3 "
                   f"(default with --models/--model: {DEFAULT_GROUP})")
    p.add_argument("--covariate", metavar="COL", help="column of the group's covariate, e.g. gdp_per_capita_usd "
                   f"(default with --models/--model: {DEFAULT_COVARIATE})")
    p.add_argument("--label-col", default="label", metavar="COL", help="column of the true class (default: label)")
    p.add_argument("--pred-col", default="prediction", metavar="COL",
                   help="column of the predicted class (default: prediction)")
    p.add_argument("--model-col", default=None, metavar="COL",
                   help="column naming the model of each row: one regression per model (default: 'model' "
                        "when present; a file without it is one model)")
    p.add_argument("--min-group-size", type=int, default=50, metavar="N",
                   help="drop groups with fewer images (default: 50)")
    p.add_argument("--variance", default="paper", metavar="{paper,binomial}",
                   help="GLS error covariance: paper = diag(1/sqrt(n_i)) (default), binomial = diag(p(1-p)/n_i)")
    p.add_argument("--no-log-covariate", dest="log_covariate", action="store_false",
                   help="use the covariate as it is instead of its natural log")
    p.add_argument("--drop-missing-covariate", action="store_true",
                   help="drop rows without a covariate value (e.g. countries without GDP data) instead of failing")
    p.add_argument("--adjust-classes", action="store_true",
                   help="standardise each group's accuracy to the pooled class mix (direct standardisation), "
                        "so that a class mix varying with the covariate is not read as its effect")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.html and figures")
    p.add_argument("--title", default=None, help="title of the HTML report")
    m = p.add_argument_group("auditing models directly (instead of PREDICTIONS)")
    m.add_argument("--models", metavar="DIR",
                   help="folder of geoaudit checkpoints (every subfolder with a config.json, sorted by path)")
    m.add_argument("--model", metavar="CHECKPOINT", help="one geoaudit checkpoint folder")
    m.add_argument("--data", metavar="DIR", help="dataset folder (geoaudit dataset build ...)")
    m.add_argument("--split", default="test", help="dataset split to predict on (default: test)")
    m.add_argument("--batch-size", type=int, default=256, help="inference batch size (default: 256)")
    add_device_arg(m)
    p.set_defaults(func=run)


def _check_out(out):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; pass a folder for the report.")
    return out


def run(args) -> int:
    from geoaudit._validation import check_interval, check_options
    from geoaudit.audit import VARIANCES, audit_checkpoints, audit_predictions, find_checkpoints, write_report

    caller = "geoaudit audit"
    check_options("--variance", args.variance, VARIANCES, caller=caller)
    check_interval("--min-group-size", args.min_group_size, 1, None, caller=caller, integer=True)
    check_interval("--alpha", args.alpha, 0, 1, caller=caller, closed="neither")
    out = _check_out(args.out)
    sources = [s for s in (args.predictions, args.models, args.model) if s]
    if len(sources) != 1:
        raise InputError("Give exactly one of PREDICTIONS (a predictions file), --models DIR or --model CHECKPOINT"
                         + (f"; got {len(sources)}." if sources else "."))
    predictions = None
    if args.predictions:
        if args.data:
            raise InputError("--data goes with --models/--model, not with a PREDICTIONS file.")
        missing = [f for f, v in (("--group", args.group), ("--covariate", args.covariate)) if not v]
        if missing:
            raise InputError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required with a "
                             "predictions file (the columns of the group and of its covariate).")
        report = audit_predictions(
            args.predictions, group=args.group, covariate=args.covariate, label_col=args.label_col,
            pred_col=args.pred_col, model_col=args.model_col, min_group_size=args.min_group_size,
            variance=args.variance, log_covariate=args.log_covariate, alpha=args.alpha,
            drop_missing_covariate=args.drop_missing_covariate, adjust_classes=args.adjust_classes,
        )
    else:
        from geoaudit._device import resolve_device
        from geoaudit.data import load_geo_dataset

        if not args.data:
            raise InputError("--data DIR (the dataset folder to predict on) is required with --models/--model.")
        check_interval("--batch-size", args.batch_size, 1, None, caller=caller, integer=True)
        group = args.group or DEFAULT_GROUP
        covariate = args.covariate or DEFAULT_COVARIATE
        device = resolve_device(args.device)
        ckpts = find_checkpoints(args.models or args.model)
        if args.model and len(ckpts) != 1:
            raise InputError(f"--model {args.model!r} is not a single checkpoint folder; use --models for a folder "
                             "of checkpoints.")
        ds = load_geo_dataset(args.data, args.split, required=("image", "label", group, covariate))
        report, predictions = audit_checkpoints(
            ckpts, ds, group=group, covariate=covariate, batch_size=args.batch_size, device=device,
            min_group_size=args.min_group_size, variance=args.variance, log_covariate=args.log_covariate,
            alpha=args.alpha, source=f"{args.models or args.model} on {args.data} (split {args.split})",
            drop_missing_covariate=args.drop_missing_covariate, adjust_classes=args.adjust_classes,
        )
    written = write_report(report, out, predictions=predictions, title=args.title)
    print(report.summary())
    if args.adjust_classes:
        print("  accuracies standardised to the pooled class mix of the groups kept (--adjust-classes)")
    if report.settings.get("groups_without_covariate"):
        print(f"  left out {len(report.settings['groups_without_covariate'])} group(s) without a covariate value: "
              + ", ".join(report.settings["groups_without_covariate"][:10]))
    print(f"wrote {written['json']} and {written['html']}"
          + (f" (predictions: {written['predictions']})" if "predictions" in written else ""))
    return 0
