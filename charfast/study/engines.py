"""The local engine: the study's stage graph on this machine, with no barrier between stages.

With --jobs 1 the stages run in this process, one after another in graph order. With
--jobs N they go to N worker processes as soon as the stages they wait for are done, each
worker with its share of the CPU threads and, with --device cuda, a GPU of its own (the
least busy of the visible ones) instead of cuda:0 for all.

Failures: a stage that raises is reported in one line naming it and the cause; the
stages that wait for it are skipped and reported, the others finish (exit 1). A worker
process that dies (killed, e.g. by the out-of-memory killer) breaks its pool: the stages
running in it are named and run again in a new pool, each alone at first (so a death then
is its own); one whose worker dies WORKER_DEATHS times while it runs alone fails like a
stage that raised. A mistake in
the settings (ValueError, e.g. a folder holding another preset's run) and a stop signal
end the study at once, as in charfast.train.

The ray engine (charfast.study.ray_engine) runs the same graph on a Ray cluster.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import torch

from charfast.gpt.distributed import resolve_device
from charfast.gpt.failures import Interrupted
from charfast.study.stages import Stage, descendants

WORKER_DEATHS = 2  # deaths of its worker while it runs alone (the OOM killer, a kill) that fail a stage


@dataclass
class Outcome:
    """What a run of the graph left: each finished stage's record path, each failed stage's
    cause, and the stages skipped because they wait for a failed one."""

    paths: dict[Stage, str] = field(default_factory=dict)
    failed: dict[Stage, str] = field(default_factory=dict)
    skipped: list[Stage] = field(default_factory=list)

    def fail(self, stages: list[Stage], stage: Stage, cause: BaseException | str) -> None:
        self.failed[stage] = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        print(f"charfast.study: stage {stage} failed: {self.failed[stage]}")
        self.skipped += [s for s in descendants(stages, stage) if s not in self.skipped]

    def report_skipped(self) -> None:
        if self.skipped:
            names = ", ".join(str(s) for s in self.skipped)
            print(f"charfast.study: skipped {len(self.skipped)} stage(s) that wait for a failed one: {names}")


def is_fatal(error: BaseException) -> bool:
    """A mistake in the settings or a stop: the whole study ends, not just the stage."""
    return isinstance(error, (ValueError, Interrupted, KeyboardInterrupt))


def cuda_devices(device: str) -> list[str]:
    """The devices the local engine spreads its jobs over: each visible GPU for "cuda" (or
    "auto" on a machine with one), else the one device asked for."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [str(resolved)]


def least_busy(devices: list[str], busy: list[str]) -> str:
    """The device with the fewest running jobs (the first of them on a tie): round-robin."""
    return min(devices, key=lambda d: (busy.count(d), devices.index(d)))


def run_local(config, stages: list[Stage], runner: Callable) -> Outcome:
    """Run `stages` (each after its dependencies) with runner(config, stage) -> record path;
    config.jobs of them at once."""
    outcome = Outcome()
    if config.jobs == 1:
        for stage in stages:
            if stage in outcome.skipped:
                continue
            try:
                outcome.paths[stage] = runner(config, stage)
            except Exception as error:  # noqa: BLE001 - reported by stage; fatal kinds re-raised
                if is_fatal(error):
                    raise
                outcome.fail(stages, stage, error)
        return outcome
    devices = cuda_devices(config.device)
    threads = max(1, torch.get_num_threads() // config.jobs)
    waiting, suspects, deaths = list(stages), set(), Counter()
    while waiting:  # a pool whose worker died is replaced, and the stages it lost run again
        lost = _run_pool(config, stages, runner, outcome, waiting, suspects, devices, threads)
        for stage in lost:
            print(f"charfast.study: the worker running stage {stage} died (killed, e.g. out of memory); it runs again")
        if len(lost) == 1 and lost[0] in suspects:  # it ran alone: the death was its own
            deaths[lost[0]] += 1
            if deaths[lost[0]] == WORKER_DEATHS:
                outcome.fail(stages, lost[0], f"its worker died each of the {WORKER_DEATHS} times it ran alone "
                             "(killed, e.g. out of memory)")  # fmt: skip
        suspects.update(lost)
        waiting = [s for s in stages if s in waiting or (s in lost and s not in outcome.failed)]
    return outcome


def _run_pool(config, stages, runner, outcome: Outcome, waiting: list[Stage], suspects, devices, threads):
    """Run `waiting` stages (removed from it as they start) in a new pool of config.jobs
    workers until all are done or the pool breaks; returns the stages it lost then (every
    stage running when a worker died). A suspect (a stage lost before) runs alone, so a
    death then is its own."""
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    running: dict[Future, tuple[Stage, str]] = {}
    lost: list[Stage] = []
    with ProcessPoolExecutor(
        config.jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        try:
            while (waiting or running) and not lost:
                for stage in [s for s in waiting if s in outcome.skipped]:
                    waiting.remove(stage)
                for stage in list(waiting):
                    alone = any(s in suspects for s, _ in running.values())
                    if len(running) == config.jobs or alone:
                        break
                    if all(dep in outcome.paths for dep in stage.deps) and not (stage in suspects and running):
                        device = least_busy(devices, [d for _, d in running.values()])
                        future = pool.submit(runner, dataclasses.replace(config, device=device), stage)
                        running[future] = (stage, device)
                        waiting.remove(stage)
                if not running:
                    waiting.clear()  # nothing can start: what is left waits for a failed stage
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    stage, _ = running.pop(future)
                    error = future.exception()
                    if error is None:
                        outcome.paths[stage] = future.result()
                        suspects.discard(stage)
                    elif isinstance(error, BrokenProcessPool):
                        lost.append(stage)
                    elif is_fatal(error):
                        raise error
                    else:
                        outcome.fail(stages, stage, error)
            # A broken pool fails every future it held: each of them is lost too.
            lost += [stage for future, (stage, _) in running.items() if _lost(future)]
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return lost


def _lost(future: Future) -> bool:
    """Whether a running future ended with its pool (a worker died), once the pool is down."""
    try:
        return isinstance(future.exception(timeout=60), BrokenProcessPool)
    except (TimeoutError, CancelledError):
        return True
