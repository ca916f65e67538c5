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


def load_split(data, split, *, image_size=None, channels=None, per_class=None, limit=None, seed=0,
               data_root=None):
    """``(images, labels, class_names)`` from a dataset folder or a builtin name.

    ``per_class`` draws that many images per class (seeded); ``limit`` keeps a seeded random
    subset of that size.  ``image_size``/``channels`` default to the data's own.
    """
    import numpy as np
    import torch

    from geoaudit._errors import InputError

    if image_size is not None and image_size < 8:
        raise InputError(f"--image-size must be at least 8, got {image_size}.")
    if data in BUILTIN_DATA:
        from geoaudit.defenses._centroid_eval import load_digits_tensors, load_torchvision_mnist

        if split not in ("train", "test"):
            raise InputError(f"The builtin data {data!r} has splits 'train' and 'test', not {split!r}.")
        if data == "digits":
            d = load_digits_tensors(image_size=image_size or 28)
            x, y = d[split]
            names = d["class_names"]
        else:
            x, y, names = load_torchvision_mnist(data, root=data_root, split=split)
            if image_size and image_size != x.shape[-1]:
                x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                                    align_corners=False).clamp_(0, 1)
        if channels == 3:
            x = x.repeat(1, 3, 1, 1)
        idx = None
        if per_class is not None:
            from geoaudit.calibrate import sample_per_class

            idx = sample_per_class(y, per_class, random_state=seed)
        elif limit is not None and limit < len(y):
            idx = torch.sort(torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]).values
        if idx is not None:
            x, y = x[idx], y[idx]
        return x, y, list(names)

    from geoaudit.data import load_geo_dataset, split_to_tensors

    ds = load_geo_dataset(data, split, required=("image", "label"))
    feat = ds.features["label"]
    names = list(getattr(feat, "names", None) or [str(i) for i in range(int(max(ds["label"])) + 1)])
    if per_class is not None:
        from geoaudit.calibrate import sample_per_class

        idx = sample_per_class(np.asarray(ds["label"]), per_class, random_state=seed)
        ds = ds.select(idx.tolist())
    elif limit is not None and limit < len(ds):
        idx = torch.sort(torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:limit]).values
        ds = ds.select(idx.tolist())
    if len(ds) == 0:
        raise InputError(f"The split {split!r} of {data!r} is empty.")
    first = ds[0]["image"]
    if channels is None:
        channels = 1 if getattr(first, "mode", "RGB") in ("L", "1", "I", "F") else 3
    if image_size is None:
        w, h = first.size
        if w != h:
            raise InputError(f"Images of {data!r} are {w}x{h}; pass --image-size to resize them to a square.")
        image_size = w
    x, y = split_to_tensors(ds, image_size=image_size, channels=channels)
    return x, y, names


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
