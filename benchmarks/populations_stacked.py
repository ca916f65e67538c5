"""K population members trained one after another vs trained at once, side by side in one
process on the same batches, seeds and SGD settings (momentum 0.9, weight decay 5e-4).

Variants, interleaved and repeated (each repeat runs every variant once, in turn):

* ``seq``: one member after another, each its own module and optimizer (what
  ``train_population`` does);
* ``grouped``: the K small CNNs fused into one module: each convolution a ``groups=K``
  convolution over the K members' batches concatenated along channels, BatchNorm over K*C
  channels (each member's batch statistics, as alone), the linear head one ``baddbmm``, one
  foreach SGD step over the stacked parameters;
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
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from geoaudit.train._sample import make_model

NORM = {"mean": [0.5] * 3, "std": [0.25] * 3}


class StackedSmallCNN(nn.Module):
    """K ``NormalizedModel(SmallCNN)`` members as one module of grouped layers.

    Called on ``(K, B, C, H, W)`` (member k's batch at ``[k]``), returns ``(K, B, classes)``.
    """

    def __init__(self, members):
        super().__init__()
        K = self.K = len(members)
        norms, nets = [m[0] for m in members], [m[1] for m in members]
        self.register_buffer("mean", torch.cat([n.mean for n in norms], 1))
        self.register_buffer("std", torch.cat([n.std for n in norms], 1))
        feats = []
        for layer in zip(*[n.features for n in nets]):
            l0 = layer[0]
            if isinstance(l0, nn.Conv2d):
                c = nn.Conv2d(l0.in_channels * K, l0.out_channels * K, l0.kernel_size, padding=l0.padding, groups=K)
                with torch.no_grad():
                    c.weight.copy_(torch.cat([m.weight for m in layer]))
                    c.bias.copy_(torch.cat([m.bias for m in layer]))
            elif isinstance(l0, nn.BatchNorm2d):
                c = nn.BatchNorm2d(l0.num_features * K, eps=l0.eps, momentum=l0.momentum)
                with torch.no_grad():
                    for n_ in ("weight", "bias", "running_mean", "running_var"):
                        getattr(c, n_).copy_(torch.cat([getattr(m, n_) for m in layer]))
            else:
                c = copy.deepcopy(l0)
            feats.append(c)
        self.features = nn.Sequential(*feats)
        self.weight = nn.Parameter(torch.stack([n.classifier.weight.detach() for n in nets]))  # K, O, I
        self.bias = nn.Parameter(torch.stack([n.classifier.bias.detach() for n in nets]))  # K, O

    def forward(self, x):
        K, B = x.shape[:2]
        x = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        f = self.features((x - self.mean) / self.std).view(B, K, -1).transpose(0, 1)
        return torch.baddbmm(self.bias[:, None, :], f, self.weight.transpose(1, 2))

    def member_state(self, k):
        """Member k's weights, named as in its ``NormalizedModel(SmallCNN)`` state_dict."""
        out = {}
        for i, layer in enumerate(self.features):
            for n_, t in layer.state_dict().items():
                c = t.shape[0] // self.K if t.dim() else None
                out[f"1.features.{i}.{n_}"] = t.clone() if c is None else t[k * c:(k + 1) * c].clone()
        out["1.classifier.weight"], out["1.classifier.bias"] = self.weight[k].detach(), self.bias[k].detach()
        return out


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
    st = StackedSmallCNN([copy.deepcopy(m) for m in ms]).train()
    if channels_last:
        st = st.to(memory_format=torch.channels_last)
    opt = sgd(st.parameters())
    K, B = ys.shape[1:]
    t = time.perf_counter()
    for s in range(xs.shape[0]):
        # the sum of the members' mean losses: each member's gradient is its own
        loss = F.cross_entropy(st(xs[s]).reshape(K * B, -1), ys[s].reshape(-1), reduction="sum") / B
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t, [st.member_state(k) for k in range(K)]


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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
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
