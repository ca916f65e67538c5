"""K population members trained one after another vs stacked and trained at once with
``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``), side by side in one
process on the same batches, seeds and SGD settings (momentum 0.9, weight decay 5e-4).

Prints the wall time of each, the ratio, and how far the stacked members' weights end from
the one-at-a-time ones (vmap runs the K convolutions as one grouped convolution, so the
floating-point sums differ in order: not bitwise equal).

    python benchmarks/populations_stacked.py                 # K=10 small CNNs, 32 px batch 64 and 16 px batch 16
    python benchmarks/populations_stacked.py --models 10 --steps 20
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="SGD steps per member (default 10)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from geoaudit.train._sample import make_model

    torch.set_num_threads(args.threads)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    K, S = args.models, args.steps
    for size, batch in ((32, 64), (16, 16)):
        ms = [make_model("small_cnn", seed=s, num_classes=10, in_channels=3, image_size=size,
                         normalization={"mean": [0.5] * 3, "std": [0.25] * 3})[0] for s in range(K)]
        g = torch.Generator().manual_seed(0)
        xs = torch.rand(S, K, batch, 3, size, size, generator=g)
        ys = torch.randint(0, 10, (S, K, batch), generator=g)

        def one_after_another():
            mm = [copy.deepcopy(m).train() for m in ms]
            opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4) for m in mm]
            for k in range(K):
                for s in range(S):
                    loss = F.cross_entropy(mm[k](xs[s, k]), ys[s, k])
                    opts[k].zero_grad()
                    loss.backward()
                    opts[k].step()
            return mm

        def stacked():
            mm = [copy.deepcopy(m).train() for m in ms]
            params, buffers = stack_module_state(mm)
            base = copy.deepcopy(mm[0]).to("meta")

            def member_loss(p, b, x, y):
                return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

            opt = torch.optim.SGD(list(params.values()), lr=0.05, momentum=0.9, weight_decay=5e-4)
            for s in range(S):
                # the members are independent: the gradient of the sum is each member's own gradient
                losses = vmap(member_loss)(params, buffers, xs[s], ys[s])
                opt.zero_grad()
                losses.sum().backward()
                opt.step()
            return params

        t = time.perf_counter()
        seq = one_after_another()
        t_seq = time.perf_counter() - t
        t = time.perf_counter()
        st = stacked()
        t_st = time.perf_counter() - t
        diff = max(float((st[n][k] - seq[k].state_dict()[n]).abs().max()) for k in range(K) for n in st)
        print(f"K={K} small CNNs, {size} px, batch {batch}, {S} steps each: one after another {t_seq:.2f} s, "
              f"stacked (vmap) {t_st:.2f} s, speed-up {t_seq / t_st:.2f}x; max |weight difference| {diff:.2e}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
