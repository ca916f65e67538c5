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
  geoaudit audit predictions.csv --country-col country --out audit/   (GDP per capita added)
  geoaudit audit --model timm:resnet50 --dataset path/to/dollar_street --preset dollar-street --top-k 5 \
      --group-by income-band --out audit/ds
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
    p.add_argument("--variance", default="random-effects", metavar="{random-effects,hc3,paper,binomial}",
                   help="method: random-effects = meta-regression with binomial variance plus between-country "
                        "tau^2 and the Knapp-Hartung test (default, calibrated); hc3 = OLS with robust SE; "
                        "paper = GLS with diag(1/sqrt(n_i)) as in the paper; binomial = GLS with diag(p(1-p)/n_i)")
    p.add_argument("--tau2-method", default="REML", metavar="{REML,DL}",
                   help="estimator of the between-group variance tau^2 (default: REML)")
    p.add_argument("--deduplicate", action="store_true",
                   help="keep the first of identical rows repeating an image_id for a model, instead of failing")
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
    m.add_argument("--model", metavar="CHECKPOINT|SPEC",
                   help="one geoaudit checkpoint folder, or a model by name: timm:NAME, torchvision:NAME[@WEIGHTS], "
                        "hf:REPO_OR_DIR, clip:REPO_OR_DIR (zero-shot over the dataset's classes); weights from --weights or "
                        "the library's local cache, nothing is downloaded")
    m.add_argument("--data", metavar="DIR", help="dataset folder (geoaudit dataset build ...)")
    m.add_argument("--split", default="test", help="dataset split to predict on: one (default: test), several (train,test) or all; "
                        "several are pooled before the small groups are dropped")
    m.add_argument("--batch-size", type=int, default=256, help="inference batch size (default: 256)")
    m.add_argument("--num-workers", type=int, default=0, help="processes decoding images (default: 0)")
    m.add_argument("--amp", default="off", help="off or bf16: bfloat16 autocast of inference (default: off)")
    m.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on CUDA)")
    add_device_arg(m)
    x = p.add_argument_group("any model, any geo-labelled dataset")
    x.add_argument("--weights", metavar="FILE", help="weights file (state dict) for --model timm:/torchvision:/hf:")
    x.add_argument("--dataset", metavar="PATH_OR_REPO",
                   help="a dataset not in geoaudit's schema (folder, CSV/Parquet file or Hub id) whose rows carry a "
                        "country (--country-col) or coordinates (--lat-col/--lon-col)")
    x.add_argument("--preset", metavar="{dollar-street,geode}", help="field mapping of a published dataset")
    x.add_argument("--country-col", metavar="COL", help="column with a country name, ISO2 or ISO3 code; with a "
                   "predictions file and no --covariate, GDP per capita (World Bank) is added as covariate")
    x.add_argument("--lat-col", metavar="COL", help="latitude column (countries by reverse geocoding)")
    x.add_argument("--lon-col", metavar="COL", help="longitude column")
    x.add_argument("--covariate-indicator", metavar="CODE", default="NY.GDP.PCAP.CD",
                   help="World Bank indicator used as covariate (default NY.GDP.PCAP.CD, shipped; others via wbgapi)")
    x.add_argument("--gdp-year", default="latest", metavar="YEAR", help="indicator year (default: latest per country)")
    x.add_argument("--group-by", default="country", metavar="{country,region,income_group,continent,income-band,household}",
                   help="groups of the test (default: country)")
    x.add_argument("--income-col", metavar="COL", help="per-image income column (for --group-by income-band/household)")
    x.add_argument("--household-col", metavar="COL", help="household column (for --group-by household)")
    x.add_argument("--bands", type=int, default=4, metavar="K", help="number of income bands (default: 4)")
    x.add_argument("--top-k", type=int, default=1, metavar="K", help="an image is right when a label is in the "
                   "model's top K classes (default: 1)")
    x.add_argument("--label-map", metavar="FILE", help="JSON {model_class: dataset_class} or CSV model_class,dataset_class")
    x.add_argument("--drop-unmatched", action="store_true",
                   help="drop rows whose country matches nothing (counted) instead of failing")
    x.add_argument("--offline", action="store_true", help="never touch the network (shipped World Bank data only)")
    p.set_defaults(func=run)


def _year_range(table):
    cols = [c for c in table.columns if c == "gdp_year" or c.endswith("_year")]
    years = sorted({int(y) for y in table[cols[0]].dropna()}) if cols else []
    return f"{years[0]}-{years[-1]}" if len(years) > 1 else (str(years[0]) if years else "unknown")


def _load_splits(data, split, *, required):
    """One split, several (``train,test``) or ``all`` of them, concatenated: the paper tests
    theta0 on all images, then drops the countries with too few."""
    from geoaudit.data import load_geo_dataset

    names = [s.strip() for s in str(split).split(",") if s.strip()]
    if names == [split] and split != "all":
        return load_geo_dataset(data, split, required=required)
    import datasets

    dd = load_geo_dataset(data, None, required=required)
    if names == ["all"]:
        names = list(dd)
    missing = [n for n in names if n not in dd]
    if missing or not names:
        raise InputError(f"--split {split!r}: no split {', '.join(map(repr, missing)) or '(empty)'} in {str(data)!r}; "
                         f"it has {', '.join(dd)} (or give all).")
    cols = [c for c in dd[names[0]].column_names if all(c in dd[n].column_names for n in names)]
    return datasets.concatenate_datasets([dd[n].select_columns(cols) for n in names])


def _is_spec(value):
    return bool(value) and ":" in str(value) and not Path(str(value)).exists()


def _run_any(args, caller):
    """--dataset (any geo-labelled dataset) or --model by name."""
    from geoaudit._validation import check_interval
    from geoaudit.audit import GROUP_BY, audit_classifier
    from geoaudit.data import load_country_dataset, preset
    from geoaudit.data._indicators import covariate_column
    from geoaudit.models import read_label_map

    if args.models:
        raise InputError("--models (a folder of checkpoints) does not go with --dataset; use --model.")
    if not args.model:
        raise InputError("--dataset needs --model (a checkpoint folder or timm:/torchvision:/hf: name).")
    from geoaudit._validation import check_options

    check_options("--group-by", args.group_by, GROUP_BY, caller=caller)
    check_interval("--top-k", args.top_k, 1, None, caller=caller, integer=True)
    fields = preset(args.preset) if args.preset else {}
    if args.dataset:
        ds, fields = load_country_dataset(
            args.dataset, None if args.split == "test" and not args.data else args.split, preset_name=args.preset,
            country_col=args.country_col, lat_col=args.lat_col, lon_col=args.lon_col,
            indicator=args.covariate_indicator, year=args.gdp_year,
            on_unmatched="drop" if args.drop_unmatched else "raise", offline=args.offline)
        source = f"{args.model} on {args.dataset}"
    else:
        ds = _load_splits(args.data, args.split, required=("image",))
        source = f"{args.model} on {args.data} (split {args.split})"
    label_col = args.label_col
    if label_col == "label" and "label" not in ds.column_names and fields.get("label_col"):
        label_col = fields["label_col"]
    report, predictions = audit_classifier(
        args.model, ds, label_col=label_col, group_by=args.group_by,
        covariate=args.covariate or covariate_column(args.covariate_indicator),
        income_col=args.income_col or fields.get("income_col"),
        household_col=args.household_col or fields.get("household_col"), bands=args.bands, top_k=args.top_k,
        label_map=read_label_map(args.label_map) if args.label_map else None, weights=args.weights,
        batch_size=args.batch_size, device=args.device, min_group_size=args.min_group_size,
        variance=args.variance, log_covariate=args.log_covariate, alpha=args.alpha,
        drop_missing_covariate=args.drop_missing_covariate, source=source, name=args.model)
    return report, predictions


def _check_out(out):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; pass a folder for the report.")
    return out


_FLAGS = (("drop_missing_covariate=True", "--drop-missing-covariate"), ("deduplicate=True", "--deduplicate"),
          ("log_covariate=False", "--no-log-covariate"))


def run(args) -> int:
    try:
        return _run(args)
    except InputError as e:
        msg = str(e)
        for name, flag in _FLAGS:
            msg = msg.replace(name, flag)
        if msg == str(e):
            raise
        raise InputError(msg) from e


def _run(args) -> int:
    from geoaudit._validation import check_interval, check_options
    from geoaudit.audit import VARIANCES, audit_checkpoints, audit_predictions, find_checkpoints, write_report

    caller = "geoaudit audit"
    check_options("--variance", args.variance, VARIANCES, caller=caller)
    check_options("--tau2-method", args.tau2_method, ("REML", "DL"), caller=caller)
    check_interval("--min-group-size", args.min_group_size, 1, None, caller=caller, integer=True)
    check_interval("--alpha", args.alpha, 0, 1, caller=caller, closed="neither")
    out = _check_out(args.out)
    sources = [s for s in (args.predictions, args.models, args.model) if s]
    if len(sources) != 1:
        raise InputError("Give exactly one of PREDICTIONS (a predictions file), --models DIR or --model CHECKPOINT"
                         + (f"; got {len(sources)}." if sources else "."))
    predictions = None
    if args.dataset or _is_spec(args.model):
        report, predictions = _run_any(args, caller)
    elif args.predictions:
        if args.data:
            raise InputError("--data goes with --models/--model, not with a PREDICTIONS file.")
        table = args.predictions
        if (args.country_col or args.lat_col) and not args.covariate:
            from geoaudit.audit import load_predictions
            from geoaudit.data import add_geo_columns, covariate_column

            table = add_geo_columns(load_predictions(args.predictions), country_col=args.country_col,
                                    lat_col=args.lat_col, lon_col=args.lon_col, indicator=args.covariate_indicator,
                                    year=args.gdp_year, on_unmatched="drop" if args.drop_unmatched else "raise",
                                    offline=args.offline)
            args.covariate = covariate_column(args.covariate_indicator)
            args.group = args.group or "country_iso3"
        if args.group_by != "country":
            from geoaudit._validation import check_options
            from geoaudit.audit import GROUP_BY, group_frame, load_predictions
            from geoaudit.data import covariate_column

            check_options("--group-by", args.group_by, GROUP_BY, caller=caller)
            if isinstance(table, (str, Path)):
                table = load_predictions(table)
            attrs = dict(table.attrs)
            table, args.group, args.covariate = group_frame(
                table, args.group_by, covariate=args.covariate or covariate_column(args.covariate_indicator),
                income_col=args.income_col, household_col=args.household_col, bands=args.bands)
            table.attrs.update(attrs)
        missing = [f for f, v in (("--group", args.group), ("--covariate", args.covariate)) if not v]
        if missing:
            raise InputError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required with a "
                             "predictions file (the columns of the group and of its covariate).")
        report = audit_predictions(
            table, group=args.group, covariate=args.covariate, label_col=args.label_col,
            pred_col=args.pred_col, model_col=args.model_col, min_group_size=args.min_group_size,
            variance=args.variance, log_covariate=args.log_covariate, alpha=args.alpha,
            drop_missing_covariate=args.drop_missing_covariate, tau2_method=args.tau2_method,
            adjust_classes=args.adjust_classes,
            deduplicate=args.deduplicate,
            source=str(args.predictions) + (f"; covariate: {table.attrs['covariate_source']}, years "
                                             f"{_year_range(table)}" if hasattr(table, "attrs")
                                             and "covariate_source" in table.attrs else ""),
        )
    else:
        from geoaudit._device import resolve_device

        if not args.data:
            raise InputError("--data DIR (the dataset folder to predict on) is required with --models/--model.")
        check_interval("--batch-size", args.batch_size, 1, None, caller=caller, integer=True)
        check_interval("--num-workers", args.num_workers, 0, None, caller=caller, integer=True)
        check_options("--amp", args.amp, ("off", "bf16"), caller=caller)
        group = args.group or DEFAULT_GROUP
        covariate = args.covariate or DEFAULT_COVARIATE
        device = resolve_device(args.device)
        ckpts = find_checkpoints(args.models or args.model)
        if args.model and len(ckpts) != 1:
            raise InputError(f"--model {args.model!r} is not a single checkpoint folder; use --models for a folder "
                             "of checkpoints.")
        ds = _load_splits(args.data, args.split, required=("image", "label", group, covariate))
        report, predictions = audit_checkpoints(
            ckpts, ds, group=group, covariate=covariate, batch_size=args.batch_size, device=device,
            min_group_size=args.min_group_size, variance=args.variance, log_covariate=args.log_covariate,
            alpha=args.alpha, source=f"{args.models or args.model} on {args.data} (split {args.split})",
            drop_missing_covariate=args.drop_missing_covariate, tau2_method=args.tau2_method,
            adjust_classes=args.adjust_classes, num_workers=args.num_workers, amp=args.amp,
            channels_last=args.channels_last,
        )
    written = write_report(report, out, predictions=predictions, title=args.title)
    print(report.summary())
    if args.adjust_classes:
        print("  accuracies standardised to the pooled class mix of the groups kept (--adjust-classes)")
    s = report.settings
    if s.get("rows_without_covariate"):
        whole, partly = list(s["groups_without_covariate"]), list(s["groups_partly_without_covariate"])
        print(f"  dropped {s['rows_without_covariate']} row(s) without a covariate value"
              + (f"; groups left out entirely: {', '.join(whole[:10])}" if whole else "")
              + (f"; groups kept with their other rows: {', '.join(partly[:10])}" if partly else ""))
    if s.get("duplicate_rows_dropped"):
        print(f"  dropped {s['duplicate_rows_dropped']} duplicate row(s) (--deduplicate)")
    print(f"wrote {written['json']} and {written['html']}"
          + (f" (predictions: {written['predictions']})" if "predictions" in written else ""))
    return 0
