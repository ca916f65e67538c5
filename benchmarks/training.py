"""Training benchmarks, each comparison run side by side in one process on the same data:

1. Appendix-D cluster-center attack reuse on vs off (Algorithm 2, same data, seed and attack):
   attacks computed per epoch, wall time and attack success rate, with ratios.
2. Population throughput (models per hour), local backend vs Ray on this machine.
3. Memory of the weighted dataset D: bytes on disk (uint8) vs float32, and the process's peak
   RSS after training 1, 2 and 4 models of a population (it must not grow with the count).

Data: GeoShapes (``geoaudit.data.geoshapes``), generated in seconds.  Defaults finish in a
few minutes on 2 CPU cores; ``--device cuda`` runs the reuse comparison on a GPU.

    python benchmarks/training.py                      # defaults
    python benchmarks/training.py --images 3000 --image-size 32 --device cuda --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def rss_mb():
    """Current resident set size (MB) from /proc (Linux); peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1500, help="GeoShapes images in all splits (default 1500)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="T1 of Algorithm 2 (default 2)")
    ap.add_argument("--eps", type=float, default=2.0, help="PGD L2 radius (default 2.0)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", type=int, default=4, help="population size for throughput (default 4)")
    ap.add_argument("--epochs", type=int, default=2, help="Algorithm 3 epochs per model (default 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    # Before torch/scikit-learn load: their OpenMP pools oversubscribe a shared 2-core machine.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
    from geoaudit.attacks import PGD
    from geoaudit.data import geoshapes
    from geoaudit.train import WeightedDataset, build_adversarial_dataset, load_training_data, train_population

    work = Path(tempfile.mkdtemp(prefix="geoaudit-bench-train-"))
    out = {"args": vars(args), "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    try:
        t0 = time.perf_counter()
        dd = geoshapes(n_images=args.images, image_size=args.image_size, n_classes=args.classes, seed=0)
        data_dir = work / "geoshapes"
        dd.save_to_disk(str(data_dir))
        data = load_training_data(data_dir, split="train")
        print(f"GeoShapes: {data.n} training images, {args.image_size}px, {args.classes} classes "
              f"({time.perf_counter() - t0:.1f} s to generate)")

        # 1. reuse on vs off ------------------------------------------------------------------
        attack = PGD(args.eps, args.eps / 4, args.steps, norm="l2")
        res = {}
        for reuse in (False, True):
            t = time.perf_counter()
            r = build_adversarial_dataset(data, attack=attack, out_dir=work / f"D_reuse_{reuse}", rounds=args.rounds,
                                          batch_size=args.batch_size, seed=0, reuse=reuse, device=args.device)
            s = dict(r.stats, wall=time.perf_counter() - t)
            res[reuse] = s
        off, on = res[False], res[True]
        per_epoch_off = off["attacks_computed"] / args.rounds
        per_epoch_on = on["attacks_computed"] / args.rounds
        print(f"\n1. Cluster-center reuse (Algorithm 2, T1={args.rounds}, N={data.n}, {attack!r}, device {args.device})")
        print(f"   {'':28s}{'reuse off':>12s}{'reuse on':>12s}{'ratio off/on':>14s}")
        print(f"   {'attacks computed per epoch':28s}{per_epoch_off:12.0f}{per_epoch_on:12.0f}"
              f"{per_epoch_off / max(per_epoch_on, 1):13.2f}x")
        print(f"   {'wall time of Algorithm 2 (s)':28s}{off['wall']:12.1f}{on['wall']:12.1f}"
              f"{off['wall'] / on['wall']:13.2f}x")
        print(f"   {'attack success rate':28s}{off['success_rate']:12.1%}{on['success_rate']:12.1%}"
              f"{(on['success_rate'] - off['success_rate']) * 100:+12.1f}pt")
        print(f"   reuse rate {on['reuse_rate']:.1%}, center refreshes {on['center_refreshes']}, "
              f"k-means {on['kmeans']['backend']} {on['kmeans']['seconds']:.2f} s, "
              f"estimated time saved {on['time_saved_seconds']:.1f} s")
        out["reuse"] = {"off": off, "on": on, "attacks_ratio": per_epoch_off / max(per_epoch_on, 1),
                        "wall_ratio": off["wall"] / on["wall"],
                        "success_points": (on["success_rate"] - off["success_rate"]) * 100}

        # 2. throughput local vs ray ------------------------------------------------------------
        kw = dict(augment="plain", n_models=args.models, epochs=args.epochs, batch_size=args.batch_size)
        t = time.perf_counter()
        train_population(data_dir, out_dir=work / "pop_local", **kw)
        local_s = time.perf_counter() - t
        thr = {"local": args.models / local_s * 3600}
        ray_s = None
        if not args.skip_ray:
            import ray

            ncpu = os.cpu_count() or 1
            t = time.perf_counter()
            ray.init(num_cpus=ncpu, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": str(args.threads), "GEOAUDIT_PROGRESS": "0"}})
            ray_start = time.perf_counter() - t
            try:
                t = time.perf_counter()
                train_population(data_dir, out_dir=work / "pop_ray", backend="ray", **kw)
                ray_s = time.perf_counter() - t
            finally:
                ray.shutdown()
            thr["ray"] = args.models / ray_s * 3600
            thr["ray_incl_start"] = args.models / (ray_s + ray_start) * 3600
        print(f"\n2. Population throughput (plain, K={args.models}, {args.epochs} epochs, N={data.n})")
        print(f"   local: {local_s:.1f} s -> {thr['local']:.0f} models/hour")
        if ray_s is not None:
            print(f"   ray ({ncpu} CPUs, 1 per task): {ray_s:.1f} s -> {thr['ray']:.0f} models/hour "
                  f"(ratio ray/local {thr['ray'] / thr['local']:.2f}x; "
                  f"{thr['ray_incl_start']:.0f} models/hour counting the {ray_start:.1f} s Ray start)")
        out["throughput"] = dict(thr, local_seconds=local_s, ray_seconds=ray_s)

        # 3. memory of D ------------------------------------------------------------------------
        dfold = work / "D_reuse_True"
        d = WeightedDataset.open(dfold)
        float_bytes = d.size * int(d.images[0].size) * 4
        print(f"\n3. Memory of D (demo run: M = N(1+T1) = {d.size} images of {tuple(d.images.shape[1:])})")
        print(f"   D on disk (uint8 memory map + table): {d.nbytes / 1e6:.2f} MB "
              f"(float32 in RAM would be {float_bytes / 1e6:.2f} MB, {float_bytes / d.nbytes:.1f}x)")
        del d
        peaks = []
        pop = work / "pop_mem"
        for k in (1, 2, 4):
            train_population(data_dir, augment="plain", n_models=k, epochs=1, batch_size=args.batch_size,
                             out_dir=pop)
            peaks.append((k, peak_rss_mb(), rss_mb()))
        print("   process memory while a population grows (same process, models trained one after another):")
        for k, peak, cur in peaks:
            print(f"     after {k} model(s): peak RSS {peak:7.1f} MB, current RSS {cur:7.1f} MB")
        growth = peaks[-1][1] - peaks[0][1]
        print(f"   peak RSS growth from 1 to 4 models: {growth:+.1f} MB")
        out["memory"] = {"d_bytes": WeightedDataset.open(dfold).nbytes, "d_float32_bytes": float_bytes,
                         "peak_rss_mb": peaks, "peak_growth_mb_1_to_4": growth}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
