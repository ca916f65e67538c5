"""`geoaudit attack`: attack a model on a dataset split and evaluate the adversarial images."""
from __future__ import annotations

from geoaudit.commands._common import add_device_arg

METHODS = ("perceptual", "pgd", "fgsm", "ssim-newton")


def register(sub):
    p = sub.add_parser(
        "attack",
        help="attack a model on a dataset split (perceptual DRO, PGD, FGSM, one-step SSIM) and evaluate",
        description="Attack the images of a dataset split with one method and write OUT/metrics.json "
                    "(success rate, robust accuracy, L1/L2/Linf, SSIM, MS-SSIM, LPIPS/DISTS when their "
                    "weights are present, time, success after JPEG and bit-depth defenses) and OUT/grid.png "
                    "(original, adversarial, amplified difference).",
    )
    src = p.add_argument_group("model (a geoaudit checkpoint, or a torchvision architecture + state dict)")
    src.add_argument("--model", default=None, help="checkpoint folder (config.json + weights.pt)")
    src.add_argument("--arch", default=None, help="torchvision architecture name, e.g. resnet50 (with --weights)")
    src.add_argument("--weights", default=None, help="state dict file for --arch")
    src.add_argument("--num-classes", type=int, default=None, help="outputs of --arch (default: the dataset's)")
    src.add_argument("--normalize", default="imagenet", help="--arch input normalization: imagenet or none "
                                                             "(default: imagenet)")
    p.add_argument("--data", required=True, help="dataset folder (columns image and label)")
    p.add_argument("--split", default="test", help="split to attack (default: test)")
    p.add_argument("--limit", type=int, default=None, help="attack only the first N images")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize images to this square size (default: the checkpoint's; 224 for --arch)")
    p.add_argument("--method", default="perceptual", help=f"{', '.join(METHODS)} (default: perceptual)")
    h = p.add_argument_group("hyperparameters (default: each attack class's own default, the paper's where "
                             "it has one; see docs/attacks.md)")
    h.add_argument("--eps", type=float, default=None,
                   help="pgd: ball radius (1.0 l2 / 8/255 linf); fgsm: step (8/255); ssim-newton: L2 length (1.0)")
    h.add_argument("--step-size", type=float, default=None, help="perceptual: step (0.1); pgd: step (eps/4)")
    h.add_argument("--steps", type=int, default=None, help="perceptual: most steps (100); pgd: steps (10)")
    h.add_argument("--norm", default=None, help="pgd: l2 or linf (l2)")
    h.add_argument("--lam", type=float, default=None, help="perceptual and ssim-newton: lambda (1)")
    h.add_argument("--confidence", type=float, default=None, help="perceptual: margin a (0)")
    h.add_argument("--cost", default=None, help="perceptual: pieapp or ssim (pieapp)")
    h.add_argument("--cost-every", type=int, default=None, help="perceptual: cost-gradient refresh (5)")
    h.add_argument("--cost-schedule", default=None,
                   help="perceptual: first-step (refresh at steps 1, 1+E, ...) or paper (0, E, ...) (first-step)")
    h.add_argument("--cost-scale", default=None,
                   help="perceptual: loss (lambda = ratio of gradient lengths) or raw (the paper's) (loss)")
    h.add_argument("--pieapp-weights", default=None,
                   help="local PieAPP weights file PieAPPv0.1.pth (else $GEOAUDIT_PIEAPP_WEIGHTS, else download)")
    h.add_argument("--memory-budget-mb", type=float, default=None, help="perceptual: PieAPP chunk budget (1024)")
    h.add_argument("--solver", default=None, help="ssim-newton: exact or cg (cg)")
    h.add_argument("--random-start", action="store_true", default=None, help="pgd: random start in the ball")
    h.add_argument("--random-state", "--seed", dest="seed", type=int, default=0,
                   help="pgd: seed of the random start (default: 0)")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--jpeg-quality", type=int, default=75, help="JPEG defense quality, 0 to skip (default: 75)")
    ev.add_argument("--bit-depth", type=int, default=4, help="bit-depth defense bits, 0 to skip (default: 4)")
    ev.add_argument("--lpips", default="auto", help="auto (when weights are present), yes, no (default: auto)")
    ev.add_argument("--dists", default="auto", help="auto, yes, no (default: auto)")
    p.add_argument("--batch-size", type=int, default=64, help="images attacked at once (default: 64)")
    p.add_argument("--save-images", action="store_true",
                   help="also write OUT/adversarial.pt (float tensors) and OUT/adversarial/*.png")
    add_device_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


#: CLI option (argparse dest) -> attack parameter, per method; unset options (None) leave the
#: class default in place.
ATTACK_OPTIONS = {
    "perceptual": ("cost", "lam", "step_size", "steps", "confidence", "cost_every", "cost_schedule", "cost_scale",
                   "pieapp_weights", "memory_budget_mb"),
    "pgd": ("eps", "step_size", "steps", "norm", "random_start", ("seed", "random_state")),
    "fgsm": ("eps",),
    "ssim-newton": ("eps", "lam", "solver"),
}


def build_attack(args):
    """The attack for the parsed arguments, built by :func:`geoaudit.attacks.make_attack`."""
    from geoaudit._validation import check_options
    from geoaudit.attacks import make_attack

    method = check_options("--method", args.method, METHODS, caller="geoaudit attack")
    params = {}
    for opt in ATTACK_OPTIONS[method]:
        dest, name = (opt, opt) if isinstance(opt, str) else opt
        params[name] = getattr(args, dest, None)
    return make_attack(method, **params)


def _load_model(args, device, num_classes_data):
    import torch

    from geoaudit._errors import InputError
    from geoaudit.models import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel, load_model

    if args.model and (args.arch or args.weights):
        raise InputError("Give either --model CHECKPOINT or --arch NAME --weights FILE, not both.")
    if args.model:
        model, cfg = load_model(args.model, device=device)
        return model, cfg.get("image_size"), cfg.get("in_channels", 3), {"checkpoint": str(args.model)}
    if not (args.arch and args.weights):
        raise InputError("Give the model: --model CHECKPOINT, or --arch NAME --weights STATE_DICT.pt.")
    import torchvision

    try:
        net = torchvision.models.get_model(args.arch, weights=None,
                                           num_classes=args.num_classes or num_classes_data)
    except (ValueError, KeyError) as e:
        raise InputError(f"Unknown torchvision architecture {args.arch!r} for --arch: {e}") from e
    try:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise InputError(f"Could not load --weights {args.weights!r} into {args.arch}: {str(e).splitlines()[0]}") from e
    norm = check_norm(args.normalize)
    if norm == "imagenet":
        net = NormalizedModel(net, IMAGENET_MEAN, IMAGENET_STD)
    return net.eval().to(device), 224, 3, {"arch": args.arch, "weights": str(args.weights), "normalize": norm}


def check_norm(value):
    from geoaudit._validation import check_options

    return check_options("--normalize", value, ("imagenet", "none"), caller="geoaudit attack")


def _flag(name, value):
    from geoaudit._validation import check_options

    value = check_options(name, value, ("auto", "yes", "no"), caller="geoaudit attack")
    return {"auto": "auto", "yes": True, "no": False}[value]


def save_grid(path, images, adv, *, labels=None, preds=None, k=8):
    """PNG: row 1 originals, row 2 adversarial images, row 3 the difference amplified to full range."""
    from geoaudit.report import save_attack_grid

    return save_attack_grid(path, images, adv, labels=labels, preds=preds, k=k)


def run(args) -> int:
    from pathlib import Path

    import torch

    from geoaudit._errors import InputError
    from geoaudit._io import atomic_save, atomic_write_json
    from geoaudit._progress import progress
    from geoaudit.attacks import AttackResult, evaluate
    from geoaudit._device import resolve_device
    from geoaudit.data import load_geo_dataset, split_to_tensors
    from geoaudit.defenses import JPEG, BitDepth

    attack = build_attack(args)
    lpips_mode, dists_mode = _flag("--lpips", args.lpips), _flag("--dists", args.dists)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}.")
    defenses = []
    if args.jpeg_quality:
        defenses.append(JPEG(args.jpeg_quality))
    if args.bit_depth:
        defenses.append(BitDepth(args.bit_depth))
    device = resolve_device(args.device)
    ds = load_geo_dataset(args.data, args.split, required=("image", "label"))
    num_classes = ds.features["label"].num_classes if hasattr(ds.features["label"], "num_classes") else None
    model, size, channels, source = _load_model(args, device, num_classes)
    images, labels = split_to_tensors(ds, image_size=args.image_size or size, channels=channels, limit=args.limit)

    results = []
    for i in progress(range(0, images.shape[0], args.batch_size), desc=f"attack ({attack.name})"):
        results.append(attack(model, images[i:i + args.batch_size], labels[i:i + args.batch_size]))
    adv = torch.cat([r.images for r in results])
    total = AttackResult(images=adv, success=torch.cat([r.success for r in results]),
                         steps=torch.cat([r.steps for r in results]), margins=torch.cat([r.margins for r in results]),
                         seconds=sum(r.seconds for r in results), method=attack.name, params=results[0].params)
    ev = evaluate(model, images, total, labels, defenses=defenses, lpips=lpips_mode, dists=dists_mode)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"attack": total.to_dict(), "evaluation": ev.to_dict(), "model": source,
               "data": {"path": str(args.data), "split": args.split, "n": int(images.shape[0]),
                        "image_size": list(images.shape[1:])}, "device": str(device)}
    atomic_write_json(out / "metrics.json", metrics)
    with torch.no_grad():
        preds = model(adv[:8].to(device)).argmax(1).cpu()
    save_grid(out / "grid.png", images, adv, labels=labels, preds=preds)
    if args.save_images:
        atomic_save(out / "adversarial.pt", lambda t: torch.save(
            {"images": adv, "labels": labels, "success": total.success, "steps": total.steps}, t))
        _save_pngs(out / "adversarial", adv)
    print(ev.summary())
    print(f"wrote {out / 'metrics.json'} and {out / 'grid.png'}" + (" and the adversarial images" if args.save_images else ""))
    return 0


def _save_pngs(folder, adv):
    import numpy as np
    import torch
    from PIL import Image

    from geoaudit._io import atomic_save

    folder.mkdir(parents=True, exist_ok=True)
    arr = (adv.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else np.ascontiguousarray(a))
        atomic_save(folder / f"{i:06d}.png", lambda t, img=img: img.save(t, format="PNG"))

