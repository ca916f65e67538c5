"""Is a poorly scoring demo model's problem its weights or its BatchNorm running statistics?

    OMP_NUM_THREADS=2 python benchmarks/demo_bn_check.py --data OUT/data/capture \\
        --population OUT/populations/capture/plain [--population OUT/populations/capture/oracle]

For every checkpoint of each population: test accuracy and GLS slope as trained (BatchNorm's
running mean and variance are an exponential average, momentum 0.1, over the last batches of
a network still moving), then the same after re-estimating those statistics with one pass over
the training data in train mode (cumulative average, no weight changes: "precise BN"); a
population folder named ``oracle`` is re-estimated on its own training data (the clean images
plus the demo's capture-corrupted copies, seeded by ``--data-seed``).  Prints
per model and per population (accuracy mean / min, slope mean / sd) and, for two populations,
the paired differences (second - first) with d = mean / sd, before and after; then ``uptime``.
Nothing is written: the checkpoints are left as they are.
"""
import argparse
import subprocess
from pathlib import Path


def recalibrate_bn(model, images, batch_size=256):
    """Re-estimate every BatchNorm layer's running statistics on ``images`` (weights unchanged)."""
    import torch

    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # a cumulative average over the pass
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    model.eval()
    return model


def main(argv=None):
    import numpy as np
    import pandas as pd
    import torch

    from geoaudit.audit import audit_predictions
    from geoaudit.data import load_geo_dataset
    from geoaudit.data._load import split_to_tensors
    from geoaudit.models import load_model

    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="a GeoShapes folder (train and test splits)")
    p.add_argument("--population", action="append", required=True, help="a population folder (model_*/)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data (the oracle's corrupted copies)")
    a = p.parse_args(argv)
    up0 = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    dd = load_geo_dataset(a.data)
    xt = split_to_tensors(dd["train"])[0]
    xs = split_to_tensors(dd["test"])[0]
    meta = dd["test"].select_columns(["image_id", "label", "country_iso3", "gdp_per_capita_usd"]).to_pandas()
    out = {}
    for pop in a.population:
        fit_images = xt
        if Path(pop).name == "oracle":
            from geoaudit.demo import ORACLE_COPIES, oracle_training_data

            td = oracle_training_data(a.data, copies=ORACLE_COPIES, random_state=a.data_seed)
            fit_images = td.images.float()
            if fit_images.max() > 1.5:  # stored as 0-255
                fit_images = fit_images / 255.0
        rows = {"as trained": [], "BN re-estimated": []}
        for ckpt in sorted(Path(pop).glob("model_*")):
            model = load_model(ckpt)[0]
            for stage, preds in rows.items():
                if stage == "BN re-estimated":
                    recalibrate_bn(model, fit_images)
                with torch.no_grad():
                    pred = torch.cat([model(xs[i:i + 512]).argmax(1) for i in range(0, len(xs), 512)])
                preds.append(meta.assign(prediction=pred.numpy(), model=ckpt.name))
        res = {}
        for stage, frames in rows.items():
            df = pd.concat(frames, ignore_index=True)
            rep = audit_predictions(df, group="country_iso3", covariate="gdp_per_capita_usd", model_col="model")
            acc = df.assign(c=df["prediction"] == df["label"]).groupby("model")["c"].mean()
            res[stage] = (dict(rep.betas), acc.to_dict())
        out[pop] = res
        print(f"# {pop}")
        for n in sorted(res["as trained"][0]):
            (b0, a0), (b1, a1) = res["as trained"], res["BN re-estimated"]
            print(f"  {n}: accuracy {a0[n]:.3f} -> {a1[n]:.3f}   beta {b0[n]:+.4f} -> {b1[n]:+.4f}")
        for stage, (b, acc) in res.items():
            v, w = np.array(list(acc.values())), np.array(list(b.values()))
            print(f"  {stage}: accuracy mean {v.mean():.3f} min {v.min():.3f}; beta mean {w.mean():+.4f} "
                  f"sd {w.std(ddof=1):.4f}")
    if len(a.population) == 2:
        first, second = a.population
        for stage in ("as trained", "BN re-estimated"):
            b0, b1 = out[first][stage][0], out[second][stage][0]
            d = np.array([b1[n] - b0[n] for n in sorted(b0)])
            print(f"  paired difference (second - first), {stage}: mean {d.mean():+.4f} sd {d.std(ddof=1):.4f} "
                  f"d {-d.mean() / d.std(ddof=1):.2f}")
    print(f"  uptime before: {up0}\n  uptime after:  "
          + subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip())


if __name__ == "__main__":
    main()
