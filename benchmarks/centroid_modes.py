"""The centroid defense's two modes on scikit-learn digits (offline): the paper's defense as
written (``CentroidDefense.faithful``: appendix A thresholds, the 7 / 5 Linear/Conv layers,
argmax with ties to the lowest class) and geoaudit's calibrated mode (``from_data``: medoid
centroids, per-layer 0.95 quantile thresholds, every Linear/Conv/activation module, ties by
the logits), under FGSM, for the paper's MLP and LeNet-5 at 28 px.

    python benchmarks/centroid_modes.py [--epochs 10] [--eps 0,0.05,0.1,0.2,0.3,0.5] [--figure PATH]

Prints one table per model (undefended, faithful, faithful loose top 3, calibrated,
calibrated loose, and how many test images end in a tie under the faithful vote).
"""
from __future__ import annotations

import argparse

import torch


def main(argv=None):
    from geoaudit.data import load_digits_tensors
    from geoaudit.defenses import (
        CentroidDefense,
        evaluate_centroid_defense,
        select_centroids,
    )
    from geoaudit.train import MLP7, LeNet5, fit_classifier

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eps", default="0,0.05,0.1,0.2,0.3,0.5")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--figure", default=None, help="write the curves to this PNG")
    a = p.parse_args(argv)
    eps = [float(e) for e in a.eps.split(",")]
    torch.manual_seed(0)
    d = load_digits_tensors(image_size=a.size)
    (xtr, ytr), (xte, yte) = d["train"], d["test"]
    results = {}
    for name, model in (("MLP7", MLP7(10, a.size * a.size)), ("LeNet5", LeNet5(10, 1, a.size))):
        torch.manual_seed(0)
        fit_classifier(model, xtr, ytr, epochs=a.epochs, lr=2e-3)
        model.eval()
        cents, cl, _ = select_centroids(model, xtr, ytr, method="medoid", random_state=0)
        faithful = CentroidDefense.faithful(model, (cents.flatten(0, 1), cl), "mnist")
        calibrated = CentroidDefense.from_data(model, xtr, ytr, random_state=0)
        sc = faithful.scores(xte)
        top = sc.votes.max(1, keepdim=True).values
        ties = int(((sc.votes == top).sum(1) > 1).sum())
        cf = evaluate_centroid_defense(faithful, xte, yte, eps_grid=eps, top_k=3)
        cc = evaluate_centroid_defense(calibrated, xte, yte, eps_grid=eps, top_k=3)
        results[name] = (cf, cc)
        print(f"\n{name}: {faithful.num_layers} layers (faithful), {calibrated.num_layers} (calibrated); "
              f"{len(yte)} test images, {ties} end in a tie under the faithful vote at eps 0")
        print("| eps | undefended | faithful | faithful loose (top 3) | calibrated | calibrated loose (top 3) |")
        print("|---|---|---|---|---|---|")
        for i, e in enumerate(eps):
            print(f"| {e:.2f} | {cf.undefended[i]:.3f} | {cf.defended[i]:.3f} | {cf.loose[i]:.3f} | "
                  f"{cc.defended[i]:.3f} | {cc.loose[i]:.3f} |")
    if a.figure:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4))
        for ax, (name, (cf, cc)) in zip(fig.subplots(1, 2), results.items()):
            ax.plot(eps, cf.undefended, "k-o", label="undefended")
            ax.plot(eps, cf.defended, "r-s", label="faithful (paper)")
            ax.plot(eps, cf.loose, "r:", label="faithful loose (top 3)")
            ax.plot(eps, cc.defended, "b-^", label="calibrated (geoaudit)")
            ax.axhline(0.1, color="grey", ls="--", label="chance")
            ax.set(title=f"{name} on sklearn digits", xlabel="FGSM epsilon", ylabel="accuracy", ylim=(0, 1))
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.figure, dpi=100)
        print(f"wrote {a.figure}")
    return results


if __name__ == "__main__":
    main()
