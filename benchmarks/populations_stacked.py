"""K population members trained one after another vs trained at once, side by side in one
process on the same batches, seeds and SGD settings (momentum 0.9, weight decay 5e-4).

First the real thing: ``train_population(stack=False)`` (one member after another) against
``train_population(stack=K)`` (groups of K, :mod:`geoaudit.train._stacked`) on a synthetic
in-memory data set, interleaved and repeated into fresh folders; it prints the models stage's
wall time of each, the ratios and the largest weight difference between the two populations.

Then the kernels alone, variants interleaved and repeated (each repeat runs every variant once):

* ``seq``: one member after another, each its own module and optimizer (what
  ``train_population`` does with ``stack=False``);
* ``grouped``: the K small CNNs fused into one module (``geoaudit.train._stacked.StackedModel``,
  what ``stack=K`` trains): each convolution a ``groups=K`` convolution over the K members'
  batches concatenated along channels, BatchNorm over K*C channels (each member's batch
  statistics, as alone), the linear head one ``baddbmm``, one foreach SGD step over the stacked
  parameters;
* ``vmap``: ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``.

It prints the wall time of each, the ratios, and how far the stacked members' weights end
from the one-at-a-time ones (a grouped convolution sums in another order: not bitwise equal).
Then where one member's step spends its time (torch.profiler, by operator class) and its
fixed per-step cost (a 1-image 8 px step, where every kernel is nearly free): what stacking
saves by calling each operator once for K members is (1 - 1/K) of that fixed cost; anything
beyond it would have to come from a grouped kernel being faster per FLOP than K separate ones.

    python benchmarks/populations_stacked.py                  # K=10, demo (24 px, batch 64) and other sizes
    python benchmarks/populations_stacked.py --models 10 --steps 3 --repeats 2
    python benchmarks/populations_stacked.py --sizes 24x64 --channels-last --no-vmap
    python benchmarks/populations_stacked.py --population-only --device cuda   # on a GPU
    python benchmarks/populations_stacked.py --population-only --population-sizes '' --accuracy-epochs 5
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from geoaudit.train._sample import make_model
from geoaudit.train._stacked import StackedModel

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=True)


def run_seq(ms, xs, ys, channels_last=False):
    mm = [copy.deepcopy(m).train() for m in ms]
    if channels_last:
        mm = [m.to(memory_format=torch.channels_last) for m in mm]
        xs = xs.flatten(0, 2).contiguous(memory_format=torch.channels_last).view(xs.shape)
    t = time.perf_counter()
    for k, m in enumerate(mm):
        opt = sgd(m.parameters())
        for s in range(xs.shape[0]):
            loss = F.cross_entropy(m(xs[s, k]), ys[s, k])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t, [m.state_dict() for m in mm]


def run_grouped(ms, xs, ys, channels_last=False):
    st = StackedModel([copy.deepcopy(m) for m in ms]).train()
    if channels_last:
        st = st.to(memory_format=torch.channels_last)
    opt = sgd(st.parameters())
    K, B = ys.shape[1:]
    t = time.perf_counter()
    for s in range(xs.shape[0]):
        x = st.arrange(xs[s].flatten(0, 1))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # the sum of the members' mean losses: each member's gradient is its own
        loss = F.cross_entropy(st(x).reshape(K * B, -1), ys[s].reshape(-1), reduction="sum") / B
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t, st.member_states()


def run_vmap(ms, xs, ys):
    from torch.func import functional_call, stack_module_state, vmap

    mm = [copy.deepcopy(m).train() for m in ms]
    params, buffers = stack_module_state(mm)
    base = copy.deepcopy(mm[0]).to("meta")

    def member_loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    opt = sgd(list(params.values()))
    t = time.perf_counter()
    for s in range(xs.shape[0]):
        losses = vmap(member_loss, randomness="different")(params, buffers, xs[s], ys[s])
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
    return time.perf_counter() - t, [{n: params[n][k].detach() for n in params} for k in range(len(ms))]


def max_diff(a, b):
    return max(float((a[k][n].float() - b[k][n].float()).abs().max()) for k in range(len(a)) for n in a[k])


def member_step_profile(size, batch, steps=5):
    """(ms per step, {operator class: share of self CPU time}) of one member's SGD step."""
    from torch.profiler import profile

    m = make_model("small_cnn", seed=0, num_classes=4, in_channels=3, image_size=size, normalization=NORM)[0].train()
    opt = sgd(m.parameters())
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 4, (batch,))

    def step():
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - t) / steps
    classes = {"convolution": ("conv",), "max pool": ("max_pool",), "batch norm": ("batch_norm",),
               "relu": ("relu", "threshold")}
    with profile() as p:
        for _ in range(steps):
            step()
    shares = dict.fromkeys(list(classes) + ["other operators"], 0.0)
    total = 0.0
    for e in p.key_averages():
        us = e.self_cpu_time_total
        total += us
        for c, keys in classes.items():
            if any(k in e.key for k in keys):
                shares[c] += us
                break
        else:
            shares["other operators"] += us
    return 1000 * wall, {c: v / total for c, v in shares.items()}, total / steps / 1000


def population_timing(K, size, batch, n_images, epochs, repeats, device="cpu"):
    """Wall time of ``train_population`` one at a time vs ``stack=K`` (interleaved, each repeat
    into fresh folders), and the largest weight difference between the two populations."""
    import tempfile
    from pathlib import Path

    from geoaudit.models import load_model
    from geoaudit.train import from_tensors, train_population

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n_images, 3, size, size, generator=g) * 255).round().to(torch.uint8)
    y = torch.arange(n_images) % 4
    data = from_tensors(x, y, class_names=["a", "b", "c", "d"])
    kw = dict(augment="plain", n_models=K, epochs=epochs, batch_size=batch, device=device)
    times = {"seq": [], "stacked": []}
    with tempfile.TemporaryDirectory() as tmp:
        train_population(data, out_dir=Path(tmp) / "warm", **dict(kw, n_models=2), stack=2)  # first-call costs
        for r in range(repeats):
            outs = {}
            for v, stack in (("seq", False), ("stacked", K)):
                outs[v] = Path(tmp) / f"{v}{r}"
                res = train_population(data, out_dir=outs[v], stack=stack, **kw)
                times[v].append(res.manifest["timing"]["models_seconds_this_run"])
        diff = 0.0
        for i in range(K):
            a, _ = load_model(outs["seq"] / f"model_{i:03d}")
            b, cfg = load_model(outs["stacked"] / f"model_{i:03d}")
            assert cfg["training"]["stacked"] == K
            sa, sb = a.state_dict(), b.state_dict()
            diff = max(diff, max(float((sa[n].float() - sb[n].float()).abs().max()) for n in sa))
    steps = epochs * -(-n_images // batch)
    print(f"train_population, K={K} small CNNs, {size} px, batch {batch}, {n_images} images, {epochs} epoch(s) "
          f"({steps} steps each) on {device}: seq {' '.join(f'{t:.2f}' for t in times['seq'])} s, "
          f"stack={K} {' '.join(f'{t:.2f}' for t in times['stacked'])} s; seq/stacked "
          f"{' '.join(f'{a / b:.2f}' for a, b in zip(times['seq'], times['stacked']))}x; "
          f"max |weight difference| {diff:.1e}", flush=True)


def float_gap(size, batch, steps, n_images=256, members=3):
    """Largest weight difference, stacked vs one at a time, after ``steps`` SGD steps, in float32
    and in float64: a float64 gap near 1e-14 shows the float32 one is rounding, amplified by
    training (ReLU and max-pool decisions flip on ulps), not another algorithm."""
    import tempfile
    from pathlib import Path

    from geoaudit.train import WeightedDataset, sample_model
    from geoaudit.train._stacked import train_stacked

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n_images, 3, size, size, generator=g) * 255).round().to(torch.uint8)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = WeightedDataset.create(Path(tmp) / "D", x, torch.arange(n_images) % 4, capacity=n_images, meta={})
        batch_fn = WeightedDataset.batch
        kw = dict(arch="small_cnn", class_names=list("abcd"), epochs=1, batch_size=batch, normalization=NORM,
                  samples_per_epoch=batch * steps)
        for dtype in (torch.float32, torch.float64):
            old = torch.get_default_dtype()
            torch.set_default_dtype(dtype)

            def batch_as(self, idx, dev, dtype=dtype):
                x, y, w = batch_fn(self, idx, dev)
                return x.to(dtype), y, w

            WeightedDataset.batch = batch_as
            try:
                a = [sample_model(d, seed=s, **kw)[0].state_dict() for s in range(members)]
                b = [m.state_dict() for m, _ in train_stacked(d, seeds=list(range(members)), **kw)]
            finally:
                torch.set_default_dtype(old)
                WeightedDataset.batch = batch_fn
            out[dtype] = max(float((sa[n] - sb[n]).abs().max()) for sa, sb in zip(a, b) for n in sa)
    print(f"  weights, {members} members stacked vs alone after {steps} steps ({size} px, batch {batch}): "
          f"float32 {out[torch.float32]:.1e}, float64 {out[torch.float64]:.1e}", flush=True)


def accuracy_agreement(K, epochs, size=16, batch=32):
    """Test accuracy and predictions of the same K members trained one at a time and stacked, on
    scikit-learn's digits (real images, offline); beside them, the same for one at a time with
    ``channels_last`` (another change of rounding only) and how often two different seeds agree
    (the population's own spread)."""
    import tempfile
    from pathlib import Path

    from geoaudit.data import load_split
    from geoaudit.models import load_model
    from geoaudit.train import from_tensors, train_population

    x, y, names = load_split("digits", "train", image_size=size, channels=3)
    xt, yt, _ = load_split("digits", "test", image_size=size, channels=3)
    data = from_tensors(x, y, class_names=names, source="digits", split="train")
    kw = dict(augment="plain", n_models=K, epochs=epochs, batch_size=batch)
    preds, secs, states = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for v, stack, cl in (("seq", False, False), ("stacked", K, False), ("seq_cl", False, True)):
            res = train_population(data, out_dir=Path(tmp) / v, stack=stack, channels_last=cl, **kw)
            secs[v] = res.manifest["timing"]["models_seconds_this_run"]
            models = [load_model(c)[0] for c in res.checkpoints]
            states[v] = [m.state_dict() for m in models]
            with torch.no_grad():
                preds[v] = [m(xt).argmax(1) for m in models]
    acc = {v: [float((p == yt).float().mean()) for p in ps] for v, ps in preds.items()}
    same = [float((a == b).float().mean()) for a, b in zip(preds["seq"], preds["stacked"])]
    # the same rounding-only change made by an existing switch: channels_last, one at a time
    same_cl = [float((a == b).float().mean()) for a, b in zip(preds["seq"], preds["seq_cl"])]
    wdiff_cl = max(float((sa[n].float() - sb[n].float()).abs().max())
                   for sa, sb in zip(states["seq"], states["seq_cl"]) for n in sa)
    seeds = [float((preds["seq"][k] == preds["seq"][k + 1]).float().mean()) for k in range(K - 1)]
    gap = max(abs(a - b) for a, b in zip(acc["seq"], acc["stacked"]))
    wdiff = max(float((sa[n].float() - sb[n].float()).abs().max())
                for sa, sb in zip(states["seq"], states["stacked"]) for n in sa)
    print(f"digits, {len(y)} train / {len(yt)} test images at {size} px, K={K} small CNNs, {epochs} epochs, batch "
          f"{batch}: test accuracy seq mean {np.mean(acc['seq']):.4f}, stacked mean {np.mean(acc['stacked']):.4f}, "
          f"largest per-member gap {gap:.4f}; max |weight difference| {wdiff:.1e}; same member's predictions agree {min(same):.4f}-{max(same):.4f} "
          f"(seq vs seq with channels_last: {min(same_cl):.4f}-{max(same_cl):.4f}, max |weight difference| "
          f"{wdiff_cl:.1e}; two seeds: {min(seeds):.4f}-{max(seeds):.4f}); models stage seq {secs['seq']:.1f} s, stacked "
          f"{secs['stacked']:.1f} s ({secs['seq'] / secs['stacked']:.2f}x)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3, help="SGD steps per member (default 3)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="24x64,32x64,24x8,16x16",
                    help="image px x batch, comma separated (default: the demo's 24x64, the zoo's 32x64, small ones)")
    ap.add_argument("--no-vmap", action="store_true")
    ap.add_argument("--channels-last", action="store_true",
                    help="also both ways in channels_last (the training switch; it speeds the kernels of both)")
    ap.add_argument("--population-sizes", default="24x64,16x16",
                    help="train_population(stack=K) vs one at a time: image px x batch, comma separated "
                         "(default: the demo's 24x64 and 16x16; '' skips)")
    ap.add_argument("--population-images", type=int, default=256, help="training images (default 256)")
    ap.add_argument("--population-epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="device of the train_population timing (default cpu)")
    ap.add_argument("--population-only", action="store_true", help="skip the kernel-level variants and profile")
    ap.add_argument("--accuracy-epochs", type=int, default=0,
                    help="also train K members on digits for this many epochs both ways and compare their test "
                         "accuracy and predictions (default 0: skip)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    import os

    os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
    for spec in filter(None, args.population_sizes.split(",")):
        size, batch = (int(v) for v in spec.split("x"))
        population_timing(args.models, size, batch, args.population_images, args.population_epochs, args.repeats,
                          device=args.device)
        float_gap(size, batch, args.population_epochs * -(-args.population_images // batch), args.population_images)
    if args.accuracy_epochs:
        accuracy_agreement(args.models, args.accuracy_epochs)
    if args.population_only:
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        return 0
    K, S = args.models, args.steps
    variants = {"seq": run_seq, "grouped": run_grouped}
    if not args.no_vmap:
        variants["vmap"] = run_vmap
    if args.channels_last:
        variants["seq_cl"] = lambda *a: run_seq(*a, channels_last=True)
        variants["grouped_cl"] = lambda *a: run_grouped(*a, channels_last=True)
    for spec in args.sizes.split(","):
        size, batch = (int(v) for v in spec.split("x"))
        ms = [make_model("small_cnn", seed=s, num_classes=4, in_channels=3, image_size=size,
                         normalization=NORM)[0] for s in range(K)]
        g = torch.Generator().manual_seed(0)
        xs = torch.rand(S, K, batch, 3, size, size, generator=g)
        ys = torch.randint(0, 4, (S, K, batch), generator=g)
        times = {v: [] for v in variants}
        for fn in variants.values():  # warm-up: first calls build kernels and caches
            fn(ms, xs[:1], ys[:1])
        for _ in range(args.repeats):
            for v, fn in variants.items():
                secs, states = fn(ms, xs, ys)
                times[v].append(secs)
                if v == "seq":
                    ref = states
                else:
                    diff = max_diff(states, ref)
        line = ", ".join(f"{v} {' '.join(f'{t:.2f}' for t in ts)} s" for v, ts in times.items())
        ratios = ", ".join(f"seq/{v} {' '.join(f'{a / b:.2f}' for a, b in zip(times['seq'], ts))}x"
                           for v, ts in times.items() if v != "seq")
        if args.channels_last:
            ratios += ", seq_cl/grouped_cl " + " ".join(
                f"{a / b:.2f}" for a, b in zip(times["seq_cl"], times["grouped_cl"])) + "x"
        print(f"K={K} small CNNs, {size} px, batch {batch}, {S} steps each: {line}; {ratios}; "
              f"max |weight difference| vs seq {diff:.1e} (last variant)")
    print("\nOne member's SGD step (torch.profiler, self CPU time by operator class):")
    fixed = member_step_profile(8, 1, steps=20)[0]
    for spec in args.sizes.split(","):
        size, batch = (int(v) for v in spec.split("x"))
        ms_step, shares, _ = member_step_profile(size, batch)
        bound = ms_step / (ms_step - (1 - 1 / K) * fixed)
        print(f"  {size} px batch {batch}: {ms_step:.1f} ms/step; " +
              ", ".join(f"{c} {v:.0%}" for c, v in shares.items()) +
              f"; fixed per-step cost (8 px, batch 1) {fixed:.1f} ms = {fixed / ms_step:.0%}; removing "
              f"(1 - 1/K) of it: {bound:.2f}x")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
