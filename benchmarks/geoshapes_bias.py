"""Does each planted GeoShapes bias show up in the audit, and does capture augmentation remove
the capture bias?  All mechanisms side by side, same model, same training, one run.

    OMP_NUM_THREADS=1 python benchmarks/geoshapes_bias.py [--n-images 20000] [--epochs 4]
        [--capture-strength 1.0] [--spurious-strength 0.9] [--threads 1] [--random-state 0]

For each case, generate GeoShapes at 32 px, train build_model("small_cnn") with SGD
(lr 0.05, momentum 0.9, batch 64) on the train split, and fit the audit's GLS
(geoaudit.audit.gls_test with its defaults: the paper's Sigma = diag(1/sqrt(n_i)), groups with
>= 50 test images) of per-country test accuracy on log GDP per capita.  Cases:

  null            spurious 0,   capture 0   (no country effect: slope ~ 0)
  colour          spurious 0.9, capture 0   (the colour shortcut)
  capture         spurious 0,   capture 1.0 (capture quality falling with income)
  both            spurious 0.9, capture 1.0
  capture+oracle  capture 1.0, trained with capture_corruption(x, U(0, 1)) as augmentation
  colour+oracle   colour 0.9, the same augmentation (it should not help there)

Prints the slope, its 95 % CI and F-test p-value per case, accuracy in the cue and other
countries, the training time, then the command and ``uptime``.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd

CASES = (("null", 0.0, 0.0, False), ("colour", None, 0.0, False), ("capture", 0.0, None, False),
         ("both", None, None, False), ("capture+oracle", 0.0, None, True), ("colour+oracle", None, 0.0, True))


def run(name, spurious, capture, oracle, a):
    import torch

    from geoaudit.audit import gls_test
    from geoaudit.data import capture_corruption, geoshapes, geoshapes_country_plan, split_to_tensors
    from geoaudit.models import build_model

    cfg = dict(n_images=a.n_images, image_size=32, random_state=a.random_state,
               spurious_strength=spurious, capture_strength=capture)
    dd = geoshapes(**cfg)
    plan = geoshapes_country_plan(**cfg)
    xtr, ytr = split_to_tensors(dd["train"])
    xte, yte = split_to_tensors(dd["test"])
    torch.manual_seed(a.random_state)
    model, _ = build_model("small_cnn", num_classes=10, image_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(a.random_state)
    aug_rng = np.random.default_rng(a.random_state + 1)
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), 64):
            b = perm[i:i + 64]
            x = xtr[b]
            if oracle:  # the capture corruption at a random severity per image
                x = capture_corruption(x, aug_rng.random(len(b)), random_state=aug_rng)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), ytr[b]).backward()
            opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i:i + 512]).argmax(1) for i in range(0, len(yte), 512)])
    df = pd.DataFrame({"group": dd["test"]["country_iso3"], "gdp": dd["test"]["gdp_per_capita_usd"],
                       "ok": (pred == yte).numpy()})
    grp = df.groupby("group").agg(n=("ok", "size"), correct=("ok", "sum"), covariate=("gdp", "first"))
    grp["accuracy"] = grp["correct"] / grp["n"]
    res = gls_test(grp.reset_index())
    pval = getattr(res, "pvalue", None)
    pval = res.p_value if pval is None else pval
    kept = grp[grp["n"] >= 50]
    cue = kept.index.isin(plan.index[plan["cue"]])
    return dict(case=name, spurious=spurious, capture=capture, groups=res.n_groups, slope=res.beta,
                ci_low=res.ci_low, ci_high=res.ci_high, p=pval, accuracy=float(df["ok"].mean()),
                acc_cue=kept.loc[cue, "accuracy"].mean(), acc_other=kept.loc[~cue, "accuracy"].mean(),
                train_s=train_s)


def main(argv=None):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--n-images", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--spurious-strength", type=float, default=0.9)
    p.add_argument("--capture-strength", type=float, default=1.0)
    p.add_argument("--cases", default=",".join(c[0] for c in CASES))
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    wanted = a.cases.split(",")
    rows = []
    t0 = time.perf_counter()
    for name, s, c, oracle in CASES:
        if name not in wanted:
            continue
        s = a.spurious_strength if s is None else s
        c = a.capture_strength if c is None else c
        rows.append(run(name, s, c, oracle, a))
        print(f"  {name}: slope {rows[-1]['slope']:+.4f} (p {rows[-1]['p']:.2g}), "
              f"{rows[-1]['train_s']:.0f} s training", flush=True)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    print(f"total {time.perf_counter() - t0:.0f} s")
    print("command: OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "") + " python " + " ".join(sys.argv))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
