"""The demo's combined report: report.json, report.html, the figures and the printed summary."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from geoaudit._demo.plan import MECHANISMS, METHOD_LABELS, stat, verdicts
from geoaudit._demo.settings import data_config, settings_table
from geoaudit._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from geoaudit._results import Result, frozen_mapping, json_safe

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class DemoResult(Result, Mapping):
    """What :func:`run_demo` returns: the combined report (also ``OUT/report.json``).

    A read-only mapping with the keys of ``report.json`` (``kind``, ``geoaudit_version``,
    ``quick``, ``settings``, ``paper_settings``, ``reference``, ``mechanisms``,
    ``comparisons``, ``verdicts``, ``attacks``, ``timings_seconds``, ``files``), so
    ``result["mechanisms"]["capture"]["populations"]["oracle"]["beta_mean"]`` works.

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
        """The lines the command prints: populations per mechanism, each comparison, the verdicts.

        Returns
        -------
        str
        """
        return _summary_text(self.to_dict())


def _samples_png(dd, out: Path):
    """The GeoShapes sample figure as PNG bytes (also OUT/figures/geoshapes_samples.png), or None."""
    try:
        from geoaudit.report._geoshapes_figures import geoshapes_grid_figure

        path = out / "figures" / "geoshapes_samples.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        geoshapes_grid_figure(dd, path, per_group=6)
        return path.read_bytes()
    except Exception as e:  # a nicety; the report stands without it
        log.warning("sample grid skipped: %s", e)
        return None


def _mean_accuracy(report):
    import numpy as np

    accs = [float(g["correct"].sum() / g["n"].sum()) for g in report.model_groups.values()
            if "correct" in g and g["n"].sum() > 0]
    return float(np.mean(accs)) if accs else None


def _population_groups(report):
    """Per-country accuracy averaged over a population's models (the groups the GLS kept)."""
    import pandas as pd

    g = pd.concat([g.assign(model=name) for name, g in report.model_groups.items()], ignore_index=True)
    min_n = next(iter(report.fits.values())).min_group_size
    g = g[g["n"] >= min_n]
    agg = g.groupby("group").agg(n=("n", "first"), accuracy=("accuracy", "mean"), covariate=("covariate", "first"))
    return [{"group": str(k), "n": int(r["n"]), "accuracy": float(r["accuracy"]), "covariate": float(r["covariate"])}
            for k, r in agg.iterrows()]


def assemble(out, s, cost, data, audits, pops, comparisons, attack_section, timings, device, jobs=1) -> DemoResult:
    """Write ``OUT/report.json``, ``OUT/report.html`` and ``OUT/figures/`` from a run's parts.

    Parameters
    ----------
    out : Path
        The run's folder.
    s : DemoSettings
    cost : str
        The perceptual cost used.
    data, audits, pops : dict
        Mechanism -> the datasets / method -> audit report / method -> trained population.
    comparisons : list of dict
        Rows of :func:`geoaudit._demo.plan.run_comparisons`.
    attack_section : dict
        What :func:`geoaudit._demo.attack_quality.attack_quality` returned.
    timings : dict
        Stage -> this call's and all calls' seconds.
    device : str
    jobs : int
        Populations trained at once (processes).

    Returns
    -------
    DemoResult
    """
    from geoaudit import __version__
    from geoaudit.report import render_demo

    first = s.mechanisms[0]
    ref_report = audits[first]["plain"]
    ref_name = next(iter(ref_report.fits))
    ref_fit = ref_report.fits[ref_name]
    mechanisms = {}
    for mech in s.mechanisms:
        mpops = {}
        for method in s.methods_of(mech):
            rep = audits[mech][method]
            fits = {k: f.to_dict() for k, f in rep.fits.items()}
            mpops[method] = {
                **rep.population.to_dict(), "label": METHOD_LABELS[method], "betas": dict(rep.betas),
                "intercept_mean": sum(f["intercept"] for f in fits.values()) / len(fits),
                "mean_accuracy": _mean_accuracy(rep), "groups": _population_groups(rep),
                "weighted_dataset": {k: v for k, v in (pops[mech][method].manifest.get("weighted_dataset") or {}).items()
                                     if k in ("size", "bytes", "storage")},
                "audit_report": str(out / "audits" / mech / method / "report.json"),
            }
        mechanisms[mech] = {"planted": MECHANISMS[mech], "data": str(out / "data" / mech),
                            "data_config": data_config(s, mech),
                            "splits": {k: len(v) for k, v in data[mech].items()}, "populations": mpops}
    settings = {**asdict(s), "perceptual_cost": cost, "device": device, "jobs": jobs}
    result = json_safe({
        "kind": "geoaudit-demo",
        "format_version": 2,
        "geoaudit_version": __version__,
        "quick": s.quick,
        "settings": settings,
        "paper_settings": settings_table(settings),
        "reference": {"mechanism": first, "model": ref_name, **ref_fit.to_dict()},
        "mechanisms": mechanisms,
        "comparisons": comparisons,
        "verdicts": verdicts(comparisons),
        "attacks": {"n_images": attack_section["n_images"], "metrics": attack_section["metrics"]},
        "timings_seconds": {k: v["all_runs"] for k, v in timings.items()},
        "timings_this_run_seconds": {k: v["this_run"] for k, v in timings.items()},
        "runs": max(v["runs"] for v in timings.values()),
        "files": {"report_html": str(out / "report.html"), "figures": str(out / "figures"),
                  "audits": {m: {k: str(out / "audits" / m / k / "report.json") for k in s.methods_of(m)}
                             for m in s.mechanisms}},
    })
    ref_groups = ref_report.model_groups[ref_name]
    # countries left out of the fit are drawn apart (hollow in the scatter, neutral on the map)
    ref_groups["dropped"] = ref_groups["group"].astype(str).isin([str(g) for g in ref_fit.dropped_groups])
    html, figs = render_demo(result, reference_groups=ref_groups, reference_fit=ref_fit,
                             attack_rows=attack_section["rows"], attack_grid_png=attack_section["grid_png"],
                             samples_png=_samples_png(data[first], out))
    for name, png in figs.items():
        atomic_write_bytes(out / "figures" / f"{name}.png", png)
    atomic_write_text(out / "report.html", html)
    atomic_write_json(out / "report.json", result)
    return DemoResult(result)


def _summary_text(result) -> str:
    ref = result["reference"]
    lines = ["", "geoaudit demo" + (" (QUICK smoke run: not evidence)" if result["quick"] else ""),
             f"  reference model ({ref['mechanism']}, plain, seed 0): beta = {ref['beta']:.4f}, "
             f"p = {stat(ref, 'pvalue', 'p_value'):.4g}"]
    for mech, m in result["mechanisms"].items():
        lines.append(f"  {mech} ({m['planted']}):")
        for p in m["populations"].values():
            sd = p.get("beta_sd")
            lines.append(f"    {p['label']:>30}: mean beta {p['beta_mean']:+.4f} (sd "
                         f"{'n/a' if sd is None else format(sd, '.4f')}, {p['n_models']} models), "
                         f"accuracy {p['mean_accuracy'] or float('nan'):.3f}")
    lines.append("  comparisons (paired t-test, H1: A has the lower mean beta):")
    for c in result["comparisons"]:
        lines.append(f"    [{c['role']}] {c['key']}: diff {c['difference']:+.4f} "
                     f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], t = {c['statistic']:.2f}, p = {c['pvalue']:.3g}, "
                     f"adjusted p = {c['p_adjusted']:.3g} -> {'yes' if c['rejected'] else 'not shown'}")
    for k, v in result["verdicts"].items():
        lines.append(f"  {k.replace('_', ' ')}: {v}")
    total, this = result["timings_seconds"]["total"], result.get("timings_this_run_seconds", {}).get("total")
    took = (f"{total:.0f} s" if this is None or result.get("runs", 1) == 1
            else f"{this:.0f} s this call, {total:.0f} s over {result['runs']} calls")
    lines.append(f"  report: {result['files']['report_html']}  ({took})")
    return "\n".join(lines)
