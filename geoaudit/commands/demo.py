"""`geoaudit demo`: the paper's experiment on GeoShapes with a positive control and negative checks."""
from __future__ import annotations

from geoaudit.commands._common import add_device_arg


def register(sub):
    from geoaudit._demo.settings import PRESETS

    d, q = PRESETS["default"], PRESETS["quick"]
    p = sub.add_parser(
        "demo",
        help="run the whole experiment on three GeoShapes datasets and write report.html",
        description=(
            "Build three GeoShapes datasets (capture-quality bias, colour shortcut, no bias), train paired "
            "populations on each (plain, PGD-DRO, perceptual-DRO, and on the capture data an oracle trained "
            "with the capture corruption), audit every model (GLS slope of accuracy on log GDP), test the "
            "comparisons named up front (primary: perceptual-DRO fairer than PGD-DRO, alone at alpha 0.05; "
            "positive control: the oracle fairer than plain on the capture data, alone at alpha 0.05, a check "
            "that the test can see an improvement; secondary, adjusted by Holm's method: the other DRO comparisons "
            "and the negative checks on the colour and no-bias data), and write OUT/report.html and "
            "OUT/report.json. Re-running the same command resumes."
        ),
    )
    p.add_argument("--out", default="geoaudit-demo", help="output folder (default: geoaudit-demo)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run (capture dataset only, {q['models']} models per population, "
                        f"{q['n_images']} images, {q['epochs']} epochs, ~3 min); not evidence, and the report "
                        "says so")
    p.add_argument("--models", type=int,
                   help=f"models per population K, on every dataset unless --check-models is given too (default "
                        f"{d['models']} on capture, {d['check_models']} on colour and null; the paper: 50)")
    p.add_argument("--check-models", type=int,
                   help=f"models per population on the colour and null datasets, the negative checks "
                        f"(default {d['check_models']}, or --models when that is given)")
    p.add_argument("--epochs", type=int, help=f"epochs per model, Algorithm 3 (default {d['epochs']})")
    p.add_argument("--n-images", type=int, help=f"GeoShapes images per dataset (default {d['n_images']})")
    p.add_argument("--image-size", type=int,
                   help=f"GeoShapes image side in pixels (default {d['image_size']}; at least 64 with PieAPP)")
    p.add_argument("--capture-strength", type=float,
                   help="strength of the capture-quality bias of the capture dataset in (0, 1] "
                        f"(default {d['capture_strength']:g})")
    p.add_argument("--spurious-strength", type=float,
                   help="strength of the colour shortcut of the colour dataset in (0, 1] "
                        f"(default {d['spurious_strength']:g})")
    p.add_argument("--mechanisms", help="comma-separated subset of capture,colour,null (default: all three)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of Algorithm 2 (default 0)")
    p.add_argument("--jobs", type=int,
                   help="populations trained at once, each in its own process (default: on a CPU one per core, "
                        "with 1 torch thread each; on a GPU 1); the results do not depend on it")
    p.add_argument("--pieapp-weights", help="PieAPP weights file; without it the perceptual cost is 1 - SSIM")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from geoaudit._validation import check_flag
    from geoaudit.demo import run_demo

    if args.jobs is not None:
        check_flag("--jobs", args.jobs, 1)

    if args.threads is None and args.device in ("auto", "cpu") and not torch.cuda.is_available():
        # the cores go to populations trained side by side (--jobs), one thread each: the results
        # then do not depend on the core count, and it was the faster layout (benchmarks/demo_jobs.py)
        torch.set_num_threads(1)

    mechanisms = None if not args.mechanisms else [m.strip() for m in args.mechanisms.split(",") if m.strip()]
    run_demo(args.out, quick=args.quick, n_images=args.n_images, image_size=args.image_size,
             capture_strength=args.capture_strength, spurious_strength=args.spurious_strength, models=args.models,
             check_models=args.check_models,
             epochs=args.epochs, mechanisms=mechanisms, seed=args.seed, device=args.device,
             pieapp_weights=args.pieapp_weights, jobs=args.jobs)
    return 0
