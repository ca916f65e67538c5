"""Oblivious vs adaptive (BPDA / EOT) attacks through JPEG and bit depth, and SSIM-Newton's border.

Trains geoaudit's ``small_cnn`` on GeoShapes (32 px, 4 shape classes, no colour shortcut) in
the script, takes correctly classified test images and reports, per attack and defense:

* oblivious success: images attacked against the undefended model, then defended;
* adaptive success: the same attack run against ``Defended(model, defense)`` (BPDA; EOT over
  8 draws for the randomised JPEG), via ``evaluate(..., adaptive=True)``;

each over both denominators (clean images the defended / the undefended model gets right).
Then SSIM-Newton with piq's valid-window SSIM and with reflect padding: the share of the
perturbation energy in the outer 2-pixel ring (vs the share of pixels there), 1 - SSIM, and
the median cosine between the damped direction and eq. 5's undamped one.

    OMP_NUM_THREADS=1 python benchmarks/adaptive.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geoaudit.attacks import DDN, PGD, SSIMNewton, evaluate
from geoaudit.attacks._newton import border_energy_share, damping_cosines
from geoaudit.defenses import JPEG, BitDepth
from geoaudit.models import build_model


def geoshapes_model(n_train=3000, epochs=8, size=32, seed=0):
    """small_cnn trained on GeoShapes; returns (model, test images, test labels, accuracy)."""
    from geoaudit.data import geoshapes, split_to_tensors

    dd = geoshapes(n_images=n_train, image_size=size, seed=seed, spurious_strength=0.0, n_classes=4)
    xtr, ytr = split_to_tensors(dd["train"], image_size=size, channels=3)
    xte, yte = split_to_tensors(dd["test"], image_size=size, channels=3)
    torch.manual_seed(seed)
    model, _ = build_model("small_cnn", num_classes=4, in_channels=3, image_size=size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return model, xte, yte, acc


def fmt(v):
    return "n/a" if v is None else f"{v:.3f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and epochs")
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.n or (64 if args.quick else 200)
    torch.set_num_threads(1)
    up = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    print(f"# benchmarks/adaptive.py ({'quick' if args.quick else 'full'}); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; uptime: {up}")
    t0 = time.perf_counter()
    model, xte, yte, acc = geoshapes_model(epochs=5 if args.quick else 8)
    # The first n test images, correct or not: the denominators differ between defenses.
    x, y = xte[:n], yte[:n]
    print(f"# GeoShapes 32 px, small_cnn test accuracy {acc:.3f} (trained in {time.perf_counter() - t0:.0f} s); "
          f"{n} test images")

    defenses = [JPEG(75), BitDepth(4), JPEG(quality_range=(50, 90), random_state=0)]
    attacks = {"pgd-linf 4/255": PGD(eps=4 / 255, step_size=1 / 255, steps=10, norm="linf"),
               "pgd-linf 8/255": PGD(eps=8 / 255, step_size=2 / 255, steps=10, norm="linf"),
               "pgd-l2 0.5": PGD(eps=0.5, step_size=0.125, steps=10),
               "ddn": DDN(steps=50)}
    print("\n| attack | defense | clean acc. (defended) | oblivious success (defended base / undefended base) "
          "| adaptive success (defended base / undefended base) | adaptive / oblivious |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, attack in attacks.items():
        adv = attack(model, x, y)
        ev = evaluate(model, x, adv, y, defenses=defenses, adaptive=True, attack=attack, lpips=False, dists=False)
        for dname, d in ev.defenses.items():
            kind = "EOT 8 + BPDA" if d["eot_samples"] > 1 else "BPDA"
            ratio = (d["adaptive_success_rate"] / d["oblivious_success_rate"]
                     if d["oblivious_success_rate"] else float("nan"))
            print(f"| {name} | {dname} ({kind}) | {d['clean_accuracy']:.3f} | {fmt(d['oblivious_success_rate'])} / "
                  f"{fmt(d['oblivious_success_rate_undefended_base'])} | {fmt(d['adaptive_success_rate'])} / "
                  f"{fmt(d['adaptive_success_rate_undefended_base'])} | {ratio:.2f}x |")
        print(f"| {name} | none | {ev.clean_accuracy:.3f} | {fmt(ev.success_rate)} | | |")

    # SSIM-Newton at the border: valid-window SSIM vs reflect padding.
    import piq

    m = min(n, 48)
    keep = torch.nonzero(model(x).argmax(1) == y).flatten()[:m]
    xs, ys = x[keep], y[keep]
    print(f"\n# SSIM-Newton (cg, damping 1e-2) on {len(ys)} correctly classified images; outer ring 2 px")
    print("| padding | eps | success | energy share in ring (median) | pixel share | 1 - SSIM (piq, valid) | "
          "1 - SSIM (reflect) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    from geoaudit.attacks import SSIMCost

    reflect = SSIMCost(padding="reflect")
    for eps in (0.5, 1.0):
        for padding in ("valid", "reflect"):
            res = SSIMNewton(eps=eps, padding=padding)(model, xs, ys)
            share, pix = border_energy_share(res.images - xs)
            v = float((1 - piq.ssim(res.images, xs, data_range=1.0, reduction="none")).mean())
            r = float(reflect(res.images, xs).mean())
            print(f"| {padding} | {eps} | {res.success_rate:.3f} | {float(share.median()):.3f} | {pix:.3f} | "
                  f"{v:.4f} | {r:.4f} |")
    for padding in ("valid", "reflect"):
        cos = damping_cosines(SSIMNewton(padding=padding), model, xs, ys)
        print(f"# damping 1e-2 vs undamped (1e-8), padding {padding}: median cosine {float(cos.median()):.3f} "
              f"(quartiles {float(cos.quantile(0.25)):.3f}, {float(cos.quantile(0.75)):.3f})")
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
