"""The demo's training attacks side by side: lambda of perceptual-DRO against time and visibility.

    OMP_NUM_THREADS=1 python benchmarks/demo_training_attack.py --model DIR/model_000 --data DIR/data [--n 256]

On ``n`` training images of a demo dataset and one trained demo model (e.g. a plain model of
``benchmarks/demo_power.py``), runs the demo's training attacks with the demo's knobs (step 0.1,
N = 20, early stop; PGD L2 eps 0.5, 10 steps): the perceptual attack with the explicit step at
lambda = 1 (the demo's earlier setting) and with the implicit step at lambda 1, 10, 30, 100;
prints success, mean steps taken, mean 1 - SSIM, mean L2 and seconds per image (what Algorithm 2
costs per round), then ``uptime``.
"""
import argparse
import subprocess
import time


def main(argv=None):
    import piq
    import torch

    from geoaudit.attacks import make_attack
    from geoaudit.data import load_geo_dataset, split_to_tensors
    from geoaudit.models import load_model

    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--lams", default="1,10,30,100")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, cfg = load_model(a.model, device="cpu")
    dd = load_geo_dataset(a.data)
    x, y = split_to_tensors(dd["train"], image_size=cfg["image_size"], channels=cfg["in_channels"], limit=a.n)
    variants = {"pgd (L2 eps 0.5, 10 steps)": make_attack("pgd", eps=0.5, step_size=0.1, steps=10, norm="l2"),
                "perceptual explicit lam=1": make_attack("perceptual", cost="ssim", lam=1.0, step_size=0.1, steps=20,
                                                         cost_step="explicit")}
    for lam in [float(v) for v in a.lams.split(",") if v]:
        variants[f"perceptual implicit lam={lam:g}"] = make_attack("perceptual", cost="ssim", lam=lam,
                                                                   step_size=0.1, steps=20, cost_step="implicit")
    print(f"# {len(y)} training images of {a.data}; model {a.model}")
    print("| attack | success | mean steps | 1 - SSIM | L2 | ms / image |")
    print("|---|---|---|---|---|---|")
    for name, atk in variants.items():
        t0 = time.perf_counter()
        res = atk(model, x, y)
        dt = time.perf_counter() - t0
        adv = res.images.detach().clamp(0, 1)
        ssim = float((1 - piq.ssim(adv, x, data_range=1.0, reduction="none")).mean())
        steps = float(res.steps.float().mean()) if getattr(res, "steps", None) is not None else float("nan")
        print(f"| {name} | {float(res.success.float().mean()):.3f} | {steps:.1f} | {ssim:.4f} | "
              f"{float((adv - x).flatten(1).norm(dim=1).mean()):.3f} | {1000 * dt / len(y):.1f} |", flush=True)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())


if __name__ == "__main__":
    main()
