"""`geoaudit demo`: the paper's whole experiment on GeoShapes, audited, compared and reported."""
from __future__ import annotations

from geoaudit.commands._common import add_device_arg


def register(sub):
    p = sub.add_parser(
        "demo",
        help="run the whole experiment on the embedded GeoShapes data and write report.html",
        description=(
            "Build GeoShapes, train plain / PGD-DRO / perceptual-DRO populations with the same seeds, "
            "audit every model (GLS F-test of accuracy on log GDP), compare the populations' slopes "
            "(one-sided t-tests and a permutation test), measure attack quality, and write "
            "OUT/report.html and OUT/report.json. Re-running the same command resumes."
        ),
    )
    p.add_argument("--out", default="geoaudit-demo", help="output folder (default: geoaudit-demo)")
    p.add_argument("--quick", action="store_true", help="smoke run (3 models per method, about 2 min on 2 idle CPU cores); marked as such")
    p.add_argument("--models", type=int, help="models per training method (default 10; the paper: 50)")
    p.add_argument("--epochs", type=int, help="epochs per model (Algorithm 3)")
    p.add_argument("--n-images", type=int, help="GeoShapes images (default 8000)")
    p.add_argument("--image-size", type=int, help="GeoShapes image side in pixels (default 32; 64 with PieAPP)")
    p.add_argument("--spurious-strength", type=float, help="strength of the planted colour cue in [0, 1] (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of Algorithm 2")
    p.add_argument("--pieapp-weights", help="PieAPP weights file; without it the perceptual cost is 1 - SSIM")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from geoaudit.demo import run_demo

    if args.threads is None and args.device in ("auto", "cpu") and not torch.cuda.is_available():
        # small CNNs gain nothing from intra-op threads, and OpenMP spin-waiting on small VMs
        # made 2 threads up to 9x slower than 1 (see benchmarks/threads.py)
        torch.set_num_threads(1)

    run_demo(args.out, quick=args.quick, n_images=args.n_images, image_size=args.image_size,
             spurious_strength=args.spurious_strength, models=args.models, epochs=args.epochs,
             seed=args.seed, device=args.device, pieapp_weights=args.pieapp_weights)
    return 0
