"""Grid of every baseline attack at matched success (docs/figures/attack_grid_matched.png).

small_cnn on GeoShapes 32 px (trained in the script, benchmarks/adaptive.py); each attack's
budget is set by bisection on a log scale so that its success on the same correctly
classified test images is nearest the target (50 %): PGD-L2 and PGD-Linf (eps), FGSM (eps),
DDN (its largest norm), SSIM-Newton with piq's valid-window SSIM and with reflect padding
(eps).  One figure: clean row, then per attack its images and the differences amplified by
one common factor per column.  Prints each attack's knob, success, 1 - SSIM (piq), L2 and the
share of the perturbation energy in the outer 2-pixel ring.

    OMP_NUM_THREADS=1 python benchmarks/attack_grids.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptive import geoshapes_model

from geoaudit.attacks import DDN, FGSM, PGD, SSIMNewton
from geoaudit.attacks._newton import border_energy_share


def tune(build, lo, hi, model, x, y, target, rounds):
    """Bisection (log scale) on an increasing knob; the run nearest ``target``."""
    seen = []
    for _ in range(rounds):
        mid = (lo * hi) ** 0.5
        res = build(mid)(model, x, y)
        seen.append((mid, res))
        lo, hi = (lo, mid) if res.success_rate >= target else (mid, hi)
    return min(seen, key=lambda kr: abs(kr[1].success_rate - target))


def main(argv=None):
    import piq

    from geoaudit._io import atomic_save
    from geoaudit.report import attack_comparison_figure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--target", type=float, default=0.5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    up = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    print(f"# benchmarks/attack_grids.py; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; uptime: {up}")
    model, xte, yte, acc = geoshapes_model(epochs=5 if args.quick else 8)
    with torch.no_grad():
        keep = torch.nonzero(model(xte).argmax(1) == yte).flatten()[:48 if args.quick else 96]
    x, y = xte[keep], yte[keep]
    rounds = 6 if args.quick else 8
    builders = {
        "PGD-L2": (lambda e: PGD(eps=e, step_size=e / 4, steps=20), 0.01, 4.0),
        "PGD-Linf": (lambda e: PGD(eps=e, step_size=e / 4, steps=20, norm="linf"), 1e-4, 0.2),
        "FGSM": (lambda e: FGSM(eps=e), 1e-4, 0.3),
        "DDN": (lambda e: DDN(steps=100, max_norm=e), 0.01, 4.0),
        "SSIM-Newton valid": (lambda e: SSIMNewton(eps=e, padding="valid", cg_iters=100), 0.05, 20.0),
        "SSIM-Newton reflect": (lambda e: SSIMNewton(eps=e, padding="reflect", cg_iters=100), 0.05, 20.0),
    }
    print(f"# GeoShapes 32 px, small_cnn test accuracy {acc:.3f}; {len(y)} correctly classified images; "
          f"target success {args.target}")
    print("| attack | knob | success | 1 - SSIM (piq) | mean L2 | energy share in 2-px ring (pixels: "
          f"{border_energy_share(x - x + 1)[1]:.3f}) |")
    print("| --- | --- | --- | --- | --- | --- |")
    adv, captions = {}, {}
    for name, (build, lo, hi) in builders.items():
        knob, res = tune(build, lo, hi, model, x, y, args.target, rounds)
        d = res.images - x
        ssim = float((1 - piq.ssim(res.images, x, data_range=1.0, reduction="none")).mean())
        share = float(border_energy_share(d)[0].median())
        print(f"| {name} | {knob:.4g} | {res.success_rate:.3f} | {ssim:.4f} | {float(d.flatten(1).norm(dim=1).mean()):.3f}"
              f" | {share:.3f} |")
        adv[name] = res.images
        captions[name] = f"success {res.success_rate:.2f}, 1-SSIM {ssim:.4f}"
    fig = attack_comparison_figure(x, adv, k=6, captions=captions)
    out = ROOT / "docs" / "figures" / "attack_grid_matched.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, lambda t: fig.savefig(t, format="png", dpi=80))
    print(f"# wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
