"""Training the demo's populations in parallel processes, one per core.

The populations are independent (Algorithm 2 builds one D per population), so the demo trains
several at once, each in its own process with the parent's torch threads (the CLI sets 1).  A
population trained in a worker is bit-identical to one trained in the calling process: the
same function runs on the same data with the same seeds and thread count, so the results do not
depend on the core count, which intra-op threads would change (``benchmarks/demo_jobs.py``).
"""
from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

from geoaudit._progress import progress_mode


@dataclass
class PopulationJob:
    """One population to train: ``train_population``'s arguments, less what cannot cross processes.

    ``attack`` is ``(method, params)`` for :func:`geoaudit.attacks.make_attack` (built in the
    worker); ``oracle`` is ``(copies, random_state)`` when the training data is the dataset plus
    capture-corrupted copies (made in the worker, so the parent neither builds nor ships them).
    """

    key: tuple
    label: str
    data: str
    kwargs: dict
    attack: tuple | None = None
    oracle: tuple | None = None
    cost: float = 1.0  # relative expected time, to start the longest first


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(device, threads: int) -> int:
    """Processes that train populations at once: one per ``threads`` cores on a CPU, one on a GPU."""
    if device.type != "cpu":
        return 1
    return max(1, available_cores() // max(1, threads))


_messages = None  # a worker's queue to the parent
_stop = None  # set by the parent when it stops: a job already queued to a worker is not started
_ctrl_c = True  # whether Ctrl-C interrupts a job: not when the parent ignores it (nohup, a background job)


class _NotStarted(Exception):
    pass


def _init_worker(messages, stop, threads, progress, ctrl_c):
    import torch

    global _messages, _stop, _ctrl_c
    _messages, _stop, _ctrl_c = messages, stop, ctrl_c
    # Ctrl-C reaches the whole process group: an idle worker ignores it (else it dies with a
    # traceback); a training one gets KeyboardInterrupt, so its population records where it stopped
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)  # the parent's count, not torch's default
    # several processes' bars cannot share a terminal line: lines, each labelled with its population
    os.environ["GEOAUDIT_PROGRESS"] = {"bar": "lines", "off": "0"}.get(progress, progress)


def _train(job: PopulationJob, say=None):
    """Train one population (in a worker, or in this process); returns ``(result, seconds)``."""
    worker = say is None
    if worker:
        if _stop.is_set():
            raise _NotStarted(job.label)
        say = _messages.put
        os.environ["GEOAUDIT_PROGRESS_LABEL"] = f"[{'/'.join(map(str, job.key))}]"
        if _ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _train_here(job, say)
    except KeyboardInterrupt:
        if worker:  # the parent may not have seen its own Ctrl-C yet; no queued job may start
            _stop.set()
        raise
    finally:
        if worker:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_here(job, say):
    from geoaudit.attacks import make_attack
    from geoaudit.train import train_population

    t = time.perf_counter()
    data = job.data
    if job.oracle is not None:
        from geoaudit._demo.methods import oracle_training_data

        copies, random_state = job.oracle
        data = oracle_training_data(data, copies=copies, random_state=random_state)
    attack = None if job.attack is None else make_attack(job.attack[0], **job.attack[1])

    r = train_population(data, attack=attack, **job.kwargs,
                         on_model_end=lambda e: say(f"      {job.label}: {e['name']} trained"))
    # plain data across the process boundary (the result's manifest is a read-only view, not picklable)
    return r.to_dict(), time.perf_counter() - t


def train_populations(jobs, *, workers: int, threads: int, say):
    """Train every job; returns ``{key: (PopulationResult, seconds)}``.

    ``workers`` 1 trains them one after another in this process; more start that many worker
    processes (spawned: a forked torch may hang in OpenMP) and hand out the jobs longest
    first.  Messages of the workers are printed by this process as they come.  On an error
    (or Ctrl-C) the jobs not started are cancelled; what finished is on disk, and re-running
    resumes from it.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        return {job.key: _with_result(_train(job, say)) for job in jobs}
    ctx = multiprocessing.get_context("spawn")
    messages, stop = ctx.Queue(), ctx.Event()
    out, futures = {}, {}
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(messages, stop, threads, progress_mode(),
                                         signal.getsignal(signal.SIGINT) is not signal.SIG_IGN))
    try:
        futures = {pool.submit(_train, job): job for job in sorted(jobs, key=lambda j: -j.cost)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(messages, say)
            for f in done:
                out[futures[f].key] = _with_result(f.result())  # a worker's error is raised here
    except BaseException as exc:
        stop.set()
        # a worker's Ctrl-C (or a job not started because of one) can come back before the
        # parent sees its own: either way the run was interrupted
        interrupted = isinstance(exc, (KeyboardInterrupt, _NotStarted))
        running = sum(1 for f in futures if f.running())
        if running and not interrupted:
            say(f"a population failed ({type(exc).__name__}); letting the {running} running finish, so that "
                "nothing is lost, before stopping")
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(messages, say)
        if isinstance(exc, _NotStarted):
            raise KeyboardInterrupt from None
        raise
    pool.shutdown(wait=True)
    _drain(messages, say)
    return out


def _with_result(done):
    from geoaudit.train import PopulationResult

    fields, seconds = done
    return PopulationResult(**fields), seconds


def _drain(messages, say):
    while True:
        try:
            say(messages.get_nowait())
        except (queue_mod.Empty, EOFError, OSError):  # empty, or its pipe closed (Ctrl-C)
            return
