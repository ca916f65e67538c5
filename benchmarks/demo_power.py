"""Power of the demo's positive control: plain vs oracle on the capture dataset, per size.

    OMP_NUM_THREADS=1 python benchmarks/demo_power.py --n-images 6000 --epochs 3 --models 6 \
        [--image-size 24] [--capture-strength 1] [--lr 0.05] [--data-seed 1 --first-seed 100] [--out /tmp/demo_power]

Builds the ``capture`` GeoShapes dataset at the given size, trains the demo's ``plain`` and
``oracle`` populations (as ``geoaudit demo`` does, with the demo's SGD learning rate unless ``--lr``; seeds
S..S+K-1 and data seed D other than the demo's own 0..K-1 and 0, so a pilot does not peek), audits both on
the test split and prints each seed's slopes, test accuracies and last-epoch (running) training
accuracies, the paired differences (oracle - plain), their mean and sd, each population's
accuracy and slope spread, seconds per model and ``uptime``; then the power of the demo's one-sided paired
t-test at alpha 0.05 for several K, taking the measured mean and sd as the truth (noncentral t).
"""
import argparse
import json
import math
import subprocess
import time
from pathlib import Path


def power(mean, sd, k, alpha=0.05):
    """Power of the one-sided paired t-test (H1: mean < 0) with k pairs, if the truth is (mean, sd)."""
    from scipy import stats

    if sd <= 0:
        return 1.0
    nc = -mean / (sd / math.sqrt(k))
    crit = stats.t.ppf(1 - alpha, k - 1)
    return float(stats.nct.sf(crit, k - 1, nc))


def main(argv=None):
    import numpy as np

    from geoaudit.audit import audit_checkpoints
    from geoaudit.data import build_geoshapes, load_geo_dataset
    from geoaudit.demo import oracle_training_data
    from geoaudit.train import train_population

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=6000)
    p.add_argument("--image-size", type=int, default=24)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--models", type=int, default=6)
    p.add_argument("--capture-strength", type=float, default=1.0)
    p.add_argument("--copies", type=int, default=3)
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default: the demo's)")
    # a pilot that chooses the demo's sizes must not peek at the demo's own models: other data and seeds
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--audit-splits", default="test", help="comma-separated splits the models are audited on")
    p.add_argument("--bn-samples", type=int, default=None,
                   help="draws for the BatchNorm statistics after training (default: train_population's; 0: as trained)")
    p.add_argument("--out", default="/tmp/demo_power")
    a = p.parse_args(argv)
    if a.lr is None:
        from geoaudit._demo.settings import LR

        a.lr = LR
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    tag = f"n{a.n_images}_s{a.image_size}_e{a.epochs}_c{a.capture_strength:g}" + (f"_lr{a.lr:g}" if a.lr != 0.05 else "") \
        + f"_d{a.data_seed}_m{a.first_seed}" + ("" if a.bn_samples is None else f"_bn{a.bn_samples}")
    out = Path(a.out) / tag
    data = out / "data"
    if not (data / "README.md").exists():
        build_geoshapes(data, n_images=a.n_images, image_size=a.image_size, n_classes=4, random_state=a.data_seed,
                        spurious_strength=0.0, capture_strength=a.capture_strength)
    dd = load_geo_dataset(data)
    from datasets import concatenate_datasets

    audit_set = concatenate_datasets([dd[k] for k in a.audit_splits.split(",")])
    betas, secs, accs, fit = {}, {}, {}, {}
    for method in ("plain", "oracle"):
        train = data if method == "plain" else oracle_training_data(data, copies=a.copies, random_state=a.data_seed)
        t0 = time.perf_counter()
        pop = train_population(train, augment="plain", n_models=a.models, epochs=a.epochs, arch="small_cnn",
                               seeds=list(range(a.first_seed, a.first_seed + a.models)), out_dir=out / method, device="cpu", reuse="auto",
                               samples_per_epoch=len(dd["train"]), lr=a.lr,
                               **({} if a.bn_samples is None else {"bn_samples": a.bn_samples}))
        secs[method] = (time.perf_counter() - t0) / a.models
        report, _ = audit_checkpoints(pop.checkpoints, audit_set, device="cpu")
        betas[method] = dict(report.betas)
        accs[method] = {k: float(g["correct"].sum() / g["n"].sum()) for k, g in report.model_groups.items()}
        # the last epoch's running training accuracy: a seed whose test accuracy lags far behind it
        # ended on a poor final iterate (SGD noise), not on a model that failed to learn
        fit[method] = {}
        for ckpt in pop.checkpoints:
            cfg = json.loads((Path(ckpt) / "config.json").read_text())
            hist = cfg.get("history") or cfg.get("training", {}).get("history") or [{}]
            fit[method][Path(ckpt).name] = hist[-1].get("train_accuracy", float("nan"))
    names = sorted(betas["plain"])
    d = np.array([betas["oracle"][n] - betas["plain"][n] for n in names])
    up1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# {tag}: {len(dd['train'])} train / {len(audit_set)} audit images ({a.audit_splits}); K = {a.models}")
    for n in names:
        print(f"  {n}: plain {betas['plain'][n]:+.4f}  oracle {betas['oracle'][n]:+.4f}  "
              f"diff {betas['oracle'][n] - betas['plain'][n]:+.4f}  (accuracy {accs['plain'][n]:.3f}, "
              f"{accs['oracle'][n]:.3f}; last-epoch train {fit['plain'].get(n, float('nan')):.3f}, "
              f"{fit['oracle'].get(n, float('nan')):.3f})")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    print(f"  mean plain {np.mean(list(betas['plain'].values())):+.4f}, oracle "
          f"{np.mean(list(betas['oracle'].values())):+.4f}; paired diff mean {mean:+.4f} sd {sd:.4f}")
    for m in ("plain", "oracle"):
        a = np.array([accs[m][n] for n in names])
        print(f"  {m}: test accuracy mean {a.mean():.3f} min {a.min():.3f} sd {a.std(ddof=1):.3f}; beta sd "
              f"{np.std([betas[m][n] for n in names], ddof=1):.4f}")
    print(f"  seconds per model (incl. resume if any): plain {secs['plain']:.1f}, oracle {secs['oracle']:.1f}")
    print("  power (one-sided paired t, alpha 0.05, truth = measured mean/sd): "
          + ", ".join(f"K={k}: {power(mean, sd, k):.2f}" for k in (4, 5, 6, 8, 10)))
    print(f"  uptime before: {up0}\n  uptime after:  {up1}")


if __name__ == "__main__":
    main()
