"""The demo's wall time with its populations trained in parallel processes against one after another.

    python benchmarks/demo_jobs.py [--variants 1x1,2x1,1x2] [--repeats 2] [-- demo options]

A variant JxT is ``geoaudit --threads T demo --jobs J``: J populations at once, each process with
T torch threads.  Every run is a fresh process on a fresh folder (the data is built each time,
so the times are whole demo runs); the variants are interleaved (ABC, CBA, ...) so that drift of
a shared machine's load hits them alike.  It prints each run's wall time, the median per
variant, the ratio to the first variant, and whether every population's slopes equal the first
variant's (they must: the jobs only decide where a population trains).  Default demo options:
``--quick``; pass others after ``--`` (e.g. ``-- --models 4 --mechanisms capture``).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(variant, out, demo_args):
    jobs, threads = (int(v) for v in variant.split("x"))
    env = dict(os.environ, GEOAUDIT_PROGRESS="0")
    cmd = [sys.executable, "-m", "geoaudit.cli", "--threads", str(threads), "demo", "--jobs", str(jobs),
           "--device", "cpu", "--out", str(out), *demo_args]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    report = json.loads((out / "report.json").read_text())
    betas = {f"{m}/{k}": p["betas"] for m, v in report["mechanisms"].items() for k, p in v["populations"].items()}
    return wall, betas


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="1x1,2x1,1x2", help="JOBSxTHREADS, comma-separated; the first is the base")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("demo_args", nargs="*", help="options of `geoaudit demo` (default --quick)")
    a = p.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    demo_args = a.demo_args or ["--quick"]
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"cores usable: {len(os.sched_getaffinity(0))}; demo options: {' '.join(demo_args)}")
    walls = {v: [] for v in variants}
    betas = {}
    root = Path(tempfile.mkdtemp(prefix="demo_jobs_"))
    try:
        for r in range(a.repeats):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                out = root / f"{v}_{r}"
                wall, b = run(v, out, demo_args)
                shutil.rmtree(out, ignore_errors=True)
                walls[v].append(wall)
                betas.setdefault(v, b)
                print(f"  repeat {r + 1}, {v:>4} (jobs x threads): {wall:6.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    base = variants[0]
    print(f"\n{'variant':>8} {'median s':>9} {'speed-up vs ' + base:>16}  slopes equal to {base}'s")
    for v in variants:
        med = statistics.median(walls[v])
        print(f"{v:>8} {med:9.1f} {statistics.median(walls[base]) / med:15.2f}x  {betas[v] == betas[base]}")


if __name__ == "__main__":
    main()
