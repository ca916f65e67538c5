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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from geoaudit._errors import InputError
from geoaudit._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from geoaudit._results import Result, frozen_mapping, json_safe
from geoaudit._validation import check_interval

__all__ = ["COMPARISONS", "METHODS", "METHOD_LABELS", "PRESETS", "DemoResult", "DemoSettings", "demo_settings",
           "pieapp_available", "run_demo"]

log = logging.getLogger(__name__)

METHODS = ("plain", "pgd", "perceptual")
METHOD_LABELS = {"plain": "plain", "pgd": "PGD-DRO", "perceptual": "perceptual-DRO"}
# (A, B) pairs compared with H1: mean beta of A < mean beta of B (A is fairer).
COMPARISONS = (("perceptual", "pgd"), ("perceptual", "plain"), ("pgd", "plain"))


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of a demo run (see ``PRESETS``).

    Attributes
    ----------
    n_images : int
        GeoShapes images.
    image_size : int
        Image side in pixels.
    spurious_strength : float
        Strength of the planted colour cue in [0, 1].
    models : int
        Models per training method.
    epochs : int
        Epochs per model (Algorithm 3).
    dro_rounds : int
        Rounds of Algorithm 2.
    attack_steps : int
        Steps of the training attacks.
    attack_sample : int
        Test images the attack-quality section attacks.
    seed : int
        Seed of the dataset and of Algorithm 2.
    quick : bool
        The smoke preset.
    """

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
    """The preset (``quick`` or default) with the given overrides, validated.

    Parameters
    ----------
    quick : bool
        Start from the smoke preset.
    n_images, image_size, spurious_strength, models, epochs : optional
        Overrides of the preset (None keeps it).
    seed : int

    Returns
    -------
    DemoSettings
    """
    base = dict(PRESETS["quick" if quick else "default"])
    for key, value in dict(n_images=n_images, image_size=image_size, spurious_strength=spurious_strength,
                           models=models, epochs=epochs).items():
        if value is not None:
            base[key] = value
    caller = "demo_settings"
    check_interval("n_images", base["n_images"], 1000, None, caller=caller, integer=True)
    check_interval("image_size", base["image_size"], 32, 256, caller=caller, integer=True)
    check_interval("spurious_strength", base["spurious_strength"], 0.0, 1.0, caller=caller)
    check_interval("models", base["models"], 2, None, caller=caller, integer=True)
    check_interval("epochs", base["epochs"], 1, None, caller=caller, integer=True)
    check_interval("seed", seed, 0, None, caller=caller, integer=True)
    return DemoSettings(**base, seed=int(seed), quick=bool(quick))


def pieapp_available(weights=None) -> bool:
    """True when PieAPP weights can be had without a download attempt failing.

    Parameters
    ----------
    weights : str or Path, optional
        A weights file; otherwise the ``GEOAUDIT_PIEAPP_WEIGHTS`` environment variable, then
        the torch hub cache.

    Returns
    -------
    bool
    """
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
                "use another output folder, or delete this one to start over."
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


@dataclass(frozen=True, eq=False)
class DemoResult(Result, Mapping):
    """What :func:`run_demo` returns: the combined report (also ``OUT/report.json``).

    A read-only mapping with the keys of ``report.json`` (``kind``, ``geoaudit_version``,
    ``quick``, ``settings``, ``dataset``, ``reference``, ``populations``, ``comparisons``,
    ``attacks``, ``timings_seconds``, ``files``), so ``result["reference"]["beta"]`` works.

    Attributes
    ----------
    data : Mapping
        The report, read-only.
    """

    data: Mapping

    def __post_init__(self):
        object.__setattr__(self, "data", frozen_mapping(json_safe(self.data)))

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)

    def to_dict(self) -> dict:
        """The report as JSON-safe data (what ``report.json`` holds).

        Returns
        -------
        dict
        """
        return json_safe(self.data)

    def summary(self) -> str:
        """The lines the command prints: the reference fit, each population, each comparison.

        Returns
        -------
        str
        """
        return _summary_text(self.to_dict())


def _stat(d, new, old):
    """A statistic under its statsmodels name, or under the name older results used."""
    return d[new] if d.get(new) is not None else d.get(old)


def _check_inputs(out: Path, pieapp_weights):
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {str(out)!r} is a file; give a folder (new or from an earlier demo run).")
    from geoaudit.data._export import check_output_dir  # its data/ is rebuilt whole unless it is GeoShapes

    check_output_dir(out / "data", kind="geoshapes", overwrite=None, caller="run_demo")
    if pieapp_weights is not None and not Path(pieapp_weights).is_file():
        raise InputError(f"PieAPP weights file {str(pieapp_weights)!r} does not exist; give the path of the "
                         "weights, or none to use the SSIM cost.")


def run_demo(out_dir, *, quick=False, n_images=None, image_size=None, spurious_strength=None, models=None,
             epochs=None, seed=0, device="auto", pieapp_weights=None, echo=print) -> DemoResult:
    """Run the demo into ``out_dir`` and return the combined report (also report.json).

    Parameters
    ----------
    out_dir : str or Path
        A new folder, or one of an earlier run with the same settings (it resumes).
    quick : bool
        The smoke preset (3 models per method).
    n_images, image_size, spurious_strength, models, epochs : optional
        Overrides of the preset.
    seed : int
        Seed of the dataset and of Algorithm 2; the models use seeds 0..K-1.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` ...
    pieapp_weights : str or Path, optional
        PieAPP weights for the perceptual cost (must exist); without weights (and none in the
        environment or the torch hub cache) the SSIM cost is used.
    echo : callable
        Where stage messages go (the CLI prints them).

    Returns
    -------
    DemoResult
        A read-only mapping with what ``report.json`` holds.
    """
    from geoaudit._device import resolve_device

    s = demo_settings(quick=quick, n_images=n_images, image_size=image_size, spurious_strength=spurious_strength,
                      models=models, epochs=epochs, seed=seed)
    out = Path(out_dir)
    _check_inputs(out, pieapp_weights)
    dev = resolve_device(device)
    cost = "pieapp" if pieapp_available(pieapp_weights) else "ssim"
    if cost == "pieapp" and s.image_size < 64:
        s = DemoSettings(**{**asdict(s), "image_size": 64})
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
    from geoaudit.attacks import make_attack
    from geoaudit.train import train_population

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
    echo(result.summary())
    return result


def _attack_quality(ref_ckpt, test, s, cost, attack_params, dev, out: Path):
    """Attack the reference model on a sample of test images with every attack the demo uses."""
    from geoaudit.attacks import evaluate, make_attack
    from geoaudit.data import split_to_tensors
    from geoaudit.defenses import JPEG, BitDepth
    from geoaudit.models import load_model
    from geoaudit.report import fig_to_png, plot_attack_grid

    model, cfg = load_model(ref_ckpt, device=dev)
    images, labels = split_to_tensors(test.shuffle(seed=s.seed), image_size=cfg["image_size"],
                                      channels=cfg["in_channels"], limit=s.attack_sample)
    images, labels = images.to(dev), labels.to(dev)
    pgd = dict(attack_params["pgd"])
    pgd["steps"] = max(pgd["steps"], 10)
    per = dict(attack_params["perceptual"])
    per["steps"] = max(per["steps"], 20)
    attacks = {
        "PGD (L2)": make_attack("pgd", **pgd),
        "FGSM": make_attack("fgsm", eps=2.0 / 255 * 4),
        f"perceptual DRO ({cost})": make_attack("perceptual", **per),
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
    grid_png = fig_to_png(plot_attack_grid(images.cpu(), examples))
    atomic_write_json(out / "metrics.json", {"n_images": int(images.shape[0]), "attacks": results})
    atomic_write_bytes(out / "grid.png", grid_png)
    return {"rows": rows, "metrics": results, "grid_png": grid_png, "n_images": int(images.shape[0])}


def _samples_png(dd, out: Path):
    """The GeoShapes sample grid as PNG bytes (also OUT/attacks/geoshapes_samples.png), or None."""
    try:
        from geoaudit.data import geoshapes_grid

        path = out / "attacks" / "geoshapes_samples.png"
        geoshapes_grid(dd, path)
        return path.read_bytes()
    except Exception as e:  # a nicety; the report stands without it
        log.warning("sample grid skipped: %s", e)
        return None


def _assemble(out, s, cost, dd, audits, reference_name, reference_fit, comparisons, attack_section, pops,
              timings, data_dir, device) -> DemoResult:
    from geoaudit import __version__
    from geoaudit.report import render_demo

    groups = audits["plain"].model_groups[reference_name]
    pops_json = {m: {**audits[m].population.to_dict(), "betas": dict(audits[m].betas),
                     "manifest_stats": pops[m].manifest.get("stats", {})} for m in METHODS}
    result = json_safe({
        "kind": "geoaudit-demo",
        "geoaudit_version": __version__,
        "quick": s.quick,
        "settings": {**asdict(s), "perceptual_cost": cost, "device": device},
        "dataset": {"path": str(data_dir), "splits": {k: len(v) for k, v in dd.items()}},
        "reference": {"model": reference_name, **reference_fit.to_dict()},
        "populations": pops_json,
        "comparisons": [c.to_dict() for c in comparisons],
        "attacks": {"n_images": attack_section["n_images"], "metrics": attack_section["metrics"]},
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()},
        "files": {"report_html": str(out / "report.html"), "figures": str(out / "figures"),
                  "audits": {m: str(out / "audits" / m / "report.json") for m in METHODS}},
    })
    html, figs = render_demo(result, reference_groups=groups, reference_fit=reference_fit, labels=METHOD_LABELS,
                             mean_accuracy={m: _mean_accuracy(audits[m]) for m in METHODS},
                             attack_rows=attack_section["rows"], attack_grid_png=attack_section["grid_png"],
                             samples_png=_samples_png(dd, out))
    for name, png in figs.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "report.json", result)
    return DemoResult(result)


def _mean_accuracy(report):
    import numpy as np

    accs = [float((g["correct"].sum() / g["n"].sum())) for g in report.model_groups.values()
            if "correct" in g and g["n"].sum() > 0]
    return float(np.mean(accs)) if accs else None


def _summary_text(result) -> str:
    ref = result["reference"]
    lines = ["", "geoaudit demo" + (" (QUICK smoke run: not evidence)" if result["quick"] else ""),
             f"  reference model: beta = {ref['beta']:.4f}, F = {_stat(ref, 'fvalue', 'f_stat'):.3f}, "
             f"df = (1, {ref['df_denom']:.0f}), p = {_stat(ref, 'pvalue', 'p_value'):.4g}"]
    for m in METHODS:
        p = result["populations"][m]
        lines.append(f"  {METHOD_LABELS[m]:>15}: mean beta {p['beta_mean']:.4f} (sd {p['beta_sd']:.4f}, "
                     f"{p['n_models']} models)")
    for c in result["comparisons"]:
        if c["test"] in ("welch", "permutation"):
            lines.append(f"  {c['label_a']} < {c['label_b']}? {c['test']}: p = {_stat(c, 'pvalue', 'p_value'):.4g} -> "
                         f"{'yes' if c['significant'] else 'not shown'}")
    lines.append(f"  report: {result['files']['report_html']}  ({result['timings_seconds']['total']:.0f} s)")
    return "\n".join(lines)
