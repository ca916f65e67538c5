"""The Ray backend: each population member is one Ray task running ``train_member``.

Tasks write their checkpoints and resume states atomically, exactly as the local backend
does; only the driver writes the manifest, as each task's result arrives.  A task whose worker
dies is retried by Ray and resumes from its last finished epoch.
"""
from __future__ import annotations

import logging

from geoaudit._errors import DependencyError
from geoaudit._progress import progress

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise DependencyError(
            "The ray backend needs Ray, which is not installed: pip install 'geoaudit[ray]' "
            "(or use backend='local')."
        ) from e
    return ray


def _task(spec):
    from geoaudit.train._population import train_member

    return train_member(spec)


def run_on_ray(specs, *, address=None, gpus_per_model=0.0, on_result):
    """Run ``train_member(spec)`` for every spec as a Ray task; call ``on_result(spec, entry, exc)``
    in the driver as each finishes (``exc`` is None on success)."""
    ray = _import_ray()
    if not specs:
        return
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_model, max_retries=2)(_task)
        pending = {remote.remote(spec): spec for spec in specs}
        bar = progress(total=len(specs), desc="models (ray)", unit="model")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                except Exception as exc:  # a failed task: report it, keep the others going
                    cause = getattr(exc, "cause", None) or exc
                    log.error("Model %s failed on Ray: %s", spec["name"], cause)
                    on_result(spec, None, cause)
                else:
                    on_result(spec, entry, None)
                bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()
