"""Training benchmarks, each comparison run side by side in one process on the same data.

1. Storage of D: bytes per image (float16 vs uint8 vs float32), and what survives storage of
   the training preset's PGD and perceptual attacks: the fraction of attacks byte-identical to
   their clean image, and of perturbed pixel values that still differ, under each storage.
2. Appendix-D cluster-center reuse off / on / auto (Algorithm 2, same data, seed and attack),
   for PGD and the perceptual attack: attacks, gradient steps (model forward+backward per
   sample-step; the transplant checks' forwards counted as 1/3 step each), wall time, success
   rate and mean 1 - SSIM of the stored attacks, with ratios; the k-means time next to the
   steps reuse saves.
3. k-means backends on the same images: torch vs scikit-learn with one BLAS thread vs
   scikit-learn with BLAS threads unlimited, on full pixels and on features pooled to 16 px.
4. (optional, ``--population``) population throughput local vs Ray and the RSS of a growing
   population.

Data: GeoShapes (``geoaudit.data.geoshapes``), generated in seconds.  Defaults finish in a
few minutes on 2 CPU cores.

    python benchmarks/training.py                     # sections 1-3
    python benchmarks/training.py --population        # and section 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000, help="GeoShapes images in all splits (default 1000)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="T1 of Algorithm 2 (default 2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--attacks", default="pgd,perceptual")
    ap.add_argument("--kmeans-images", type=int, default=1828,
                    help="images for the k-means comparison (default 1828, drawn with replacement if needed)")
    ap.add_argument("--population", action="store_true", help="also run section 4 (Ray: --ray)")
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    os.environ.setdefault("GEOAUDIT_PROGRESS", "0")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from geoaudit.data import geoshapes
    from geoaudit.train import (WeightedDataset, build_adversarial_dataset, load_training_data, make_attack,
                                sample_model)
    from geoaudit.train._kmeans import _kmeans_sklearn, _kmeans_torch, features
    from geoaudit.train._store import decode, encode

    work = Path(tempfile.mkdtemp(prefix="geoaudit-bench-train-"))
    out = {"args": vars(args), "uptime_start": uptime()}
    print(uptime())
    try:
        t0 = time.perf_counter()
        dd = geoshapes(n_images=args.images, image_size=args.image_size, n_classes=args.classes, seed=0)
        data_dir = work / "geoshapes"
        dd.save_to_disk(str(data_dir))
        data = load_training_data(data_dir, split="train")
        print(f"GeoShapes: {data.n} training images, {args.image_size}px, {args.classes} classes "
              f"({time.perf_counter() - t0:.1f} s to generate)")
        attacks = {name: make_attack(name) for name in args.attacks.split(",")}

        # 1. storage ----------------------------------------------------------------------------
        clean = WeightedDataset.create(work / "clean", data.images, data.labels, capacity=data.n, meta={})
        mean, std = data.channel_stats()
        model, _ = sample_model(clean, arch="small_cnn", class_names=data.class_names, seed=0, epochs=2,
                                batch_size=args.batch_size, normalization={"mean": mean, "std": std})
        x = decode(data.images[:512])
        y = data.labels[:512]
        per_value = {"float32": 4, "float16": 2, "uint8": 1}
        px = int(np.prod(data.images.shape[1:]))
        print(f"\n1. Storage of D ({px} values per image; attacks of the training preset on {len(y)} clean "
              f"images against a small CNN trained 2 epochs)")
        print(f"   bytes per image: " + ", ".join(f"{k} {v * px}" for k, v in per_value.items()))
        out["storage"] = {"bytes_per_image": {k: v * px for k, v in per_value.items()}}
        print(f"   {'attack':12s}{'storage':>9s}{'attacks identical to clean':>28s}{'perturbed values kept':>24s}")
        for name, atk in attacks.items():
            adv = atk(model, x, y).images
            moved = adv != x
            row = {}
            for storage in ("float16", "uint8"):
                a, c = encode(adv, storage), encode(x, storage)
                same = float((a == c).flatten(1).all(1).float().mean())
                kept = float(((a != c) & moved).sum() / moved.sum().clamp_min(1))
                row[storage] = {"identical_fraction": same, "perturbed_values_kept": kept}
                print(f"   {name:12s}{storage:>9s}{same:28.1%}{kept:24.1%}")
            out["storage"][name] = row

        # 2. reuse off / on / auto ------------------------------------------------------------------
        print(f"\n2. Cluster-center reuse (Algorithm 2, T1={args.rounds}, N={data.n}, batch {args.batch_size}, "
              f"device {args.device}); work in gradient steps (forward+backward per sample-step)")
        hdr = (f"   {'attack':11s}{'reuse':>6s}{'attacks':>9s}{'grad steps':>11s}{'work':>9s}{'time s':>8s}"
               f"{'success':>9s}{'1-SSIM':>9s}{'k-means s':>10s}")
        print(hdr)
        out["reuse"] = {}
        for name, atk in attacks.items():
            rows = {}
            for reuse in (False, True, "auto"):
                t = time.perf_counter()
                r = build_adversarial_dataset(data, attack=atk, out_dir=work / f"D_{name}_{reuse}",
                                              rounds=args.rounds, batch_size=args.batch_size, random_state=0,
                                              reuse=reuse, device=args.device)
                s = dict(r.stats, wall=time.perf_counter() - t)
                rows[str(reuse)] = s
                km = s.get("kmeans", {}).get("seconds", 0.0)
                tag = {False: "off", True: "on", "auto": "auto"}[reuse]
                if reuse == "auto":
                    tag += "->" + ("on" if s["reuse_used"] else "off")
                print(f"   {name:11s}{tag:>6s}{s['attacks_computed']:9d}{s['gradient_steps']:11d}{s['work_steps']:9.0f}"
                      f"{s['wall']:8.1f}{s['success_rate']:9.1%}{s['mean_one_minus_ssim']:9.4f}{km:10.2f}")
            off, on, auto = rows["False"], rows["True"], rows["auto"]
            sps = off["attack_seconds"] / max(off["gradient_steps"], 1)
            saved = off["work_steps"] - on["work_steps"]
            print(f"   {name}: reuse on vs off: {off['attacks_computed'] / on['attacks_computed']:.2f}x fewer attacks, "
                  f"{off['work_steps'] / on['work_steps']:.2f}x less work (gradient steps), "
                  f"time ratio off/on {off['wall'] / on['wall']:.2f}x, 1-SSIM on/off "
                  f"{on['mean_one_minus_ssim'] / off['mean_one_minus_ssim']:.2f}x, success "
                  f"{(on['success_rate'] - off['success_rate']) * 100:+.1f} pt")
            print(f"   {name}: steps saved by reuse {saved:.0f} ~ {saved * sps:.1f} s of attack time "
                  f"({sps * 1e3:.2f} ms/step) vs k-means {on['kmeans']['seconds']:.2f} s; "
                  f"auto chose {'on' if auto['reuse_used'] else 'off'} (projected "
                  f"{auto['reuse_decision']['projected_steps_per_round_with_reuse']:.0f} vs "
                  f"{auto['reuse_decision']['projected_steps_per_round_without_reuse']:.0f} steps per round)")
            out["reuse"][name] = rows

        # 3. k-means backends ---------------------------------------------------------------------
        n_km = args.kmeans_images
        idx = torch.arange(n_km) % data.n
        ims, labs = data.images[idx], data.labels[idx]
        print(f"\n3. k-means per label ({n_km} images, clusters of 5; one label's clusters timed per backend)")
        out["kmeans"] = {}
        from threadpoolctl import threadpool_limits

        for fs in (None, 16):
            f = features(ims, feature_size=fs)
            times = {}
            for backend in ("torch", "sklearn-1thread", "sklearn-unlimited"):
                t = time.perf_counter()
                for lab in torch.unique(labs).tolist():
                    xl = f[labs == lab]
                    k = max(1, round(len(xl) / 5))
                    if backend == "torch":
                        _kmeans_torch(xl, k, 0)
                    elif backend == "sklearn-1thread":
                        _kmeans_sklearn(xl, k, 0, threads=1)
                    else:
                        with threadpool_limits(limits=None):
                            _kmeans_sklearn(xl, k, 0, threads=os.cpu_count())
                times[backend] = time.perf_counter() - t
            label = f"{f.shape[1]} features ({'full pixels' if fs is None else f'pooled to {fs} px'})"
            print(f"   {label:38s}" + "  ".join(f"{k} {v:.2f} s" for k, v in times.items())
                  + f"  (sklearn-1thread/torch {times['sklearn-1thread'] / times['torch']:.2f}x, "
                    f"unlimited/torch {times['sklearn-unlimited'] / times['torch']:.2f}x)")
            out["kmeans"][str(fs)] = times

        # 4. populations --------------------------------------------------------------------------
        if args.population:
            from geoaudit.train import train_population

            kw = dict(augment="plain", n_models=args.models, epochs=args.epochs, batch_size=args.batch_size)
            t = time.perf_counter()
            train_population(data_dir, out_dir=work / "pop_local", **kw)
            local_s = time.perf_counter() - t
            print(f"\n4. Population (plain, K={args.models}, {args.epochs} epochs): local {local_s:.1f} s, "
                  f"{args.models / local_s * 3600:.0f} models/hour; peak RSS {peak_rss_mb():.0f} MB")
            out["population"] = {"local_seconds": local_s}
            if args.ray:
                import ray

                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "GEOAUDIT_PROGRESS": "0"}})
                try:
                    t = time.perf_counter()
                    train_population(data_dir, out_dir=work / "pop_ray", backend="ray", **kw)
                    ray_s = time.perf_counter() - t
                finally:
                    ray.shutdown()
                print(f"   ray: {ray_s:.1f} s (ratio local/ray {local_s / ray_s:.2f}x)")
                out["population"]["ray_seconds"] = ray_s
        out["uptime_end"] = uptime()
        print("\n" + out["uptime_end"])
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
