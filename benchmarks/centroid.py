"""Runtime of the centroid defense against plain inference, on the same batch, same run.

The paper's Proposition 1: the defense keeps inference's asymptotic cost (one cosine per
layer and centroid on top of each layer's matrix product).  This prints the median wall
time (best of n, interleaved; medians too) of ``model(x)`` and of ``CentroidDefense.predict(x)`` (one forward pass with hooks,
distances to the cached centroid activations, votes, ranking) for the paper's MLP and
LeNet-5 on 28x28 greyscale batches, and their ratio (target: at most 1.5x).

    python benchmarks/centroid.py [--batch 1000] [--repeats 30] [--sets 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from geoaudit.defenses import CentroidDefense
from geoaudit.train import MLP7, LeNet5


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def bench(name, model, x, cents, repeats, device):
    model = model.to(device).eval()
    x = x.to(device)
    defense = CentroidDefense(model, cents.to(device), 0.3)

    def plain():
        with torch.no_grad():
            model(x).argmax(1)

    def defended():
        defense.predict(x)

    for _ in range(3):  # warm-up
        plain()
        defended()
    tp, td = [], []
    for _ in range(repeats):  # interleaved so both see the same machine load
        tp.append(timed(plain, device))
        td.append(timed(defended, device))
    # best-of-n is the least disturbed by other processes (timeit's advice); medians for reference
    p, d = min(tp), min(td)
    pm, dm = statistics.median(tp), statistics.median(td)
    n_c = cents.shape[0] * cents.shape[1] if cents.dim() == 5 else cents.shape[0]
    print(f"{name:7s} layers={defense.num_layers:2d} centroids={n_c:3d} batch={x.shape[0]:5d}  "
          f"best: plain {p * 1e3:8.2f} ms  defended {d * 1e3:8.2f} ms  ratio {d / p:5.2f}x   "
          f"(median ratio {dm / pm:5.2f}x)")
    return d / p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--sets", type=int, default=1, help="centroid sets per class")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    x = torch.rand(a.batch, 1, 28, 28)
    cents = torch.rand(a.sets, 10, 1, 28, 28) if a.sets > 1 else torch.rand(10, 1, 28, 28)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    ratios = {
        "mlp7": bench("mlp7", MLP7(10, 784), x, cents, a.repeats, device),
        "lenet5": bench("lenet5", LeNet5(10, 1, 28), x, cents, a.repeats, device),
    }
    worst = max(ratios.values())
    print(f"worst ratio {worst:.2f}x ({'within' if worst <= 1.5 else 'ABOVE'} the 1.5x target)")


if __name__ == "__main__":
    main()
