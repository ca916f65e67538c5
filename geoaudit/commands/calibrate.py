"""`geoaudit calibrate`: per-class distance matrices and a suggested attack budget epsilon."""
from __future__ import annotations

from geoaudit._device import resolve_device
from geoaudit.commands._common import add_device_arg

#: Data that need no dataset folder: scikit-learn's digits (offline), MNIST and Fashion-MNIST
#: (downloaded by torchvision on first use).
BUILTIN_DATA = ("digits", "mnist", "fashion-mnist")


def register(sub):
    p = sub.add_parser(
        "calibrate",
        help="per-class distance matrices (L2, Linf, 1-SSIM) and a suggested epsilon per class",
        description="Sample images per class, compute all pairwise distances under each norm, and write "
                    "calibration.json (mean distance matrices within/between classes, suggested epsilon per "
                    "class and norm, fraction of same-class pairs within that epsilon) and one heatmap PNG "
                    "per norm.",
    )
    p.add_argument("--data", required=True,
                   help="dataset folder (geoaudit dataset build ...), or one of: " + ", ".join(BUILTIN_DATA))
    p.add_argument("--split", default="train", help="split to sample from (default: train)")
    p.add_argument("--per-class", type=int, default=100, help="images sampled per class (default: 100)")
    p.add_argument("--norms", default="l2,linf,ssim",
                   help="comma-separated among l2, linf, ssim (1 - SSIM), lpips (needs AlexNet weights "
                        "on disk; marked unavailable otherwise). Default: l2,linf,ssim")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="suggested eps = fraction x the distance to the nearest other class (default: 0.5)")
    p.add_argument("--reference", choices=("nearest", "mean"), default="nearest",
                   help="nearest: smallest image-to-other-class-image distance; mean: smallest mean "
                        "distance to another class (default: nearest)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this side (default: the data's own size; digits: 28)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="1 (greyscale) or 3 (RGB); default: from the data")
    p.add_argument("--random-state", "--seed", dest="seed", type=int, default=0,
                   help="seed of the per-class sample (default: 0)")
    p.add_argument("--data-root", default=None, help="where torchvision keeps MNIST / Fashion-MNIST")
    add_device_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def load_split(*args, **kwargs):
    """:func:`geoaudit.data.load_split`, imported on use so that ``--help`` stays fast."""
    from geoaudit.data import load_split as _load_split

    return _load_split(*args, **kwargs)


def run(args) -> int:
    from pathlib import Path

    from geoaudit._errors import InputError
    from geoaudit._io import atomic_write_json
    from geoaudit.attacks import calibrate_epsilon
    from geoaudit.report import plot_calibration_heatmaps

    if args.per_class < 2:
        raise InputError(f"--per-class must be at least 2 (within-class pairs), got {args.per_class}.")
    if not 0 < args.fraction <= 1:
        raise InputError(f"--fraction must be in (0, 1], got {args.fraction}.")
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    device = resolve_device(args.device)
    x, y, names = load_split(args.data, args.split, image_size=args.image_size, channels=args.channels,
                             per_class=args.per_class, seed=args.seed, data_root=args.data_root)
    result = calibrate_epsilon(x, y, norms=norms, per_class=None, fraction=args.fraction,
                               reference=args.reference, class_names=names, num_classes=len(names),
                               random_state=args.seed, device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    d["meta"].update({"data": str(args.data), "split": args.split, "per_class": args.per_class})
    atomic_write_json(out / "calibration.json", d)
    figs = plot_calibration_heatmaps(result, out)
    print(result.summary())
    print(f"wrote {out / 'calibration.json'} and {', '.join(p.name for p in figs)}")
    return 0
