"""Training-step time of the demo's small CNN with 1 thread against torch's default thread count.

    python benchmarks/threads.py [--image-size 32] [--batch-size 64] [--steps 30]

Each variant runs in a fresh process (torch's thread pool is set once per process); the ratio
printed is default-threads time over 1-thread time (>1 means one thread is faster).
"""
import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
threads, size, batch, steps = (int(a) for a in sys.argv[1:5])
if threads > 0:
    torch.set_num_threads(threads)
from geoaudit.train import build_model
torch.manual_seed(0)
m, _ = build_model("small_cnn", num_classes=10, image_size=size)
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
x = torch.rand(batch, 3, size, size); y = torch.randint(0, 10, (batch,))
for i in range(steps + 3):
    if i == 3:
        t = time.perf_counter()
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
print(json.dumps({"threads": torch.get_num_threads(), "ms_per_step": (time.perf_counter() - t) / steps * 1000}))
"""


def run(threads, a):
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(a.image_size), str(a.batch_size), str(a.steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    one, default = run(1, a), run(0, a)
    print(f"small_cnn, {a.image_size}px, batch {a.batch_size}: SGD step")
    print(f"  1 thread           : {one['ms_per_step']:.1f} ms")
    print(f"  {default['threads']} threads (default): {default['ms_per_step']:.1f} ms")
    print(f"  ratio default / 1 thread: {default['ms_per_step'] / one['ms_per_step']:.2f}x")


if __name__ == "__main__":
    main()
