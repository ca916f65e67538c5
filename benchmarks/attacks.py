"""Benchmarks of the perceptual DRO attack, side by side in one run, printed as ratios.

(a) batched attack vs a per-image loop of the same attack (the paper's way), batch 64;
(b) the attack vs its floor: the same model forward+backward passes (per active sample and
    step) and cost-gradient evaluations (per refresh), timed alone on the same batches; and
    vs the full-batch floor: every sample-step's pass and sample refresh priced at the full
    batch's per-sample rate (what shrinking batches cannot beat);
    where the floor's time goes (model vs cost), and the fused SSIM gradient vs piq autograd;
(c) cost_every=1 vs cost_every=5: time and final perceptual distance;
(d) peak memory of one PieAPP cost-gradient evaluation at batch 64 under memory budgets.

PieAPP's real weights cannot be downloaded here: for (d) and for --cost pieapp the PieAPP
network is built with RANDOM weights ON PURPOSE, for timing and memory only.

    python benchmarks/attacks.py [--device cpu|cuda] [--quick] [--cost ssim|pieapp]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from geoaudit.attacks import PerceptualDRO, PieAPPCost, SSIMCost
from geoaudit.attacks._pgd import input_gradient
from geoaudit.train import build_model


def striped(n, size, seed=0):
    """Three classes of stripes over noise (the synthetic task of the tests), RGB."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    i = torch.arange(size, dtype=torch.float32)
    rows, cols = i.view(-1, 1).expand(size, size), i.view(1, -1).expand(size, size)
    pats = torch.stack([torch.sin(rows * 1.6), torch.sin(cols * 1.6), torch.sin((rows + cols) * 1.1)])
    base = pats[labels] * (torch.rand(n, generator=g) * 0.4 + 0.8).view(-1, 1, 1)
    x = 0.5 + 0.25 * base.unsqueeze(1).expand(n, 3, size, size) + 0.08 * torch.randn(n, 3, size, size, generator=g)
    return x.clamp(0, 1), labels


def trained_small_cnn(size, device):
    torch.manual_seed(0)
    model, _ = build_model("small_cnn", num_classes=3, in_channels=3, image_size=size)
    x, y = striped(192, size, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y, label_smoothing=0.3).backward()
        opt.step()
    return model.eval().to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def work(steps, refresh, max_steps):
    """(sample forward+backward passes, sample cost gradients) the attack needed, from its steps."""
    passes = int(torch.clamp(steps + 1, max=max_steps).sum())  # each step's pass + the stopping check
    grads = sum(int((steps > k).sum()) for k in range(int(steps.max()) + 1) if refresh(k))
    return passes, grads


def floor(model, cost, x, y, steps, refresh, max_steps):
    """The attack's unavoidable work alone: at step k, one forward+backward for the samples still
    running (those with steps >= k, the check included) and, at refresh steps, one cost gradient
    for those that take the step (steps > k); a last forward for samples that ran out of steps."""
    order = torch.argsort(steps, descending=True)
    x, y, steps = x[order], y[order], steps[order]
    ref = cost.prepare(x)
    for k in range(int(steps.max()) + 1):
        checked = int((steps >= k).sum())
        if k == max_steps:  # the final no-grad check after the last step
            with torch.no_grad():
                model(x[:checked])
            break
        input_gradient(model, x[:checked], y[:checked])
        moving = int((steps > k).sum())
        if moving and refresh(k):
            cost.value_and_grad(x[:moving], cost.select(ref, torch.arange(moving, device=x.device)))


def random_pieapp(device):
    from piq.pieapp import PieAPPModel

    torch.manual_seed(0)
    return PieAPPModel().to(device)  # RANDOM weights, on purpose: timing and memory only


def make_cost(name, device, budget_mb=1024):
    if name == "ssim":
        return SSIMCost()
    return PieAPPCost(network=random_pieapp(device), memory_budget_mb=budget_mb)


def perceptual_distance(cost, adv, x):
    with torch.no_grad():
        return float(cost.value_and_grad(adv, cost.prepare(x))[0].mean())


def bench_batched_vs_loop(model, x, y, attack, device, repeats):
    per_image, batched = [], []
    for _ in range(repeats):  # interleaved, best of: the machine is shared
        tb, res = timed(lambda: attack(model, x, y), device)
        tl, _ = timed(lambda: [attack(model, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])], device)
        batched.append(tb)
        per_image.append(tl)
    n = x.shape[0]
    return {"batch": n, "batched_images_per_s": n / min(batched), "loop_images_per_s": n / min(per_image),
            "speedup": min(per_image) / min(batched), "success_rate": res.success_rate,
            "mean_steps": float(res.steps.float().mean())}


def bench_floor(model, x, y, attack, device, repeats):
    at, fl = [], []
    res = None
    for _ in range(repeats):
        ta, res = timed(lambda: attack(model, x, y), device)
        tf, _ = timed(lambda: floor(model, attack.cost, x, y, res.steps, attack._refresh, attack.steps), device)
        at.append(ta)
        fl.append(tf)
    # where the floor's time goes: model passes vs cost gradients, at the full batch
    ref = attack.cost.prepare(x)
    tm = min(timed(lambda: input_gradient(model, x, y), device)[0] for _ in range(10))
    tc = min(timed(lambda: attack.cost.value_and_grad(x, ref), device)[0] for _ in range(10))
    # the honest floor: every sample-step's pass and every sample's cost refresh priced at the
    # full batch's per-sample rate (what perfect batching would cost)
    passes, grads = work(res.steps, attack._refresh, attack.steps)
    full = passes / x.shape[0] * tm + grads / x.shape[0] * tc
    out = {"attack_s": min(at), "floor_s": min(fl), "ratio": min(at) / min(fl),
           "full_batch_floor_s": full, "ratio_to_full_batch_floor": min(at) / full,
           "model_fwd_bwd_ms_at_batch": tm * 1000, "cost_grad_ms_at_batch": tc * 1000}
    if isinstance(attack.cost, SSIMCost):  # the fused gradient vs autograd through piq.ssim
        tp = min(timed(lambda: super(SSIMCost, attack.cost).value_and_grad(x, ref), device)[0]
                 for _ in range(10))
        out["piq_autograd_ssim_grad_ms_at_batch"] = tp * 1000
        out["fused_ssim_speedup_vs_piq"] = tp / tc
    return out


def bench_cost_every(model, x, y, cost, device, args):
    rows = {}
    for ce in (1, 5):
        attack = PerceptualDRO(cost, step_size=args.step_size, steps=args.steps, confidence=args.confidence,
                               cost_every=ce)
        t, res = timed(lambda: attack(model, x, y), device)
        t = min(t, *(timed(lambda: attack(model, x, y), device)[0] for _ in range(args.repeats - 1)))
        rows[ce] = {"seconds": t, "success_rate": res.success_rate, "mean_steps": float(res.steps.float().mean()),
                    "distance": perceptual_distance(attack.cost, res.images, x)}
    rows["time_ratio_1_over_5"] = rows[1]["seconds"] / rows[5]["seconds"]
    return rows


class RSSSampler:
    """Highest resident set size seen while the block runs (Linux /proc/self/statm)."""

    def __init__(self, interval=0.001):
        import threading

        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def memory_child(budget, batch, size, device_name):
    """Runs in a fresh process: peak memory of one PieAPP cost gradient under a budget."""
    device = torch.device(device_name)
    x, _ = striped(batch, size)
    x = x.to(device)
    x_adv = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
    cost = make_cost("pieapp", device, budget_mb=budget)
    sync(device)
    # baseline: network and images in memory; the peak covers the clean-feature cache and the
    # chunks' activations.  CPU: the resident set sampled every millisecond (large tensors are
    # mmap-backed, so freeing them shrinks it; ru_maxrss would keep init-time spikes).
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        ref = cost.prepare(x)
        t, _ = timed(lambda: cost.value_and_grad(x_adv, ref), device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        sampler = RSSSampler()
        base = sampler.rss()
        with sampler:
            ref = cost.prepare(x)
            t, _ = timed(lambda: cost.value_and_grad(x_adv, ref), device)
        peak = sampler.peak - base
    print(json.dumps({"budget_mb": budget, "chunk_patches": cost.patch_chunk(), "peak_mb_above_baseline":
                      peak / 2**20, "seconds": t}))


def bench_memory(batch, size, device, budgets):
    rows = []
    for b in budgets:
        cmd = [sys.executable, __file__, "--_memory-child", str(b), "--_batch", str(batch), "--_size", str(size),
               "--device", str(device)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats, smaller memory batch")
    p.add_argument("--cost", default="ssim", choices=("ssim", "pieapp"),
                   help="cost for (a)-(c) (pieapp: random weights, timing only)")
    p.add_argument("--size", type=int, default=32, help="image side (default 32)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; see benchmarks/threads.py for why 1 can be faster)")
    p.add_argument("--_memory-child", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--_size", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child is not None:
        memory_child(args._memory_child, args._batch, args._size, args.device)
        return 0
    device = torch.device(args.device)
    args.steps = 40 if args.quick else 100
    args.repeats = 1 if args.quick else 2
    # The paper's step 0.1 is for ImageNet logits; this small model's input gradients are small,
    # so a larger step lets most samples succeed within the budget, at spread-out step counts.
    args.step_size, args.confidence = 8.0, 0.5
    torch.manual_seed(0)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cost: {args.cost}{' (RANDOM weights, timing only)' if args.cost == 'pieapp' else ''}, "
          f"model: geoaudit small_cnn trained briefly on synthetic stripes, {args.size}px RGB")
    model = trained_small_cnn(args.size, device)
    x, y = striped(args.batch, args.size, seed=5)
    x, y = x.to(device), y.to(device)
    cost = make_cost(args.cost, device)
    attack = PerceptualDRO(cost, step_size=args.step_size, steps=args.steps, confidence=args.confidence,
                           cost_every=5)
    print(f"attack: {attack!r}")

    a = bench_batched_vs_loop(model, x, y, attack, device, args.repeats)
    print(f"\n(a) batched vs per-image loop, batch {a['batch']}: {a['batched_images_per_s']:.1f} vs "
          f"{a['loop_images_per_s']:.1f} images/s -> {a['speedup']:.1f}x "
          f"(success {a['success_rate']:.2f}, mean steps {a['mean_steps']:.1f})")

    b = bench_floor(model, x, y, attack, device, args.repeats)
    print(f"(b) attack vs its floor: {b['attack_s']:.3f} s vs {b['floor_s']:.3f} s -> {b['ratio']:.2f}x "
          f"(replaying its passes); vs the full-batch floor (each sample-step priced at batch "
          f"{args.batch}'s per-sample rate) {b['full_batch_floor_s']:.3f} s -> {b['ratio_to_full_batch_floor']:.2f}x")
    print(f"    at batch {args.batch}: model forward+backward {b['model_fwd_bwd_ms_at_batch']:.1f} ms, "
          f"cost gradient {b['cost_grad_ms_at_batch']:.1f} ms")
    if "piq_autograd_ssim_grad_ms_at_batch" in b:
        print(f"    fused SSIM gradient vs autograd through piq.ssim: {b['cost_grad_ms_at_batch']:.1f} vs "
              f"{b['piq_autograd_ssim_grad_ms_at_batch']:.1f} ms -> {b['fused_ssim_speedup_vs_piq']:.1f}x")

    c = bench_cost_every(model, x, y, cost, device, args)
    for ce in (1, 5):
        r = c[ce]
        print(f"(c) cost_every={ce}: {r['seconds']:.3f} s, success {r['success_rate']:.2f}, mean steps "
              f"{r['mean_steps']:.1f}, mean {args.cost} distance {r['distance']:.5f}")
    print(f"    time ratio cost_every=1 / cost_every=5: {c['time_ratio_1_over_5']:.2f}x")

    mem_batch = 16 if args.quick else args.batch
    budgets = [128, 512, 4096]
    mem_size = max(64, args.size)  # PieAPP needs 64 px
    d = bench_memory(mem_batch, mem_size, device, budgets)
    print(f"(d) PieAPP (RANDOM weights, on purpose) cost gradient, batch {mem_batch} of {mem_size}px "
          f"({'cuda max_memory_allocated' if device.type == 'cuda' else 'peak resident set'} above network + images):")
    for r in d:
        print(f"    budget {r['budget_mb']:.0f} MB: {r['chunk_patches']} patches per chunk, peak "
              f"{r['peak_mb_above_baseline']:.0f} MB, {r['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
