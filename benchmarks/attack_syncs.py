"""Host reads of the device ("syncs") per attack call, counted, and the time of the step
loop's two ways of dropping finished samples, side by side in one run.

A read is any call that makes the host wait for the device's values: ``bool(t)``, ``int(t)``,
``float(t)``, ``t.item()``, ``t.tolist()``, ``t.numpy()``, ``nonzero``, ``unique``, and
indexing with a boolean mask (its size is data-dependent).  On the CPU they cost nothing, so
they are counted by wrapping those methods of ``torch.Tensor``; on a GPU each one waits for
every queued kernel.  With ``--device cuda`` the run also checks, with
``torch.cuda.set_sync_debug_mode``, that torch agrees.

Step loop variants of :class:`geoaudit.attacks.PerceptualDRO` (the same steps and successes,
images equal to float rounding, tested):
``compact every 1`` (the CPU default: finished samples leave the working batch at every
step, one read per step) and ``compact every 4`` (the GPU default: one read every 4 steps,
finished samples masked in between, and no convergence read in the CG loop), whose price on
the CPU is the work spent on finished samples until they leave.

Last, full batches: N images attacked in calls of 64 (each call's batch shrinks as samples
finish) vs one call whose working batch of 64 is refilled from the waiting samples
(``PerceptualDRO._window``; same step counts, checked) vs all N at once.

Run it on two versions of geoaudit (PYTHONPATH) to count before/after.

    python benchmarks/attack_syncs.py [--device cpu] [--size 24] [--batch 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attacks import striped, trained_small_cnn  # the same synthetic task

from geoaudit.attacks import PGD, PerceptualDRO

READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "nonzero", "unique")


@contextlib.contextmanager
def count_reads():
    """Count host reads of tensors (see the module docstring) inside the block."""
    counts = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS + ("__getitem__", "__setitem__")}
    saved_fn = {name: getattr(torch, name) for name in ("nonzero", "unique")}

    def wrap(name, fn):
        def inner(self, *a, **k):
            counts[name] += 1
            return fn(self, *a, **k)
        return inner

    def is_mask(idx):
        items = idx if isinstance(idx, tuple) else (idx,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    def getitem(self, idx):
        if is_mask(idx):
            counts["bool-mask index"] += 1
        return saved["__getitem__"](self, idx)

    def setitem(self, idx, value):
        if is_mask(idx):
            counts["bool-mask index"] += 1
        return saved["__setitem__"](self, idx, value)

    try:
        for name in READS:
            setattr(torch.Tensor, name, wrap(name, saved[name]))
        torch.Tensor.__getitem__, torch.Tensor.__setitem__ = getitem, setitem
        for name, fn in saved_fn.items():
            setattr(torch, name, wrap("torch." + name, fn))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)
        for name, fn in saved_fn.items():
            setattr(torch, name, fn)


def algorithm2_reads(args, variants):
    """Host reads of one round of Algorithm 2 (SGD step + attack + D's write-back per batch)."""
    import tempfile

    from geoaudit.train import build_adversarial_dataset
    from geoaudit.train._data import from_tensors

    n, batch = 96, 16
    x, y = striped(n, 16, seed=3)
    data = from_tensors((x * 255).round().to(torch.uint8), y, class_names=["a", "b", "c"])
    for name, attack in (("pgd", PGD(eps=0.5, step_size=0.1, steps=5)),
                         ("perceptual", PerceptualDRO("ssim", step_size=2.0, steps=10, confidence=0.5))):
        for vname, every in variants.items():
            if name == "pgd" and every == 4:
                continue
            attack._compact_every = every
            with tempfile.TemporaryDirectory() as t, count_reads() as c:
                build_adversarial_dataset(data, attack=attack, out_dir=os.path.join(t, "D"), rounds=1,
                                          batch_size=batch, reuse=False, device=args.device)
            print(f"Algorithm 2, {name}, {vname}: {sum(c.values())} host reads in one round of {n // batch} "
                  f"batches of {batch} (16 px, reuse off; D's write-back is 2 'numpy' reads per batch): "
                  f"{dict(sorted(c.items()))}")


def refill(args, device):
    """N images attacked in calls of ``window`` (each call's batch shrinks as samples finish: what
    a caller chunking a data set does) vs one call whose working batch of ``window`` is refilled
    from the waiting samples (``PerceptualDRO._window``) vs one call with everything at once."""
    if not hasattr(PerceptualDRO, "_run_window"):
        return
    n, w = 256, 64
    for size in (24, 32):
        model = trained_small_cnn(size, device)
        x, y = (t.to(device) for t in striped(n, size, seed=5))
        attack = PerceptualDRO("ssim", step_size=8.0, steps=100, confidence=0.5)
        variants = {
            "calls of 64": lambda a=attack, m=model, x=x, y=y: torch.cat(
                [a(m, x[i:i + w], y[i:i + w]).steps for i in range(0, n, w)]),
            "window 64, refilled": lambda a=attack, m=model, x=x, y=y: _windowed(a, m, x, y, w).steps,
            "all 256 at once": lambda a=attack, m=model, x=x, y=y: a(m, x, y).steps,
        }
        times = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v, fn in variants.items():
                t = time.perf_counter()
                steps = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[v].append(time.perf_counter() - t)
                if v == "calls of 64":
                    ref = steps
                elif not torch.equal(steps, ref):
                    raise AssertionError(f"{v}: other step counts")
        print(f"full batches, {size} px, {n} images (steps mean {float(ref.float().mean()):.1f}, max "
              f"{int(ref.max())}, same in all three): " + "; ".join(
                  f"{v} {' '.join(f'{t:.2f}' for t in ts)} s" for v, ts in times.items()) +
              "; calls/refilled " + " ".join(f"{a / b:.2f}" for a, b in zip(times["calls of 64"],
                                                                          times["window 64, refilled"])) + "x")


def _windowed(attack, model, x, y, w):
    attack._window = w
    try:
        return attack(model, x, y)
    finally:
        attack._window = None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    import geoaudit

    print(f"geoaudit from {os.path.dirname(geoaudit.__file__)}; device {device}; small_cnn {args.size} px, "
          f"batch {args.batch}")
    model = trained_small_cnn(args.size, device)
    x, y = striped(args.batch, args.size, seed=5)
    x, y = x.to(device), y.to(device)
    attacks = {
        "pgd (10 steps)": PGD(eps=0.5, step_size=0.1, steps=10),
        "perceptual ssim implicit (40 steps)": PerceptualDRO("ssim", step_size=8.0, steps=40, confidence=0.5),
        "perceptual ssim explicit (40 steps)": PerceptualDRO("ssim", step_size=8.0, steps=40, confidence=0.5,
                                                             cost_step="explicit"),
    }
    variants = {"default": None}
    if hasattr(PerceptualDRO, "_compact_period"):
        variants = {"compact every 1": 1, "compact every 4": 4}
    for name, attack in attacks.items():
        for vname, every in variants.items():
            if "perceptual" not in name and every == 4:
                continue
            attack._compact_every = every
            attack(model, x, y)  # warm-up
            t = time.perf_counter()
            attack(model, x, y)
            secs = time.perf_counter() - t
            with count_reads() as counts:
                res = attack(model, x, y)
            steps = int(res.steps.max())
            total = sum(counts.values())
            print(f"{name}, {vname}: {total} host reads per call ({total / max(steps, 1):.2f} per step, "
                  f"{steps} steps max, mean {float(res.steps.float().mean()):.1f}; {secs:.3f} s): {dict(sorted(counts.items()))}")
    # time, interleaved: the perceptual attack's two ways of dropping finished samples
    if len(variants) > 1:
        attack = attacks["perceptual ssim implicit (40 steps)"]
        times = {v: [] for v in variants}
        out = {}
        for _ in range(args.repeats):
            for vname, every in variants.items():
                attack._compact_every = every
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out[vname] = attack(model, x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[vname].append(time.perf_counter() - t)
        a, b = out["compact every 1"], out["compact every 4"]
        same = (f"same steps {torch.equal(a.steps, b.steps)}, same success {torch.equal(a.success, b.success)}, "
                f"max |image difference| {float((a.images - b.images).abs().max()):.1e}")
        print("perceptual implicit, seconds per call: " + "; ".join(
            f"{v} {' '.join(f'{t:.3f}' for t in ts)}" for v, ts in times.items()) +
            "; ratio every4/every1 " + " ".join(f"{t4 / t1:.2f}" for t1, t4 in
                                                zip(times["compact every 1"], times["compact every 4"])) +
            f"x; {same}")
    algorithm2_reads(args, variants)
    refill(args, device)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        attacks["perceptual ssim implicit (40 steps)"](model, x, y)
        torch.cuda.set_sync_debug_mode(0)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
