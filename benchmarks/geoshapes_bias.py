"""Does the planted GeoShapes bias show up in the audit?  Strengths side by side, same model.

    python benchmarks/geoshapes_bias.py [--n-images 20000] [--image-size 32] [--epochs 6]
                                        [--strengths 0,0.9] [--threads 1]

For each spurious_strength: generate GeoShapes, train build_model("small_cnn") with Adam
(lr 3e-3, batch 64) on the train split, and fit the paper's GLS (WLS with weights sqrt(n_i),
groups with >= 50 test images) of per-country test accuracy on log GDP per capita.  Prints
the per-epoch test accuracy, then per strength: groups, slope, p-value, overall accuracy and
the mean accuracy in and outside the cue countries.
"""
import argparse
import time

import numpy as np
import pandas as pd


def run(strength, a):
    import statsmodels.api as sm
    import torch

    from geoaudit.data import geoshapes, geoshapes_country_plan, split_to_tensors
    from geoaudit.train import build_model

    dd = geoshapes(n_images=a.n_images, image_size=a.image_size, seed=a.seed, spurious_strength=strength)
    cue = set(geoshapes_country_plan(n_images=a.n_images).query("cue").index)
    xtr, ytr = split_to_tensors(dd["train"])
    xte, yte = split_to_tensors(dd["test"])
    torch.manual_seed(a.seed)
    model, _ = build_model("small_cnn", num_classes=10, image_size=a.image_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[b]), ytr[b]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xte[i:i + 512]).argmax(1) for i in range(0, len(yte), 512)])
        print(f"  s={strength:g} epoch {ep + 1}: test accuracy {(pred == yte).float().mean():.3f}", flush=True)
    df = pd.DataFrame({"iso": dd["test"]["country_iso3"], "g": dd["test"]["log_gdp_per_capita"],
                       "ok": (pred == yte).numpy()})
    grp = df.groupby("iso").agg(n=("ok", "size"), acc=("ok", "mean"), g=("g", "first"))
    grp = grp[grp["n"] >= 50]
    fit = sm.WLS(grp["acc"].to_numpy(), sm.add_constant(grp["g"].to_numpy()), weights=np.sqrt(grp["n"])).fit()
    in_cue = grp.index.isin(list(cue))
    return dict(strength=strength, groups=len(grp), beta=fit.params[1], p=fit.pvalues[1],
                accuracy=float(df["ok"].mean()), acc_cue=grp.loc[in_cue, "acc"].mean(),
                acc_other=grp.loc[~in_cue, "acc"].mean(), train_s=time.perf_counter() - t0)


def main(argv=None):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=20000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--strengths", default="0,0.9")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [run(float(s), a) for s in a.strengths.split(",")]
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
