"""The demo's attack-quality section: every attack the demo uses, on the reference model."""
from __future__ import annotations

from pathlib import Path

from geoaudit._io import atomic_write_bytes, atomic_write_json


def attack_quality(ref_ckpt, test, s, cost, attack_params, dev, out: Path) -> dict:
    """Attack the reference model on a sample of test images with every attack the demo uses.

    Parameters
    ----------
    ref_ckpt : Path
        The reference model's checkpoint folder.
    test : datasets.Dataset
        The test split it is attacked on.
    s : DemoSettings
    cost : str
        The perceptual cost.
    attack_params : dict
        The training attacks' parameters (:func:`geoaudit._demo.methods.attack_params`).
    dev : torch.device
    out : Path
        Where ``metrics.json`` and ``grid.png`` go.

    Returns
    -------
    dict
        ``rows`` (the report's table), ``metrics``, ``grid_png``, ``n_images``.
    """
    from geoaudit.attacks import evaluate, make_attack
    from geoaudit.data import split_to_tensors
    from geoaudit.defenses import JPEG, BitDepth
    from geoaudit.models import load_model
    from geoaudit.report import fig_to_png, plot_attack_grid

    model, cfg = load_model(ref_ckpt, device=dev)
    images, labels = split_to_tensors(test.shuffle(seed=s.seed), image_size=cfg["image_size"],
                                      channels=cfg["in_channels"], limit=s.attack_sample)
    images, labels = images.to(dev), labels.to(dev)
    attacks = {
        "PGD (L2), as in training": make_attack("pgd", **attack_params["pgd"]),
        "FGSM": make_attack("fgsm", eps=2.0 / 255 * 4),
        f"perceptual DRO ({cost}), as in training": make_attack("perceptual", **attack_params["perceptual"]),
    }
    defenses = [JPEG(75), BitDepth(4)]
    rows, results, examples = [], {}, {}
    for name, atk in attacks.items():
        res = atk(model, images, labels)
        # adaptive too (BPDA through each defense): an oblivious-only evaluation flatters defenses
        ev = evaluate(model, images, res, labels, defenses=defenses, adaptive=True, attack=atk)
        d = ev.to_dict()
        results[name] = d
        examples[name] = res.images.detach().cpu()
        row = {"attack": name, "success rate": d.get("success_rate"), "robust accuracy": d.get("robust_accuracy")}
        for k in ("l2", "linf", "1-ssim", "ssim", "lpips", "dists"):
            if k in d.get("distances", {}):
                row[k] = d["distances"][k]
        for k, v in d.get("defenses", {}).items():
            row[f"success after {k}"] = v.get("success_rate") if isinstance(v, dict) else v
            if isinstance(v, dict) and v.get("adaptive_success_rate") is not None:
                row[f"adaptive success after {k}"] = v["adaptive_success_rate"]
        row["s / image"] = d.get("seconds_per_image")
        rows.append(row)
    grid_png = fig_to_png(plot_attack_grid(images.cpu(), examples))
    atomic_write_json(out / "metrics.json", {"n_images": int(images.shape[0]), "attacks": results})
    atomic_write_bytes(out / "grid.png", grid_png)
    return {"rows": rows, "metrics": results, "grid_png": grid_png, "n_images": int(images.shape[0])}
