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
from geoaudit._demo.methods import attack_params
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
             jobs=None, echo=print) -> DemoResult:
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
    jobs : int, optional
        Populations trained at once, each in its own process (1: one after another in this
        process).  Default: on a CPU, the usable cores divided by torch's threads (the CLI sets
        1 thread); on a GPU, 1.  The results do not depend on it.
    echo : callable
        Where stage messages go (the CLI prints them).

    Returns
    -------
    DemoResult
        A read-only mapping with what ``report.json`` holds.
    """
    import torch

    from geoaudit._demo.parallel import default_jobs
    from geoaudit._device import resolve_device
    from geoaudit._validation import check_interval

    s = demo_settings(quick=quick, n_images=n_images, image_size=image_size, capture_strength=capture_strength,
                      spurious_strength=spurious_strength, models=models, check_models=check_models, epochs=epochs,
                      mechanisms=mechanisms,
                      seed=seed)
    out = Path(out_dir)
    check_inputs(out, pieapp_weights)
    dev = resolve_device(device)
    threads = torch.get_num_threads()
    workers = default_jobs(dev, threads) if jobs is None else \
        check_interval("jobs", jobs, 1, None, caller="run_demo", integer=True)
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
    from geoaudit._demo.parallel import PopulationJob, train_populations

    params = attack_params(s, cost, pieapp_weights)
    population_jobs, todo = [], 0
    total = sum(len(s.methods_of(m)) for m in s.mechanisms)
    i = 0
    for mech in s.mechanisms:
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
                todo += 1
                say(f"[2/5] {what}: {dro}training {left} models{' (queued)' if workers > 1 else ''} ...")
            dro_method = method in ("pgd", "perceptual")
            population_jobs.append(PopulationJob(
                key=(mech, method), label=what, data=str(out / "data" / mech),
                # the bias's own corruption as augmentation: clean images plus corrupted copies
                oracle=(ORACLE_COPIES, s.seed) if method == "oracle" else None,
                attack=(method, params[method]) if dro_method else None,
                # to start the longest first: DRO adds Algorithm 2 (measured ~1.3x plain)
                cost=(k - done) * (1.3 if dro_method else 1.0) + (0.5 * k if dro_method and not has_d else 0),
                kwargs=dict(
                    augment=method if dro_method else "plain", n_models=k, epochs=s.epochs, arch="small_cnn",
                    seeds=list(range(k)), out_dir=str(folder), device=str(dev), lr=s.lr, dro_rounds=s.dro_rounds,
                    dro_random_state=s.seed, reuse=False if dro_method else "auto",
                    # every method takes the same number of SGD steps per epoch (one pass's worth of
                    # the clean data), so the populations differ in what they see, not how long
                    samples_per_epoch=len(data[mech]["train"]))))
    if workers > 1 and todo > 1:
        say(f"[2/5] training {todo} populations in {min(workers, todo)} processes at once "
            f"({threads} torch thread(s) each; --jobs sets how many)")
    with timed(timings, "train, all populations (wall)"):
        trained = train_populations(population_jobs, workers=workers if todo > 1 else 1, threads=threads, say=say)
    pops = {mech: {method: trained[mech, method][0] for method in s.methods_of(mech)} for mech in s.mechanisms}
    timings.update({f"train {mech}/{method}": seconds for (mech, method), (_, seconds) in trained.items()})

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
    result = assemble(out, s, cost, data, audits, pops, comparisons, attack_section, timings, str(dev), jobs=workers)
    echo(result.summary())
    return result
