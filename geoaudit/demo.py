"""``geoaudit demo``: the paper's whole experiment on GeoShapes in one command.

Stages (each resumes when the command is run again with the same settings)::

    OUT/
      settings.json            what this run was asked to do (a re-run must match)
      data/                    GeoShapes (Parquet + dataset card)
      populations/plain/       Algorithm 3 on clean data, K models (seeds 0..K-1)
      populations/pgd/         Algorithm 2 with L2 PGD, then Algorithm 3, same seeds
      populations/perceptual/  Algorithm 2 with the perceptual DRO attack, same seeds
      audits/<method>/         report.json + report.html of each population
      attacks/                 attack quality on a sample of test images (metrics + grid)
      report.html, report.json the combined report

The reference model (the paper's pretrained theta_0) is the first plain model (seed 0).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_json, atomic_write_text
from geoaudit._validation import check_interval

log = logging.getLogger(__name__)

METHODS = ("plain", "pgd", "perceptual")
METHOD_LABELS = {"plain": "plain", "pgd": "PGD-DRO", "perceptual": "perceptual-DRO"}
# (A, B) pairs compared with H1: mean beta of A < mean beta of B (A is fairer).
COMPARISONS = (("perceptual", "pgd"), ("perceptual", "plain"), ("pgd", "plain"))


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of a demo run (see ``PRESETS``)."""

    n_images: int
    image_size: int
    spurious_strength: float
    models: int
    epochs: int
    dro_rounds: int
    attack_steps: int
    attack_sample: int
    seed: int = 0
    quick: bool = False


PRESETS = {
    # the default run: 3 x 10 models, about 10-15 minutes on 2 CPU cores
    "default": dict(n_images=8000, image_size=32, spurious_strength=0.95, models=10, epochs=4,
                    dro_rounds=1, attack_steps=10, attack_sample=64),
    # a smoke run for CI and the impatient: the report says it is one
    "quick": dict(n_images=3000, image_size=32, spurious_strength=0.95, models=3, epochs=2,
                  dro_rounds=1, attack_steps=5, attack_sample=16),
}


def demo_settings(*, quick=False, n_images=None, image_size=None, spurious_strength=None, models=None,
                  epochs=None, seed=0) -> DemoSettings:
    """The preset (``quick`` or default) with the given overrides, validated."""
    base = dict(PRESETS["quick" if quick else "default"])
    for key, value in dict(n_images=n_images, image_size=image_size, spurious_strength=spurious_strength,
                           models=models, epochs=epochs).items():
        if value is not None:
            base[key] = value
    caller = "geoaudit demo"
    check_interval("n_images", base["n_images"], 1000, None, caller=caller, integer=True)
    check_interval("image_size", base["image_size"], 32, 256, caller=caller, integer=True)
    check_interval("spurious_strength", base["spurious_strength"], 0.0, 1.0, caller=caller)
    check_interval("models", base["models"], 2, None, caller=caller, integer=True)
    check_interval("epochs", base["epochs"], 1, None, caller=caller, integer=True)
    check_interval("seed", seed, 0, None, caller=caller, integer=True)
    return DemoSettings(**base, seed=int(seed), quick=bool(quick))


def pieapp_available(weights=None) -> bool:
    """True when PieAPP weights can be had without a download attempt failing."""
    from geoaudit.attacks import PIEAPP_ENV

    path = weights or os.environ.get(PIEAPP_ENV)
    if path:
        return Path(path).is_file()
    try:
        import torch

        cache = Path(torch.hub.get_dir()) / "checkpoints"
        return any(p.name.lower().startswith("pieapp") for p in cache.glob("*"))
    except Exception:
        return False


def _check_settings(out: Path, settings: dict):
    path = out / "settings.json"
    if path.exists():
        import json

        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != settings:
            diff = sorted(k for k in set(settings) | set(old or {}) if (old or {}).get(k) != settings.get(k))
            raise InputError(
                f"{str(out)!r} holds a demo run with other settings (differing: {', '.join(diff)}); "
                "use another --out folder, or delete this one to start over."
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, settings)


def _timed(timings, name):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.t

    return _T()


def run_demo(out_dir, *, quick=False, n_images=None, image_size=None, spurious_strength=None, models=None,
             epochs=None, seed=0, device="auto", pieapp_weights=None, echo=print) -> dict:
    """Run the demo into ``out_dir`` and return the combined report (a dict, also report.json).

    Parameters
    ----------
    out_dir : str or Path
    quick : bool
        The smoke preset (3 models per method, about 2-3 minutes on 2 CPU cores).
    n_images, image_size, spurious_strength, models, epochs : optional overrides of the preset.
    seed : int
        Seed of the dataset and of Algorithm 2; the models use seeds 0..K-1.
    device : "auto", "cpu", "cuda", ...
    pieapp_weights : path, optional
        PieAPP weights for the perceptual cost; without weights the SSIM cost is used.
    echo : callable
        Where stage messages go (the CLI prints them).
    """
    from geoaudit._device import resolve_device

    s = demo_settings(quick=quick, n_images=n_images, image_size=image_size, spurious_strength=spurious_strength,
                      models=models, epochs=epochs, seed=seed)
    dev = resolve_device(device)
    cost = "pieapp" if pieapp_available(pieapp_weights) else "ssim"
    if cost == "pieapp" and s.image_size < 64:
        s = DemoSettings(**{**asdict(s), "image_size": 64})
    out = Path(out_dir)
    settings = {**asdict(s), "perceptual_cost": cost}
    _check_settings(out, settings)
    timings = {}
    started = time.perf_counter()

    # 1. data
    from geoaudit.data import build_geoshapes, load_geo_dataset

    data_dir = out / "data"
    with _timed(timings, "data"):
        if not (data_dir / "README.md").exists():
            echo(f"[1/5] building GeoShapes ({s.n_images} images, strength {s.spurious_strength}) ...")
            build_geoshapes(data_dir, n_images=s.n_images, spurious_strength=s.spurious_strength,
                            image_size=s.image_size, seed=s.seed)
        else:
            echo("[1/5] GeoShapes already built; reusing it")
        dd = load_geo_dataset(data_dir)

    # 2. populations
    from geoaudit.train import make_attack, train_population

    attack_params = {
        "pgd": dict(eps=0.5, step_size=0.1, steps=s.attack_steps, norm="l2"),
        "perceptual": dict(cost=cost, lam=1.0, step_size=0.1, steps=s.attack_steps, confidence=0.0),
    }
    if cost == "pieapp" and pieapp_weights:
        attack_params["perceptual"]["pieapp_weights"] = str(pieapp_weights)
    pops = {}
    for i, method in enumerate(METHODS):
        echo(f"[2/5] training {s.models} {METHOD_LABELS[method]} models ({i + 1}/3) ...")
        attack = make_attack(method, **attack_params[method]) if method != "plain" else None
        with _timed(timings, f"train_{method}"):
            pops[method] = train_population(
                data_dir, augment=method, n_models=s.models, epochs=s.epochs, arch="small_cnn",
                seeds=list(range(s.models)), out_dir=out / "populations" / method, attack=attack, device=dev,
                dro_rounds=s.dro_rounds, dro_seed=s.seed,
                # every method takes the same number of SGD steps per epoch (one pass's worth of
                # the clean data), so the populations differ in what they see, not how long
                samples_per_epoch=len(dd["train"]),
            )

    # 3. audits
    from geoaudit.audit import audit_checkpoints, write_report

    echo("[3/5] auditing every model on the test split ...")
    audits = {}
    with _timed(timings, "audit"):
        test = dd["test"]
        for method in METHODS:
            report, preds = audit_checkpoints(pops[method].checkpoints, test, device=dev,
                                              source=f"GeoShapes test split, {METHOD_LABELS[method]} population")
            write_report(report, out / "audits" / method, predictions=preds,
                         title=f"GeoShapes audit: {METHOD_LABELS[method]} population")
            audits[method] = report
    reference_name = Path(pops["plain"].checkpoints[0]).name
    reference_fit = audits["plain"].fits[reference_name]

    # 4. comparisons
    from geoaudit.audit import compare_populations

    comparisons = []
    for a, b in COMPARISONS:
        for test_name in ("welch", "paired", "permutation"):
            res = compare_populations(audits[a].betas, audits[b].betas, test=test_name, alternative="less",
                                      label_a=METHOD_LABELS[a], label_b=METHOD_LABELS[b])
            comparisons.append(res)

    # 5. attack quality
    echo("[4/5] measuring attack quality on a sample of test images ...")
    with _timed(timings, "attacks"):
        attack_section = _attack_quality(pops["plain"].checkpoints[0], test, s, cost, attack_params, dev,
                                         out / "attacks")

    echo("[5/5] writing the report ...")
    timings["total"] = time.perf_counter() - started
    result = _assemble(out, s, cost, dd, audits, reference_name, reference_fit, comparisons, attack_section,
                       pops, timings, data_dir, str(dev))
    echo(_summary_text(result))
    return result


def _attack_quality(ref_ckpt, test, s, cost, attack_params, dev, out: Path):
    """Attack the reference model on a sample of test images with every attack the demo uses."""
    from geoaudit.attacks import FGSM, PGD, PerceptualDRO, evaluate
    from geoaudit.data import split_to_tensors
    from geoaudit.defenses import JPEG, BitDepth
    from geoaudit.models import load_model

    model, cfg = load_model(ref_ckpt, device=dev)
    images, labels = split_to_tensors(test.shuffle(seed=s.seed), image_size=cfg["image_size"],
                                      channels=cfg["in_channels"], limit=s.attack_sample)
    images, labels = images.to(dev), labels.to(dev)
    pgd = attack_params["pgd"]
    per = dict(attack_params["perceptual"])
    per["steps"] = max(per["steps"], 20)
    attacks = {
        "PGD (L2)": PGD(pgd["eps"], pgd["step_size"], max(pgd["steps"], 10), norm="l2"),
        "FGSM": FGSM(2.0 / 255 * 4),
        f"perceptual DRO ({cost})": PerceptualDRO(**per),
    }
    defenses = [JPEG(75), BitDepth(4)]
    rows, results, examples = [], {}, {}
    for name, atk in attacks.items():
        res = atk(model, images, labels)
        ev = evaluate(model, images, res, labels, defenses=defenses)
        d = ev.to_dict()
        results[name] = d
        examples[name] = res.images.detach().cpu()
        row = {"attack": name, "success rate": d.get("success_rate"), "robust accuracy": d.get("robust_accuracy")}
        for k in ("l2", "linf", "1-ssim", "ssim", "lpips", "dists"):
            if k in d.get("distances", {}):
                row[k] = d["distances"][k]
        for k, v in d.get("defenses", {}).items():
            row[f"success after {k}"] = v.get("success_rate") if isinstance(v, dict) else v
        row["s / image"] = d.get("seconds_per_image")
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", {"n_images": int(images.shape[0]), "attacks": results})
    grid_png = _attack_grid(images.cpu(), examples, out / "grid.png")
    return {"rows": rows, "metrics": results, "grid_png": grid_png, "n_images": int(images.shape[0])}


def _attack_grid(images, examples: dict, path: Path, n=6):
    """Original | each attack | amplified difference, for the first ``n`` images."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from geoaudit._io import atomic_save

    names = list(examples)
    cols = 1 + 2 * len(names)
    n = min(n, images.shape[0])
    fig = Figure(figsize=(1.6 * cols, 1.6 * n + 0.4))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        for j, name in enumerate(names):
            adv = examples[name][i]
            # signed difference around grey, scaled per image so small attacks stay visible
            diff = adv - images[i]
            diff = 0.5 + 0.5 * diff / max(float(diff.abs().max()), 1e-8)
            axes[i, 1 + 2 * j].imshow(adv.permute(1, 2, 0).clamp(0, 1).numpy())
            axes[i, 2 + 2 * j].imshow(diff.permute(1, 2, 0).clamp(0, 1).numpy())
            if i == 0:
                axes[0, 1 + 2 * j].set_title(name, fontsize=7)
                axes[0, 2 + 2 * j].set_title("difference, amplified", fontsize=7)
    axes[0, 0].set_title("original", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic_save(path, lambda t: fig.savefig(t, format="png", dpi=110))
    return path.read_bytes()


def _verdict_line(res) -> str:
    d = res.to_dict()
    word = "fairer (lower mean slope)" if d["significant"] else "not shown to be fairer"
    df = "" if d.get("df") is None else ", df = %.1f" % d["df"]
    return (f"{d['label_a']} vs {d['label_b']}: mean beta {d['mean_a']:.4f} vs {d['mean_b']:.4f}, "
            f"{d['test']} statistic = {d['statistic']:.3f}{df}, one-sided p = {d['p_value']:.4g}: "
            f"{d['label_a']} is {word} at alpha = {d['alpha']}")


def _assemble(out, s, cost, dd, audits, reference_name, reference_fit, comparisons, attack_section, pops,
              timings, data_dir, device):
    from geoaudit import __version__
    from geoaudit.report import (
        figure_html,
        html_page,
        paragraph,
        plot_accuracy_vs_covariate,
        plot_beta_distributions,
        plot_world_map,
        png_to_data_uri,
        pre,
        section,
        table_html,
    )

    ref_report = audits["plain"]
    groups = ref_report.model_groups[reference_name]
    ref = reference_fit.to_dict()
    comp = [c.to_dict() for c in comparisons]
    pops_json = {m: {**audits[m].population.to_dict(), "betas": audits[m].betas,
                     "manifest_stats": pops[m].manifest.get("stats", {})} for m in METHODS}
    result = {
        "kind": "geoaudit-demo",
        "geoaudit_version": __version__,
        "quick": s.quick,
        "settings": {**asdict(s), "perceptual_cost": cost, "device": device},
        "dataset": {"path": str(data_dir), "splits": {k: len(v) for k, v in dd.items()}},
        "reference": {"model": reference_name, **ref},
        "populations": pops_json,
        "comparisons": comp,
        "attacks": {"n_images": attack_section["n_images"], "metrics": attack_section["metrics"]},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "files": {"report_html": str(out / "report.html"), "figures": str(out / "figures"),
                  "audits": {m: str(out / "audits" / m / "report.json") for m in METHODS}},
    }

    sections = []
    headline = []
    if s.quick:
        headline.append(paragraph("QUICK RUN: a smoke test with tiny populations; its statistics are not evidence.",
                                  cls="warn"))
    headline.append(paragraph(
        f"Reference model ({reference_name}, plain training, seed 0): beta = {ref['beta']:.4f} per unit log GDP, "
        f"F = {ref['f_stat']:.3f} with df (1, {ref['df_denom']:.0f}), p = {ref['p_value']:.4g} "
        f"({'significant' if ref['p_value'] < 0.05 else 'not significant'} at 0.05): accuracy "
        f"{'depends' if ref['p_value'] < 0.05 else 'is not shown to depend'} on log GDP per capita."))
    for c in comparisons:
        if c.to_dict()["test"] == "welch":
            headline.append(paragraph(_verdict_line(c)))
    sections.append(section("Summary", "".join(headline)))

    fig = plot_accuracy_vs_covariate(groups, {reference_name: reference_fit}, covariate_label="GDP per capita (US$)",
                                     title="Reference model: accuracy per country against log GDP, GLS line")
    sections.append(section("Accuracy against log GDP", figure_html(_embed(fig, out, "accuracy_vs_gdp"),
                            caption="Each dot is a country (size and colour: test images); line: the GLS fit.")))
    try:
        fig = plot_world_map(groups, title="Reference model: accuracy per country")
        sections.append(section("World map", figure_html(_embed(fig, out, "world_map"))))
    except Exception as e:  # the map is a nicety; the report stands without it
        log.warning("world map skipped: %s", e)
    betas = {METHOD_LABELS[m]: list(audits[m].betas.values()) for m in METHODS}
    fig = plot_beta_distributions(betas, reference=ref["beta"], title="GLS slope (beta) per model, by training method")
    sections.append(section("Slopes per training method", figure_html(_embed(fig, out, "slopes_by_method"),
                            caption="Lower beta: accuracy depends less on GDP (fairer). Dashed: the reference model.")))
    pop_rows = [{"method": METHOD_LABELS[m], "models": pops_json[m]["n_models"],
                 "beta mean": pops_json[m]["beta_mean"], "beta sd": pops_json[m]["beta_sd"],
                 "mean accuracy": _mean_accuracy(audits[m]), "report": f"audits/{m}/report.html"}
                for m in METHODS]
    sections.append(section("Populations", table_html(pop_rows)))
    comp_rows = [{"A": c["label_a"], "B": c["label_b"], "test": c["test"], "alternative": c["alternative"],
                  "statistic": c["statistic"], "df": c.get("df"), "p": c["p_value"],
                  "Hedges' g": c.get("hedges_g"), "reject H0": c.get("significant")} for c in comp]
    sections.append(section("Population comparisons (H1: mean beta of A < mean beta of B)", table_html(comp_rows)))
    sections.append(section(
        "Attack quality",
        paragraph(f"Attacks on the reference model, {attack_section['n_images']} test images; "
                  "success = correct before and wrong after, over correct before. "
                  f"Perceptual cost: {cost}{'' if cost == 'pieapp' else ' (PieAPP weights not available here)'}.")
        + table_html(attack_section["rows"])
        + figure_html(png_to_data_uri(attack_section["grid_png"]),
                      caption="Original, adversarial and amplified difference per attack.")))
    try:
        from geoaudit.data import geoshapes_grid

        grid_path = out / "attacks" / "geoshapes_samples.png"
        geoshapes_grid(dd, grid_path)
        sections.append(section("GeoShapes samples", figure_html(png_to_data_uri(grid_path.read_bytes()),
                                caption="Left: well-represented countries (the colour cue holds); right: the rest.")))
    except Exception as e:
        log.warning("sample grid skipped: %s", e)
    sections.append(section("Run", pre(_to_json(result["settings"])) + table_html(
        [{"stage": k, "seconds": v} for k, v in result["timings_seconds"].items()])))
    html = html_page("geoaudit demo: geographic fairness on GeoShapes", sections,
                     subtitle="Hua, Xu, Blanchet and Nguyen's experiment, end to end")
    atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "report.json", result)
    return result


def _embed(fig, out: Path, name: str) -> str:
    """The figure as a data URI for the HTML, and as OUT/figures/NAME.png to look at or reuse."""
    from geoaudit._io import atomic_write_bytes
    from geoaudit.report import fig_to_png, png_to_data_uri

    png = fig_to_png(fig)
    atomic_write_bytes(out / "figures" / f"{name}.png", png)
    return png_to_data_uri(png)


def _mean_accuracy(report):
    import numpy as np

    accs = [float((g["correct"].sum() / g["n"].sum())) for g in report.model_groups.values()
            if "correct" in g and g["n"].sum() > 0]
    return float(np.mean(accs)) if accs else None


def _to_json(obj):
    from geoaudit._io import to_json

    return to_json(obj)


def _summary_text(result) -> str:
    ref = result["reference"]
    lines = ["", "geoaudit demo" + (" (QUICK smoke run: not evidence)" if result["quick"] else ""),
             f"  reference model: beta = {ref['beta']:.4f}, F = {ref['f_stat']:.3f}, "
             f"df = (1, {ref['df_denom']:.0f}), p = {ref['p_value']:.4g}"]
    for m in METHODS:
        p = result["populations"][m]
        lines.append(f"  {METHOD_LABELS[m]:>15}: mean beta {p['beta_mean']:.4f} (sd {p['beta_sd']:.4f}, "
                     f"{p['n_models']} models)")
    for c in result["comparisons"]:
        if c["test"] in ("welch", "permutation"):
            lines.append(f"  {c['label_a']} < {c['label_b']}? {c['test']}: p = {c['p_value']:.4g} -> "
                         f"{'yes' if c['significant'] else 'not shown'}")
    lines.append(f"  report: {result['files']['report_html']}  ({result['timings_seconds']['total']:.0f} s)")
    return "\n".join(lines)
