"""`geoaudit defend centroid`: evaluate the individual-fairness centroid defense under FGSM."""
from __future__ import annotations

from geoaudit._device import resolve_device
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
    c.add_argument("--thresholds", default="calibrate",
                   help="'calibrate' (default: quantile of within-class distances), a preset "
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
                   help="comma-separated module names to hook (default: every Linear, Conv and activation)")
    c.add_argument("--layer-weighting", choices=("flat", "early", "late"), default="flat",
                   help="vote weight 1, e^-l or e^l at the l-th hooked layer (default: flat)")
    c.add_argument("--top-k", type=int, default=3, help="k of the loose defense (default: 3, as in the paper)")
    c.add_argument("--eps-grid", default="0,0.05,...,0.5",
                   help="FGSM epsilons: 0,0.1,0.2 or 0,0.05,...,0.5 or 0:0.5:0.05 (default: 0,0.05,...,0.5)")
    c.add_argument("--limit", type=int, default=None, help="evaluate on a seeded random subset of N images")
    c.add_argument("--calib-limit", type=int, default=None,
                   help="use a seeded random subset of N images of the centroid split")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--data-root", default=None, help="where torchvision keeps MNIST / Fashion-MNIST")
    add_device_arg(c)
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=run_centroid)


def _no_defense(p):
    from geoaudit._errors import InputError

    raise InputError("name a defense: geoaudit defend centroid --model CHECKPOINT --data DIR --out DIR")


def read_thresholds(spec, *, class_names):
    """A threshold spec from the CLI: a preset name, one number, or a JSON file."""
    import json
    from pathlib import Path

    from geoaudit._errors import InputError
    from geoaudit.defenses._centroid import THRESHOLD_PRESETS

    if spec in THRESHOLD_PRESETS:
        return spec
    try:
        return float(spec)
    except ValueError:
        pass
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--thresholds {spec!r} is neither 'calibrate', a preset ({', '.join(THRESHOLD_PRESETS)}), "
                         "a number, nor an existing JSON file.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"Could not read thresholds from {str(path)!r}: {e}") from e
    if isinstance(obj, dict) and "thresholds" in obj:
        obj = obj["thresholds"]
    if isinstance(obj, dict):  # {class_name: alpha}
        missing = [n for n in class_names if n not in obj]
        if missing:
            raise InputError(f"Thresholds file {str(path)!r} has no value for class(es) "
                             f"{', '.join(repr(m) for m in missing)}.")
        obj = [obj[n] for n in class_names]
    if not isinstance(obj, list):
        raise InputError(f"Thresholds file {str(path)!r} must hold a list of numbers (one per class), an L x K "
                         "list, or an object with a 'thresholds' entry.")
    return obj


def run_centroid(args) -> int:
    from pathlib import Path

    import torch

    from geoaudit._errors import InputError
    from geoaudit._io import atomic_save, atomic_write_json, atomic_write_text
    from geoaudit.commands.calibrate import load_split
    from geoaudit.defenses._centroid import CentroidDefense, calibrate_thresholds, select_centroids
    from geoaudit.defenses._centroid_eval import evaluate_centroid_defense, parse_eps_grid
    from geoaudit.models import load_model

    for name in ("limit", "calib_limit"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {v}.")
    if args.centroid_sets < 1:
        raise InputError(f"--centroid-sets must be at least 1, got {args.centroid_sets}.")
    if not 0 <= args.quantile <= 1:
        raise InputError(f"--quantile must be in [0, 1], got {args.quantile}.")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}.")
    eps_grid = parse_eps_grid(args.eps_grid)
    device = resolve_device(args.device)
    model, cfg = load_model(args.model, device=device)
    size, channels = int(cfg["image_size"]), int(cfg["in_channels"])
    names = list(cfg.get("class_names") or [str(i) for i in range(cfg["num_classes"])])
    if not 1 <= args.top_k <= len(names):
        raise InputError(f"--top-k must be in [1, {len(names)}], got {args.top_k}.")
    x, y, data_names = load_split(args.data, args.split, image_size=size, channels=channels, limit=args.limit,
                                  seed=args.seed, data_root=args.data_root)
    if len(data_names) != len(names):
        raise InputError(f"The model has {len(names)} classes but {args.data!r} has {len(data_names)}.")
    xc, yc, _ = load_split(args.data, args.centroid_split, image_size=size, channels=channels,
                           limit=args.calib_limit, seed=args.seed, data_root=args.data_root)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None

    cents, cl, chosen = select_centroids(model, xc, yc, num_sets=args.centroid_sets, method=args.centroids,
                                         random_state=args.seed, class_names=names)
    flat = (cents.flatten(0, 1), cl)
    if args.thresholds == "calibrate":
        rest = torch.ones(xc.shape[0], dtype=torch.bool)
        rest[chosen.flatten()] = False
        thresholds = calibrate_thresholds(model, flat, xc[rest], yc[rest], quantile=args.quantile,
                                          per_layer=not args.pooled, layers=layers)
        rule = (f"quantile {args.quantile} of within-class distances on split {args.centroid_split!r}, "
                + ("pooled over layers" if args.pooled else "per layer and class"))
    else:
        thresholds = read_thresholds(args.thresholds, class_names=names)
        rule = f"given: {args.thresholds}"
    defense = CentroidDefense(model, flat, thresholds, layers=layers, layer_weighting=args.layer_weighting,
                              top_k=args.top_k, class_names=names)
    curve = evaluate_centroid_defense(
        defense, x, y, eps_grid=eps_grid, top_k=args.top_k, batch_size=args.batch_size,
        meta={"model": str(args.model), "arch": cfg["arch"], "data": str(args.data), "split": args.split,
              "centroid_split": args.centroid_split, "centroid_rule": args.centroids,
              "centroid_indices": chosen.tolist(), "threshold_rule": rule, "seed": args.seed,
              "device": str(device)},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "centroid_eval.json", curve.to_dict())
    atomic_write_text(out / "centroid_eval.csv", curve.to_csv())
    curve.plot(out / "centroid_eval.png", title=f"{cfg['arch']} on {Path(str(args.data)).name}: centroid defense "
                                                f"under FGSM (n={curve.n})")
    d = defense.to_dict()
    atomic_write_json(out / "thresholds.json", {"thresholds": d["thresholds"], "per_layer": d["thresholds_per_layer"],
                                                "layer_calls": d["layer_calls"], "class_names": names,
                                                "rule": rule})
    _plot_centroids(cents, names, out / "centroids.png", atomic_save)
    print(curve.summary())
    print(f"wrote {out}/centroid_eval.json, centroid_eval.csv, centroid_eval.png, thresholds.json, centroids.png")
    return 0


def _plot_centroids(cents, names, path, atomic_save):
    """The centroid images, one row per set, one column per class."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    s, k = cents.shape[:2]
    fig, axes = plt.subplots(s, k, figsize=(1.1 * k, 1.2 * s + 0.3), squeeze=False)
    for i in range(s):
        for j in range(k):
            im = cents[i, j].permute(1, 2, 0).numpy()
            axes[i][j].imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None,
                              vmin=0, vmax=1)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(names[j][:10], fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda t: fig.savefig(t, dpi=100, format="png"))
    plt.close(fig)
