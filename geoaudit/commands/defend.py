"""`geoaudit defend centroid`: evaluate the individual-fairness centroid defense under FGSM."""
from __future__ import annotations

from pathlib import Path

from geoaudit.commands._common import add_device_arg


def register(sub):
    p = sub.add_parser("defend", help="evaluate inference-time defenses (centroid)",
                       description="Evaluate an inference-time defense on a checkpoint.")
    dsub = p.add_subparsers(dest="defense", metavar="DEFENSE")
    p.set_defaults(func=lambda args: _no_defense(p))
    c = dsub.add_parser(
        "centroid",
        help="the individual-fairness centroid defense: accuracy under FGSM, undefended vs defended vs loose",
        description="Choose one centroid image per class (or several sets), set the per-class thresholds "
                    "alpha (calibrated from data, a preset from the paper, or a JSON file), and measure "
                    "accuracy under FGSM for each epsilon: undefended, defended and loose (true class "
                    "among the top k). Writes centroid_eval.json/.csv/.png, thresholds.json and centroids.png.",
    )
    c.add_argument("--model", required=True, help="checkpoint folder (config.json + weights.pt)")
    c.add_argument("--data", required=True, help="dataset folder, or one of: digits, mnist, fashion-mnist")
    c.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    c.add_argument("--centroid-split", default="train",
                   help="split the centroids and calibration images come from (default: train)")
    c.add_argument("--mode", choices=("calibrated", "faithful"), default="calibrated",
                   help="faithful: the paper's defense as written (its thresholds, the Linear/Conv layers "
                        "only, ties to the lowest class); calibrated (default): geoaudit's improvement "
                        "(calibrated thresholds, every Linear/Conv/activation module, ties by the logits)")
    c.add_argument("--tie-break", choices=("logits", "first"), default=None,
                   help="order of classes with equal votes: the model's logits or lowest class index "
                        "(default: the mode's)")
    c.add_argument("--thresholds", default=None,
                   help="'calibrate' (default in the calibrated mode: quantile of within-class distances), a preset "
                        "(mnist, fashion-mnist: the paper's appendix A), one number for every class, or a "
                        "JSON file: a list of K numbers, an L x K list, or thresholds.json from an earlier run")
    c.add_argument("--quantile", type=float, default=0.95,
                   help="with --thresholds calibrate: the quantile of within-class distances (default: 0.95)")
    c.add_argument("--pooled", action="store_true",
                   help="with --thresholds calibrate: one threshold per class pooled over layers "
                        "(default: one per layer and class)")
    c.add_argument("--centroids", choices=("medoid", "random"), default="medoid",
                   help="medoid: correctly classified image closest to the class mean at the penultimate "
                        "layer; random: seeded random correctly classified image (default: medoid)")
    c.add_argument("--centroid-sets", type=int, default=1, help="centroids per class (default: 1)")
    c.add_argument("--layers", default=None,
                   help="comma-separated module names to hook, or 'paper' (the Linear/Conv modules) "
                        "(default: every Linear, Conv and activation; 'paper' in the faithful mode)")
    c.add_argument("--layer-weighting", choices=("flat", "early", "late"), default="flat",
                   help="vote weight 1, e^-l or e^l at the l-th hooked layer (default: flat)")
    c.add_argument("--top-k", type=int, default=3, help="k of the loose defense (default: 3, as in the paper)")
    c.add_argument("--eps-grid", default="0,0.05,...,0.5",
                   help="FGSM epsilons: 0,0.1,0.2 or 0,0.05,...,0.5 or 0:0.5:0.05 (default: 0,0.05,...,0.5)")
    c.add_argument("--limit", type=int, default=None, help="evaluate on a seeded random subset of N images")
    c.add_argument("--calib-limit", type=int, default=None,
                   help="use a seeded random subset of N images of the centroid split")
    c.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    c.add_argument("--seed", type=int, default=0,
                   help="random state of the centroid choice and the --limit subsets (default: 0)")
    c.add_argument("--data-root", default=None, help="where torchvision keeps MNIST / Fashion-MNIST")
    add_device_arg(c)
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=run_centroid)


def _no_defense(p):
    from geoaudit._errors import InputError

    raise InputError("name a defense: geoaudit defend centroid --model CHECKPOINT --data DIR --out DIR")


def run_centroid(args) -> int:
    from geoaudit._validation import check_flag
    from geoaudit.defenses import evaluate_centroid_checkpoint
    from geoaudit.report import write_centroid_evaluation

    check_flag("--limit", args.limit, 1)
    check_flag("--calib-limit", args.calib_limit, 1)
    check_flag("--centroid-sets", args.centroid_sets, 1)
    check_flag("--quantile", args.quantile, 0, 1, integer=False)
    check_flag("--batch-size", args.batch_size, 1)
    check_flag("--top-k", args.top_k, 1)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    if layers == ["paper"]:
        layers = "paper"
    ev = evaluate_centroid_checkpoint(
        args.model, args.data, split=args.split, centroid_split=args.centroid_split, thresholds=args.thresholds,
        mode=args.mode, tie_break=args.tie_break, quantile=args.quantile, per_layer=not args.pooled, centroid_method=args.centroids,
        centroid_sets=args.centroid_sets, layers=layers, layer_weighting=args.layer_weighting, top_k=args.top_k,
        eps_grid=args.eps_grid, limit=args.limit, calib_limit=args.calib_limit, batch_size=args.batch_size,
        random_state=args.seed, data_root=args.data_root, device=args.device)
    out = Path(args.out)
    write_centroid_evaluation(ev, out, title=f"{ev.arch} on {Path(str(args.data)).name}: centroid defense "
                                             f"under FGSM (n={ev.curve.n})")
    print(ev.curve.summary())
    print(f"wrote {out}/centroid_eval.json, centroid_eval.csv, centroid_eval.png, thresholds.json, centroids.png")
    return 0
