"""``run_demo``: data, populations, audits, comparisons and attack quality, resumably."""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict
from pathlib import Path

from geoaudit._demo.assemble import DemoResult, assemble
from geoaudit._demo.attack_quality import attack_quality
from geoaudit._demo.folder import (
    add_to_run_log,
    check_inputs,
    check_settings,
    population_state,
    timed,
)
from geoaudit._demo.methods import attack_params, oracle_training_data
from geoaudit._demo.plan import (
    ALPHA,
    MECHANISMS,
    METHOD_LABELS,
    comparison_plan,
    run_comparisons,
)
from geoaudit._demo.settings import (
    ORACLE_COPIES,
    DemoSettings,
    data_config,
    demo_settings,
    pieapp_available,
)
from geoaudit._io import atomic_write_bytes, atomic_write_json


def run_demo(out_dir, *, quick=False, n_images=None, image_size=None, capture_strength=None, spurious_strength=None,
             models=None, check_models=None, epochs=None, mechanisms=None, seed=0, device="auto", pieapp_weights=None,
             echo=print) -> DemoResult:
    """Run the demo into ``out_dir`` and return the combined report (also report.json).

    Parameters
    ----------
    out_dir : str or Path
        A new folder, or one of an earlier run with the same settings (it resumes).
    quick : bool
        The smoke preset (the capture dataset only, 3 models per population).
    n_images, image_size, capture_strength, spurious_strength, models, check_models, epochs, mechanisms : optional
        Overrides of the preset (see :func:`demo_settings`).
    seed : int
        Seed of the datasets and of Algorithm 2; the models use seeds 0..K-1.
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

    s = demo_settings(quick=quick, n_images=n_images, image_size=image_size, capture_strength=capture_strength,
                      spurious_strength=spurious_strength, models=models, check_models=check_models, epochs=epochs,
                      mechanisms=mechanisms,
                      seed=seed)
    out = Path(out_dir)
    check_inputs(out, pieapp_weights)
    dev = resolve_device(device)
    cost = "pieapp" if pieapp_available(pieapp_weights) else "ssim"
    if cost == "pieapp" and s.image_size < 64:
        s = DemoSettings(**{**asdict(s), "image_size": 64})
    settings = json.loads(json.dumps({**asdict(s), "perceptual_cost": cost}))
    check_settings(out, settings)
    timings = {}
    started = time.perf_counter()

    def say(msg):
        echo(f"[{time.perf_counter() - started:6.0f} s] {msg}")

    plan = comparison_plan({m: s.methods_of(m) for m in s.mechanisms})
    say(f"geoaudit demo{' (QUICK smoke run: not evidence)' if s.quick else ''}: "
        f"{len(s.mechanisms)} dataset(s), {sum(len(s.methods_of(m)) for m in s.mechanisms)} populations of "
        f"{' / '.join(str(s.models_of(m)) for m in s.mechanisms)} models, {len(plan)} planned comparisons "
        "(primary: capture, perceptual-DRO < PGD-DRO)")

    # 1. data
    from geoaudit.data import build_geoshapes, load_geo_dataset

    data = {}
    with timed(timings, "data"):
        for mech in s.mechanisms:
            folder = out / "data" / mech
            if not (folder / "README.md").exists():
                say(f"[1/5] building GeoShapes '{mech}' ({s.n_images} images; {MECHANISMS[mech]}) ...")
                build_geoshapes(folder, n_images=s.n_images, image_size=s.image_size, n_classes=s.n_classes,
                                random_state=s.seed,
                                **data_config(s, mech))
            else:
                say(f"[1/5] GeoShapes '{mech}' already built; reusing it")
            data[mech] = load_geo_dataset(folder)

    # 2. populations
    from geoaudit.attacks import make_attack
    from geoaudit.train import train_population

    params = attack_params(s, cost, pieapp_weights)
    pops = {}
    total = sum(len(s.methods_of(m)) for m in s.mechanisms)
    i = 0
    for mech in s.mechanisms:
        pops[mech] = {}
        for method in s.methods_of(mech):
            i += 1
            folder = out / "populations" / mech / method
            k = s.models_of(mech)
            done, has_d = population_state(folder, k)
            what = f"{METHOD_LABELS[method]} on '{mech}' ({i}/{total})"
            if done >= k:
                say(f"[2/5] {what}: all {k} models already trained; reusing them")
            else:
                dro = "" if method in ("plain", "oracle") or has_d else \
                    f"building D (Algorithm 2, T1 = {s.dro_rounds}), then "
                left = f"{k - done} of {k}" if done else f"{k}"
                say(f"[2/5] {what}: {dro}training {left} models ...")
            train_data = out / "data" / mech
            if method == "plain":
                augment, attack, reuse = "plain", None, "auto"
            elif method == "oracle":
                # the bias's own corruption as augmentation: clean images plus corrupted copies
                augment, attack, reuse = "plain", None, "auto"
                train_data = oracle_training_data(train_data, copies=ORACLE_COPIES, random_state=s.seed)
            else:
                augment, attack, reuse = method, make_attack(method, **params[method]), False
            with timed(timings, f"train {mech}/{method}"):
                pops[mech][method] = train_population(
                    train_data, augment=augment, n_models=k, epochs=s.epochs, arch="small_cnn",
                    seeds=list(range(k)), out_dir=folder, attack=attack, device=dev, lr=s.lr,
                    dro_rounds=s.dro_rounds, dro_random_state=s.seed, reuse=reuse,
                    # every method takes the same number of SGD steps per epoch (one pass's worth of
                    # the clean data), so the populations differ in what they see, not how long
                    samples_per_epoch=len(data[mech]["train"]),
                    on_model_end=lambda e, what=what: say(f"      {what}: {e['name']} trained"),
                )

    # 3. audits
    from geoaudit.audit import audit_checkpoints, write_report

    say("[3/5] auditing every model on its test split ...")
    audits = {}
    with timed(timings, "audit"):
        for mech in s.mechanisms:
            audits[mech] = {}
            for method in s.methods_of(mech):
                report, preds = audit_checkpoints(
                    pops[mech][method].checkpoints, data[mech]["test"], device=dev,
                    source=f"GeoShapes '{mech}' test split, {METHOD_LABELS[method]} population")
                folder = out / "audits" / mech / method
                if method == "plain":  # the full audit page (figures, map) for the reference population
                    write_report(report, folder, predictions=preds,
                                 title=f"GeoShapes '{mech}' audit: {METHOD_LABELS[method]} population")
                else:  # what `geoaudit compare` reads; the page's figures would cost more than the audit
                    atomic_write_json(folder / "report.json", report.to_dict())
                    buf = io.BytesIO()
                    preds.to_parquet(buf, index=False)
                    atomic_write_bytes(folder / "predictions.parquet", buf.getvalue())
                audits[mech][method] = report

    # 4. comparisons
    betas = {m: {k: dict(a.betas) for k, a in audits[m].items()} for m in s.mechanisms}
    comparisons = run_comparisons(betas, plan, alpha=ALPHA)

    # 5. attack quality, on the first dataset's reference model
    say("[4/5] measuring attack quality on a sample of test images ...")
    first = s.mechanisms[0]
    with timed(timings, "attacks"):
        attack_section = attack_quality(pops[first]["plain"].checkpoints[0], data[first]["test"], s, cost,
                                        params, dev, out / "attacks")

    say("[5/5] writing the report ...")
    timings["total"] = time.perf_counter() - started
    timings = add_to_run_log(out, timings)
    result = assemble(out, s, cost, data, audits, pops, comparisons, attack_section, timings, str(dev))
    echo(result.summary())
    return result
