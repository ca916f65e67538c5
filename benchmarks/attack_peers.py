"""geoaudit's PGD, FGSM and DDN next to torchattacks at equal settings: success, L2, time, ratios.

Same model (small_cnn trained on GeoShapes 32 px in the script, see benchmarks/adaptive.py),
same images, same hyperparameters, no random start; each variant timed ``--repeats`` times,
interleaved, minimum kept.  torchattacks is a benchmark-only dependency
(``pip install torchattacks``; geoaudit never imports it).  torchattacks has no DDN: DDN is
set against PGD-L2 at the smallest budget reaching DDN's success and against torchattacks'
DeepFool (another minimal-L2 attack).

    OMP_NUM_THREADS=1 python benchmarks/attack_peers.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptive import geoshapes_model

from geoaudit.attacks import DDN, FGSM, PGD


def stats(model, x, y, adv):
    with torch.no_grad():
        success = float((model(adv).argmax(1) != y).float().mean())
    l2 = (adv - x).flatten(1).norm(dim=1)
    return success, float(l2.mean()), float(l2.median())


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import torchattacks

    torch.set_num_threads(1)
    up = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    print(f"# benchmarks/attack_peers.py ({'quick' if args.quick else 'full'}); torchattacks "
          f"{torchattacks.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; uptime: {up}")
    model, xte, yte, acc = geoshapes_model(epochs=5 if args.quick else 8)
    with torch.no_grad():
        keep = torch.nonzero(model(xte).argmax(1) == yte).flatten()[:64 if args.quick else 200]
    x, y = xte[keep].contiguous(), yte[keep]  # torchattacks' PGDL2 needs contiguous images
    print(f"# GeoShapes 32 px, small_cnn test accuracy {acc:.3f}; {len(y)} correctly classified test images")

    pairs = {
        "fgsm linf 8/255": (lambda: FGSM(eps=8 / 255)(model, x, y).images,
                            lambda: FGSM(eps=8 / 255, score=False)(model, x, y).images,
                            lambda: torchattacks.FGSM(model, eps=8 / 255)(x, y)),
        "pgd linf 8/255, 10 x 2/255": (
            lambda: PGD(eps=8 / 255, step_size=2 / 255, steps=10, norm="linf")(model, x, y).images, None,
            lambda: torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False)(x, y)),
        "pgd l2 0.5, 10 x 0.125": (
            lambda: PGD(eps=0.5, step_size=0.125, steps=10)(model, x, y).images, None,
            lambda: torchattacks.PGDL2(model, eps=0.5, alpha=0.125, steps=10, random_start=False)(x, y)),
    }
    print("\n| attack | variant | success | mean L2 | time (s) | time / torchattacks | max abs diff to torchattacks |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (ours, ours_lean, theirs) in pairs.items():
        variants = [("geoaudit", ours)] + ([("geoaudit score=False", ours_lean)] if ours_lean else []) + \
                   [("torchattacks", theirs)]
        times = {v: float("inf") for v, _ in variants}
        outs = {}
        for _ in range(args.repeats):  # interleaved
            for v, fn in variants:
                t, outs[v] = timed(fn, 1)
                times[v] = min(times[v], t)
        for v, _ in variants:
            s, l2, _ = stats(model, x, y, outs[v])
            diff = float((outs[v] - outs["torchattacks"]).abs().max())
            print(f"| {name} | {v} | {s:.3f} | {l2:.4f} | {times[v]:.4f} | {times[v] / times['torchattacks']:.2f}x | "
                  f"{diff:.2e} |")

    # DDN (minimal L2) vs PGD-L2 at matched success and torchattacks' DeepFool.
    t_ddn, ddn = timed(lambda: DDN(steps=100)(model, x, y), 1)
    s_ddn, l2_ddn, med_ddn = stats(model, x, y, ddn.images)
    rows = [("geoaudit DDN, 100 steps", s_ddn, l2_ddn, med_ddn, t_ddn)]
    lo, hi = 0.01, 4.0
    for _ in range(7 if args.quick else 10):  # bisection: smallest PGD-L2 budget with DDN's success
        mid = (lo * hi) ** 0.5
        s, *_ = stats(model, x, y, PGD(eps=mid, step_size=mid / 4, steps=20)(model, x, y).images)
        lo, hi = (lo, mid) if s >= s_ddn else (mid, hi)
    t_pgd, pgd = timed(lambda: PGD(eps=hi, step_size=hi / 4, steps=20)(model, x, y).images, 1)
    rows.append((f"geoaudit PGD-L2 eps {hi:.3f}, 20 steps (matched success)", *stats(model, x, y, pgd), t_pgd))
    t_df, df = timed(lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y), 1)
    rows.append(("torchattacks DeepFool, 50 steps", *stats(model, x, y, df), t_df))
    print("\n| minimal-L2 attack | success | mean L2 | median L2 | time (s) | mean L2 / DDN's |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, s, l2, med, t in rows:
        print(f"| {name} | {s:.3f} | {l2:.4f} | {med:.4f} | {t:.2f} | {l2 / l2_ddn:.2f}x |")


if __name__ == "__main__":
    main()
