"""The demo's output folder: what a run may resume from, and the stage times of every call."""
from __future__ import annotations

import json
import time
from pathlib import Path

from geoaudit._demo.plan import MECHANISMS
from geoaudit._errors import InputError
from geoaudit._io import atomic_write_json


def check_settings(out: Path, settings: dict):
    path = out / "settings.json"
    if path.exists():
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


def add_to_run_log(out: Path, timings: dict) -> dict:
    """Record this call's stage times in OUT/runs.json and return, per stage, this call's seconds
    and those of every call so far (a resumed run's own times alone would hide the work done)."""
    path = out / "runs.json"
    try:
        runs = json.loads(path.read_text())
        runs = runs if isinstance(runs, list) else []
    except (OSError, ValueError):
        runs = []
    runs.append({k: round(float(v), 2) for k, v in timings.items()})
    atomic_write_json(path, runs)
    stages = list(dict.fromkeys(k for r in runs for k in r))
    return {k: {"this_run": round(float(timings.get(k, 0.0)), 2),
                "all_runs": round(sum(float(r.get(k, 0.0)) for r in runs), 2), "runs": len(runs)}
            for k in stages}


def timed(timings, name):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - self.t

    return _T()


def check_inputs(out: Path, pieapp_weights):
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {str(out)!r} is a file; give a folder (new or from an earlier demo run).")
    from geoaudit.data._export import output_kind

    # data/ holds one GeoShapes build per mechanism (and a build's hidden partial folder); anything
    # else there is someone's work, which the demo must not mix with its own
    data = out / "data"
    foreign = [p.name for p in (data.iterdir() if data.is_dir() else ())
               if not (p.name.startswith(".") or (p.name in MECHANISMS and p.is_dir()
                                                   and (not any(p.iterdir()) or output_kind(p) == "geoshapes")))]
    if foreign:
        raise InputError(f"The output folder {str(data)!r} is not empty and is not an output of geoaudit "
                         f"(it holds {', '.join(sorted(foreign)[:3])}); give the demo a new folder or one of an "
                         "earlier demo run.")
    if pieapp_weights is not None and not Path(pieapp_weights).is_file():
        raise InputError(f"PieAPP weights file {str(pieapp_weights)!r} does not exist; give the path of the "
                         "weights, or none to use the SSIM cost.")


def population_state(folder: Path, n_models: int):
    """(models already finished, whether D is built) of a population folder from an earlier run."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0, False
    names = {f"model_{i:0{max(3, len(str(n_models - 1)))}d}" for i in range(n_models)}
    done = sum(1 for e in manifest.get("models", []) if e.get("name") in names and e.get("status") == "done"
               and (folder / e["name"] / "weights.pt").exists())
    return done, manifest.get("weighted_dataset") is not None
