"""The demo's slopes per population per mechanism, with the comparison p-values and CIs.

    OMP_NUM_THREADS=1 python benchmarks/demo_slopes.py [--out /tmp/demo-default] [--quick] [--models K]
        [--check-models K]

Runs (or, when OUT already holds a finished run with the same settings, resumes and re-reads)
``geoaudit demo`` and prints, per mechanism, each population's mean slope, its sd and mean
accuracy, then every planned comparison: role, mean paired difference with its 95 % CI,
paired t, one-sided p and the Holm-adjusted p; then the verdicts, the stage timings, the
command and ``uptime``.
"""
import argparse
import os
import subprocess
import sys
import time


def main(argv=None):
    import torch

    from geoaudit.demo import run_demo

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/demo-default")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", type=int)
    p.add_argument("--check-models", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-images", type=int)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    r = run_demo(a.out, quick=a.quick, models=a.models, check_models=a.check_models, epochs=a.epochs, n_images=a.n_images, device="cpu",
                 echo=lambda *_: None).to_dict()
    wall = time.perf_counter() - t0
    print(f"{'dataset':<8} {'population':<31} {'K':>2} {'mean beta':>10} {'sd':>8} {'accuracy':>9}")
    for mech, m in r["mechanisms"].items():
        for pop in m["populations"].values():
            sd = pop.get("beta_sd")
            print(f"{mech:<8} {pop['label']:<31} {pop['n_models']:>2} {pop['beta_mean']:>+10.4f} "
                  f"{(sd if sd is not None else float('nan')):>8.4f} {pop['mean_accuracy'] or float('nan'):>9.3f}")
    print()
    print(f"{'role':<17} {'comparison':<28} {'diff A-B':>9} {'95% CI':>20} {'t':>6} {'p':>8} {'adj. p':>8}  A fairer?")
    for c in r["comparisons"]:
        print(f"{c['role']:<17} {c['key']:<28} {c['difference']:>+9.4f} "
              f"{'[%+.4f, %+.4f]' % (c['ci_low'], c['ci_high']):>20} {c['statistic']:>6.2f} {c['pvalue']:>8.3g} "
              f"{c['p_adjusted']:>8.3g}  {'yes' if c['rejected'] else 'not shown'}")
    print()
    for k, v in r["verdicts"].items():
        print(f"{k}: {v}")
    print("timings (s):", r["timings_seconds"], f"(this call {wall:.0f} s)")
    print("command: OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", "") + " python " + " ".join(sys.argv))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
