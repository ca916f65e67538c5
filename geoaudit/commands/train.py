"""`geoaudit train`: train a model population (plain, PGD-DRO or perceptual-DRO)."""
from __future__ import annotations

from geoaudit.commands._common import add_device_arg

ARCH_CHOICES = ("small_cnn", "lenet5", "mlp7", "resnet18", "resnet50")


def register(sub):
    p = sub.add_parser(
        "train",
        help="train a population of models (Algorithms 2 and 3); re-running the same command resumes",
        description="Train K models alike but for their seeds into OUT/model_000 ... plus OUT/manifest.json. "
                    "pgd and perceptual build the weighted adversarial dataset D once (Algorithm 2), then train "
                    "each model on it (Algorithm 3). Re-running the same command resumes where it stopped.",
    )
    p.add_argument("--data", required=True,
                   help="dataset folder (columns image and label), or digits (scikit-learn, offline), mnist, "
                        "fashion-mnist (torchvision, under --data-root)")
    p.add_argument("--data-root", default=None, help="where torchvision keeps MNIST / Fashion-MNIST")
    p.add_argument("--split", default="train", help="split to train on (default: train)")
    p.add_argument("--augment", default="plain", help="plain, pgd or perceptual (default: plain)")
    p.add_argument("--models", type=int, default=50, help="number of models K (default: 50)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per model, T2 of Algorithm 3 (default: 10)")
    p.add_argument("--arch", default="small_cnn", help=f"architecture: {', '.join(ARCH_CHOICES)} (default: small_cnn)")
    p.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="WEIGHTS",
                   help="every member starts from pretrained weights: alone, torchvision's DEFAULT ResNet "
                        "weights; or IMAGENET1K_V1 / IMAGENET1K_V2 (from torch's cache), or a state-dict FILE. "
                        "Missing weights are an error (leave --pretrained out for random initial weights)")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="every member starts from this one theta0 (the paper's setting): a checkpoint folder "
                        "of the same architecture, classes and image size, or a state-dict file "
                        "(default: initial weights drawn per seed)")
    p.add_argument("--backend", default="local", help="local or ray (default: local)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--ray-gpus-per-model", type=float, default=0.0, help="GPUs per Ray task (default: 0)")
    p.add_argument("--seed-start", type=int, default=0, help="seeds are S, S+1, ..., S+K-1 (default: 0)")
    p.add_argument("--batch-size", type=int, default=64, help="images per SGD step (default: 64)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default: 0.05)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD L2 weight decay (default: 5e-4)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this square size")
    p.add_argument("--channels", type=int, default=3, help="1 or 3 (default: 3)")
    g = p.add_argument_group("Algorithm 2 (pgd and perceptual)")
    g.add_argument("--rounds", type=int, default=3, help="T1 of Algorithm 2 (default: 3)")
    g.add_argument("--dro-seed", type=int, default=0, help="seed of Algorithm 2 (default: 0)")
    g.add_argument("--reuse", default="auto",
                   help="cluster-center attack reuse: auto (kept only where a pilot shows it saves gradient "
                        "steps), on or off (default: auto)")
    g.add_argument("--no-reuse", action="store_true", help="same as --reuse off")
    g.add_argument("--storage", default="float16",
                   help="how D stores attacks: float16 (keeps perturbations finer than 1/255) or uint8 "
                        "(half the bytes, rounds to 1/255) (default: float16)")
    g.add_argument("--cluster-size", type=int, default=5, help="images per k-means cluster (default: 5)")
    g.add_argument("--kmeans", default="auto", help="auto (torch), sklearn or torch (default: auto)")
    a = p.add_argument_group("attack hyperparameters (the training preset geoaudit.train.DEFAULT_ATTACK_PARAMS, for small images)")
    a.add_argument("--eps", type=float, default=None, help="pgd: radius of the perturbation ball")
    a.add_argument("--norm", default=None, help="pgd: l2 or linf")
    a.add_argument("--step-size", type=float, default=None, help="pgd and perceptual: step length")
    a.add_argument("--attack-steps", type=int, default=None, help="pgd and perceptual: iterations")
    a.add_argument("--cost", default=None, help="perceptual: ssim or pieapp")
    a.add_argument("--lam", type=float, default=None, help="perceptual: weight of the perceptual cost")
    a.add_argument("--confidence", type=float, default=None, help="perceptual: margin to stop at")
    a.add_argument("--pieapp-weights", default=None, metavar="FILE",
                   help="perceptual with --cost pieapp: PieAPP weights file (else $GEOAUDIT_PIEAPP_WEIGHTS)")
    add_device_arg(p)
    p.add_argument("--amp", default="off", help="off or bf16: bfloat16 autocast of the training step (default: off)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays on a GPU)")
    p.add_argument("--stack", default="off", metavar="K",
                   help="train members together: off (one after another), K (groups of K small_cnn, lenet5 or mlp7 "
                        "members as one grouped module, equal to one at a time up to float rounding; other "
                        "architectures K at a time on CUDA streams, CUDA only) or auto (groups of 10 small members "
                        "on CUDA, off on a CPU, where it was measured not to pay) (default: off)")
    p.add_argument("--bn-samples", type=int, default=None, metavar="N",
                   help="after training, re-estimate BatchNorm statistics on N draws of the training data "
                        "(0: keep them as trained) (default: 2048)")
    p.add_argument("--out", required=True, help="output folder of the population")
    p.set_defaults(func=run)


#: Flags of the perceptual cost: one command line serves the three methods (the README's loop),
#: so pgd and plain note them as unused instead of refusing them.
PERCEPTUAL_ONLY = ("--cost", "--lam", "--confidence", "--pieapp-weights")


def _attack_params(args):
    perceptual = {"--cost": args.cost, "--lam": args.lam, "--confidence": args.confidence,
                  "--pieapp-weights": args.pieapp_weights}
    if args.augment == "perceptual":
        params = {"cost": args.cost, "lam": args.lam, "step_size": args.step_size, "steps": args.attack_steps,
                  "confidence": args.confidence, "pieapp_weights": args.pieapp_weights}
        wrong = {"--eps": args.eps, "--norm": args.norm}
    else:
        params = {"eps": args.eps, "norm": args.norm, "step_size": args.step_size, "steps": args.attack_steps}
        wrong = {}
        unused = [k for k, v in perceptual.items() if v is not None]
        if unused:
            print(f"note: {', '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to --augment perceptual "
                  f"only; not used by --augment {args.augment}")
    from geoaudit._errors import InputError

    given = [k for k, v in wrong.items() if v is not None]
    if given:
        raise InputError(f"{', '.join(given)} do(es) not apply to --augment {args.augment}.")
    if args.pieapp_weights is not None and args.augment == "perceptual":
        from pathlib import Path

        if not Path(args.pieapp_weights).is_file():
            raise InputError(f"--pieapp-weights {args.pieapp_weights!r} is not a file; give the PieAPP weights file.")
    return {k: v for k, v in params.items() if v is not None}


def _builtin_data(args):
    """A built-in data set name (no folder of that name) as in-memory training data."""
    from pathlib import Path

    from geoaudit.data import BUILTIN_DATA

    if Path(args.data).exists() or args.data not in BUILTIN_DATA:
        return args.data
    from geoaudit.data import load_split
    from geoaudit.train import from_tensors

    x, y, names = load_split(args.data, args.split, image_size=args.image_size or 28, channels=args.channels,
                             data_root=args.data_root)
    return from_tensors(x, y, class_names=names, source=args.data, split=args.split)


def _stack(value):
    """``--stack`` as train_population's ``stack``: off -> False, auto, or a group size."""
    from geoaudit._errors import InputError

    if value in ("off", "auto"):
        return False if value == "off" else "auto"
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise InputError(f"--stack must be off, auto or a group size of at least 1. Got {value!r} instead.")
    return k


def run(args) -> int:
    from geoaudit._device import resolve_device
    from geoaudit._validation import check_options
    from geoaudit.train import METHODS, make_attack, train_population

    check_options("--augment", args.augment, METHODS, caller="geoaudit train")
    check_options("--backend", args.backend, ("local", "ray"), caller="geoaudit train")
    check_options("--arch", args.arch, ARCH_CHOICES, caller="geoaudit train")
    if args.models < 1:
        from geoaudit._errors import InputError

        raise InputError(f"--models must be at least 1. Got {args.models} instead.")
    check_options("--reuse", args.reuse, ("auto", "on", "off"), caller="geoaudit train")
    check_options("--storage", args.storage, ("float16", "uint8"), caller="geoaudit train")
    check_options("--amp", args.amp, ("off", "bf16"), caller="geoaudit train")
    stack = _stack(args.stack)
    if args.bn_samples is not None and args.bn_samples < 0:
        from geoaudit._errors import InputError

        raise InputError(f"--bn-samples must be 0 (keep BatchNorm statistics as trained) or a number of draws. "
                         f"Got {args.bn_samples} instead.")
    if args.backend == "ray" and stack not in (False, 1, "auto"):
        from geoaudit._errors import InputError

        raise InputError(f"--stack {args.stack} applies to --backend local (each Ray task trains one model).")
    reuse = False if args.no_reuse else {"auto": "auto", "on": True, "off": False}[args.reuse]
    device = resolve_device(args.device)
    attack = make_attack(args.augment, **_attack_params(args)) if args.augment != "plain" else None
    seeds = list(range(args.seed_start, args.seed_start + args.models))
    res = train_population(
        _builtin_data(args), augment=args.augment, n_models=args.models, epochs=args.epochs, arch=args.arch, seeds=seeds,
        out_dir=args.out, backend=args.backend, attack=attack, device=device, split=args.split,
        image_size=args.image_size, channels=args.channels, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, dro_rounds=args.rounds, dro_random_state=args.dro_seed,
        reuse=reuse, storage=args.storage, cluster_size=args.cluster_size, kmeans=args.kmeans, pretrained=args.pretrained,
        init_from=args.init_from, ray_address=args.ray_address, ray_gpus_per_model=args.ray_gpus_per_model,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile, stack=stack,
        **({} if args.bn_samples is None else {"bn_samples": args.bn_samples}))
    m = res.manifest
    for r in m.get("retrained_damaged", ()):
        print(f"{r['name']}: trained again, its finished checkpoint was damaged ({r['reason']})")
    done = [e for e in m["models"] if e["status"] == "done"]
    print(f"{args.augment}: {len(done)}/{len(m['models'])} models in {res.out_dir} "
          f"(trained {m['timing'].get('models_trained_this_run', 0)} this run, "
          f"{m['timing'].get('total_seconds_this_run', 0.0):.1f} s); manifest: {res.out_dir / 'manifest.json'}")
    grp = (m.get("stack") or {}).get("group_size", 1)
    if grp > 1:
        print(f"Members trained together in groups of up to {grp} (--stack {args.stack}).")
    a2 = (m.get("weighted_dataset") or {}).get("algorithm2")
    if a2:
        wd = m["weighted_dataset"]
        q = a2.get("mean_one_minus_ssim")
        print(f"Algorithm 2: D has {wd['size']} examples ({wd['bytes'] / 1e6:.1f} MB, {wd.get('storage', 'uint8')}); "
              f"{a2['attacks_computed']} attacks computed, {a2.get('gradient_steps', 0)} gradient steps, "
              f"reuse {'on' if a2.get('reuse_used') else 'off'} (rate {a2['reuse_rate']:.1%}), "
              f"attack success {a2['success_rate']:.1%}" + (f", mean 1-SSIM {q:.4f}" if q is not None else ""))
        dec = a2.get("reuse_decision")
        if dec:
            print(f"Attack reuse (auto): {'kept' if dec['use_reuse'] else 'switched off'}; projected "
                  f"{dec['projected_steps_per_round_with_reuse']:.0f} gradient steps per round with it vs "
                  f"{dec['projected_steps_per_round_without_reuse']:.0f} without "
                  f"(k-means {dec['kmeans_seconds']:.1f} s)")
    return 0
