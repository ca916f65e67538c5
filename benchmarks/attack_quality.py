"""How visible are the attacks at the same success rate?  The matched-success quality table.

For each data set (GeoShapes at 32 px with 4 shape classes and no colour shortcut,
scikit-learn digits upscaled from 8 to 32 px) a small CNN is
trained here for a few epochs; then, on correctly classified test images, every attack's
strength knob is tuned by bisection (on a log scale) until its success rate is as close as it
gets to each target (50 % and 90 %), and the perturbations are measured there:

* perceptual          PerceptualDRO, cost 1 - SSIM, geoaudit's defaults (implicit cost step,
                      lambda = 1 in the paper's 1 - SSIM units); knob: step size;
* lambda=0            the same attack without the cost (early-stopped gradient ascent);
* implicit lam=L      the default attack with lambda = L (the lambda sweep, --lams); knob: step;
* implicit lam-tuned  the default attack with a large fixed step (10x the initial step below)
                      and lambda as the knob (the dual of a budget: success falls as it grows);
* pgd-l2              PGD, L2 ball, 10 steps of eps/4; knob: eps;
* paper-explicit      Algorithm 1 read literally (explicit cost step, refresh at 0, 5, ...,
                      raw lambda = 1); knob: step size;
* explicit lam=L      the explicit cost step (refresh from step 1) with lambda = L; knob: step;
* ssim-newton         the one-step attack of eq. 5 (CG solver); knob: eps.

The perceptual attacks' initial step size is 0.05 / (median loss-gradient norm at the clean
images), so that a first step moves the median image by 0.05 in L2 (the paper's 0.1 is for
ImageNet logits); step knobs range over 0.01-30x of it.  Each knob is tuned by a log grid of 6
values, then bisection (runs cached and shared by the two targets).  Reported per attack:
achieved success, mean 1 - SSIM (piq, 11 px window), mean 1 - MS-SSIM (piq with a 7 px window
over 3 scales, since piq's 5-scale default needs 161 px), mean L2, and the ratio of the
perceptual attack's 1 - SSIM to each other attack's.  Means are over all attacked images (an
image the attack fails on still counts its perturbation).  Grid pictures (clean | perceptual |
implicit lam=100 | lambda=0 | PGD-L2 at 90 % success, differences amplified) go to
docs/figures/attack_quality_<data>.png.

    OMP_NUM_THREADS=1 python benchmarks/attack_quality.py [--quick] [--threads 1] [--methods A,B]
        [--lams 10,100] [--explicit-lams 100] [--model-cache DIR]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from geoaudit.attacks import PGD, PerceptualDRO, SSIMNewton
from geoaudit.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (0.5, 0.9)
DEFAULT_LAM = PerceptualDRO("ssim").lam


# ---------------------------------------------------------------------------- data and models
def geoshapes_tensors(n_images, size, seed=0):
    from geoaudit.data import geoshapes, split_to_tensors

    dd = geoshapes(n_images=n_images, image_size=size, seed=seed, spurious_strength=0.0, n_classes=4)
    tr = split_to_tensors(dd["train"], image_size=size, channels=3)
    te = split_to_tensors(dd["test"], image_size=size, channels=3)
    return tr, te


def digits_tensors(size):
    try:
        from geoaudit.data import load_digits_tensors
    except ImportError:
        from geoaudit.defenses._centroid_eval import load_digits_tensors
    d = load_digits_tensors(image_size=size)
    return d["train"], d["test"]


def train(model, x, y, *, epochs, lr=2e-3, batch_size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


# ---------------------------------------------------------------------------- metrics
def one_minus_ssim(a, b):
    import piq

    return (1 - piq.ssim(a.clamp(0, 1), b, data_range=1.0, reduction="none")).double()


def one_minus_ms_ssim(a, b):
    import piq

    w = torch.tensor([0.0448, 0.2856, 0.3001])
    return (1 - piq.multi_scale_ssim(a.clamp(0, 1), b, data_range=1.0, kernel_size=7, scale_weights=w / w.sum(),
                                     reduction="none")).double()


def measure(x, adv, success):
    return {"success": float(success.float().mean()), "ssim": float(one_minus_ssim(adv, x).mean()),
            "ms_ssim": float(one_minus_ms_ssim(adv, x).mean()),
            "l2": float((adv - x).flatten(1).norm(dim=1).mean())}


# ---------------------------------------------------------------------------- attacks
def methods(steps, cg_iters, step, lams, explicit_lams=()):
    """name -> (build(knob), (low, high)); success increases with the knob (step size or eps).

    Every perceptual variant keeps its lambda and is tuned by its step size; PGD and
    SSIM-Newton by their L2 budget eps."""
    sb = (1e-2 * step, 30 * step)

    def perc(lam, **kw):
        return lambda p: PerceptualDRO("ssim", lam=lam, step_size=p, steps=steps, **kw)

    out = {"perceptual": (perc(DEFAULT_LAM), sb), "lambda=0": (perc(0.0), sb)}
    for lam in lams:
        if lam not in (0, DEFAULT_LAM):
            out[f"implicit lam={lam:g}"] = (perc(lam), sb)
    # lambda as the knob (the dual of a budget), a large fixed step: the implicit iteration
    # converges to the penalized optimum whatever the step; knob = 1 / lambda
    out["implicit lam-tuned"] = (lambda p: PerceptualDRO("ssim", lam=1.0 / p, step_size=10 * step, steps=steps),
                                 (1e-5, 1.0))
    out["pgd-l2"] = (lambda p: PGD(eps=p, step_size=p / 4, steps=10), (1e-2, 30.0))
    out["paper-explicit"] = (perc(DEFAULT_LAM, cost_step="explicit", cost_schedule="paper", cost_scale="raw"), sb)
    for lam in explicit_lams:
        if lam != 0:
            out[f"explicit lam={lam:g}"] = (perc(lam, cost_step="explicit"), sb)
    out["ssim-newton"] = (lambda p: SSIMNewton(eps=p, cg_iters=cg_iters), (1e-2, 30.0))
    return out


def tune(build, bounds, model, x, y, target, iters, cache, grid=6):
    """The knob whose success is closest to ``target``: a log grid, then bisection on log(knob).

    Success need not grow monotonically with the knob (huge steps overshoot and clip), so a grid
    of ``grid`` values first brackets the smallest knob reaching the target; bisection then
    refines that bracket.  Runs are cached (shared by the targets).  Returns (knob, result)."""
    def run(p):
        key = round(math.log(p), 9)
        if key not in cache:
            cache[key] = (p, build(p)(model, x, y))
        return cache[key][1]

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    pts = [lo + (hi - lo) * i / (grid - 1) for i in range(grid)]
    above = [q for q in pts if run(math.exp(q)).success_rate >= target]
    if above:
        hi = above[0]
        lo = max([q for q in pts if q < hi], default=hi)
        for _ in range(iters if lo < hi else 0):
            mid = (lo + hi) / 2
            if run(math.exp(mid)).success_rate >= target:
                hi = mid
            else:
                lo = mid
    return min(cache.values(), key=lambda pr: (abs(pr[1].success_rate - target), pr[0]))


def run_dataset(name, tr, te, *, args, out_dir):
    torch.manual_seed(0)
    channels = tr[0].shape[1]
    model, _ = build_model("small_cnn", num_classes=int(tr[1].max()) + 1, in_channels=channels,
                           image_size=tr[0].shape[-1])
    t0 = time.perf_counter()
    cached = None if args.model_cache is None else Path(args.model_cache) / f"{name}_small_cnn_{args.epochs}ep.pt"
    if cached is not None and cached.exists():
        model.load_state_dict(torch.load(cached))
        model.eval()
    else:
        train(model, *tr, epochs=args.epochs)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cached)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        pred = model(te[0]).argmax(1)
    acc = float((pred == te[1]).float().mean())
    keep = torch.nonzero(pred == te[1]).flatten()[:args.n]
    x, y = te[0][keep], te[1][keep]
    print(f"\n## {name}: small_cnn trained {args.epochs} epochs in {time.perf_counter() - t0:.0f} s, "
          f"test accuracy {acc:.3f}; attacking {len(y)} correctly classified test images")
    from geoaudit.attacks._pgd import input_gradient

    with torch.enable_grad():
        g = input_gradient(model, x, y)[1].flatten(1).norm(dim=1)
        g_full = input_gradient(model, x, y)[1]
    step = 0.05 / float(g.median())  # a first step moves the median image by 0.05 in L2
    probe = PerceptualDRO("ssim")
    h = float(probe.curvature(x, g_full, probe.cost.prepare(x)).median())
    print(f"median ||grad loss(x)|| {float(g.median()):.3g}: initial step size {step:.3g}; median curvature "
          f"of 1 - SSIM along it {h:.3g}")
    rows, chosen = [], {}
    table = methods(args.steps, args.cg_iters, step, args.lams, args.explicit_lams)
    names = [m for m in table if args.methods is None or m in args.methods]
    for mname in names:
        build, bounds = table[mname]
        cache = {}  # shared by the targets: a knob value is run once
        for target in TARGETS:
            t0 = time.perf_counter()
            knob, res = tune(build, bounds, model, x, y, target, args.iters, cache)
            m = measure(x, res.images, res.success)
            m.update(method=mname, target=target, knob=knob, runs=len(cache),
                     mean_steps=float(res.steps.float().mean()), seconds=time.perf_counter() - t0)
            rows.append(m)
            chosen[(target, mname)] = res.images
            print(f"  {mname} @ {target:.0%}: knob {knob:.3g} success {m['success']:.3f} 1-SSIM {m['ssim']:.4f} "
                  f"1-MS-SSIM {m['ms_ssim']:.4f} ({m['seconds']:.0f} s, {len(cache)} runs so far)", flush=True)
    rows.sort(key=lambda r: (r["target"], names.index(r["method"])))
    print("\n| target | method | knob | success | 1-SSIM | 1-MS-SSIM | L2 | mean steps | "
          "perceptual / this (1-SSIM) | perceptual / this (1-MS-SSIM) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ours = next((o for o in rows if o["target"] == r["target"] and o["method"] == "perceptual"), r)
        print(f"| {r['target']:.0%} | {r['method']} | {r['knob']:.3g} | {r['success']:.3f} | {r['ssim']:.4f} | "
              f"{r['ms_ssim']:.4f} | {r['l2']:.3f} | {r['mean_steps']:.1f} | "
              f"{ours['ssim'] / max(r['ssim'], 1e-12):.2f} | {ours['ms_ssim'] / max(r['ms_ssim'], 1e-12):.2f} |")
    if out_dir is not None:
        from geoaudit._io import atomic_save
        from geoaudit.report import attack_comparison_figure

        t = TARGETS[-1]
        shown = {m: chosen[(t, m)] for m in ("perceptual", "implicit lam=100", "lambda=0", "pgd-l2") if (t, m) in chosen}
        caps = {r["method"]: f"1-SSIM {r['ssim']:.3f}" for r in rows if r["target"] == t}
        fig = attack_comparison_figure(x, shown, k=6, captions=caps)
        path = out_dir / f"attack_quality_{name}.png"
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
        print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images, steps and bisection rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="geoshapes,digits")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    ap.add_argument("--explicit-lams", default="100", help="lambda sweep of the explicit step")
    ap.add_argument("--lams", default="10,100", help="lambda sweep of the implicit step")
    ap.add_argument("--model-cache", default=None, help="folder to keep the trained models in between runs")
    ap.add_argument("--n", type=int, default=None, help="images per data set")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.methods = None if args.methods is None else args.methods.split(",")
    args.lams = [float(v) for v in args.lams.split(",") if v]
    args.explicit_lams = [float(v) for v in args.explicit_lams.split(",") if v]
    args.n = args.n or (48 if args.quick else 128)
    args.steps = 100
    args.iters = 3 if args.quick else 4
    args.epochs = 10
    args.cg_iters = 30 if args.quick else 100
    out_dir = None if args.no_figures else ROOT / "docs" / "figures"
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# attack quality at matched success ({'quick' if args.quick else 'full'}); torch threads "
          f"{args.threads}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; uptime: {up}")
    print(f"# N = {args.steps} steps for the perceptual attacks, {args.iters} bisection rounds, "
          f"{args.n} images per data set")
    for name in args.data.split(","):
        if name == "geoshapes":
            tr, te = geoshapes_tensors(3000, 32)
        elif name == "digits":
            tr, te = digits_tensors(32)
        else:
            sys.exit(f"unknown data {name!r}")
        run_dataset(name, tr, te, args=args, out_dir=out_dir)


if __name__ == "__main__":
    main()
