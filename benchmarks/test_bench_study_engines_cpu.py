"""The study's engines on this machine: what scheduling costs, how stages scale, a rerun.

    pytest benchmarks/test_bench_study_engines_cpu.py --benchmark-only -s

    overhead    1,000 no-op stages (a chain of pretrain -> probe pairs), per stage: the
                local engine with --jobs 2 (beyond its pool's start-up, measured apart)
                and the ray engine on a private cluster (its workers started)
    scaling     8 CPU-bound toy stages (a fixed count of float32 matrix products on one
                thread each, about 1 s), 1 worker against 2: the ratio of wall times
                (target >= 1.9x); the local engine's also net of its pool's start-up
    rerun       the quick preset narrowed to one tokenizer and seed, run once, then again
                with every stage reused: the rerun's wall time on each engine (target:
                under 2 s beyond start-up), beside the start-up alone (the local pool's;
                a private Ray cluster's, bare and with two workers that import the study)
    quick       that study's first run, local --jobs 2 against ray, wall time

Each figure is printed and kept in the benchmark's extra_info.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import pytest
import torch

from charfast.gpt.corpus import shakespeare_documents
from charfast.study import cli, engines
from charfast.study.stages import Stage

ray = pytest.importorskip("ray")
from charfast.study import ray_engine  # noqa: E402 - after the skip

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this file

N_NOOP = 1000
N_TOY, TOY_PRODUCTS = 8, 600  # about 1 s a stage on one thread


@dataclass(frozen=True)
class ToyConfig:
    jobs: int
    device: str = "cpu"


def noop(config, stage, *done) -> str:
    return stage.name


def toy_work(config, stage, *done) -> str:
    """CPU-bound on one thread: what a stage given one CPU does."""
    torch.set_num_threads(1)
    a = torch.randn(384, 384)
    for _ in range(TOY_PRODUCTS):
        a = torch.tanh(a @ a)
    return stage.name


def _chains(n: int) -> list[Stage]:
    stages = []
    for i in range(n // 2):
        pretrain = Stage("pretrain", ("toy", "char", i))
        stages += [pretrain, Stage("probe", (*pretrain.key, 1), (pretrain,))]
    return stages


def _with_private_ray(run):
    ray.init(address="local", include_dashboard=False, configure_logging=False)
    try:
        return run()
    finally:
        ray.shutdown()


def _local_start_up(jobs: int) -> float:
    """Seconds of a local run of 2 no-op stages: its worker processes' start (spawn, import)."""
    started = time.perf_counter()
    engines.run_local(ToyConfig(jobs=jobs), _chains(2), noop)
    return time.perf_counter() - started


def test_scheduling_overhead_per_stage(benchmark):
    stages = _chains(N_NOOP)
    start_up = _local_start_up(jobs=2)
    started = time.perf_counter()
    engines.run_local(ToyConfig(jobs=2), stages, noop)
    local = (time.perf_counter() - started - start_up) / (N_NOOP - 2)
    one_cpu = {kind: {"cpus": 1.0} for kind in ("pretrain", "probe")}

    def on_ray():
        ray_engine.run_graph(ray, ToyConfig(jobs=1), stages[:20], one_cpu, noop)  # workers started
        started = time.perf_counter()
        ray_engine.run_graph(ray, ToyConfig(jobs=1), stages, one_cpu, noop)
        return (time.perf_counter() - started) / N_NOOP

    on = _with_private_ray(on_ray)
    figures = dict(local_start_up_s=round(start_up, 2), local_ms_per_stage=round(1e3 * local, 3))
    benchmark.extra_info.update(figures, ray_ms_per_stage=round(1e3 * on, 3))
    print(
        f"\nscheduling, per no-op stage: local --jobs 2 {1e3 * local:.2f} ms (beyond its {start_up:.1f} s "
        f"start-up), ray {1e3 * on:.2f} ms (workers started)"
    )
    benchmark.pedantic(lambda: None, rounds=1)


def test_toy_stages_scale_from_one_worker_to_two(benchmark):
    stages = [Stage("pretrain", ("toy", "char", i)) for i in range(N_TOY)]
    times = {"local_start_up": _local_start_up(jobs=2)}
    for jobs in (1, 2):
        started = time.perf_counter()
        engines.run_local(ToyConfig(jobs=jobs), stages, toy_work)
        times[f"local_{jobs}"] = time.perf_counter() - started

    def on_ray():
        for cpus in (2.0, 1.0):  # 2 CPUs a stage: one at a time on this 2-core machine; 1: two at once
            asked = {"pretrain": {"cpus": cpus}}
            ray_engine.run_graph(ray, ToyConfig(jobs=1), stages[:2], asked, toy_work)  # workers started
            started = time.perf_counter()
            ray_engine.run_graph(ray, ToyConfig(jobs=1), stages, asked, toy_work)
            times[f"ray_{int(2 / cpus)}"] = time.perf_counter() - started

    _with_private_ray(on_ray)
    local = times["local_1"] / times["local_2"]
    local_net = times["local_1"] / (times["local_2"] - times["local_start_up"])
    on = times["ray_1"] / times["ray_2"]
    benchmark.extra_info.update({k: round(v, 3) for k, v in times.items()})
    benchmark.extra_info.update(local_speedup=round(local, 3), local_speedup_beyond_start_up=round(local_net, 3))
    benchmark.extra_info.update(ray_speedup=round(on, 3))
    print(
        f"\n{N_TOY} toy stages, 1 -> 2 workers: local {local:.2f}x ({local_net:.2f}x beyond the pool's start-up), "
        f"ray {on:.2f}x; seconds { ({k: round(v, 2) for k, v in times.items()}) }"
    )
    benchmark.pedantic(lambda: None, rounds=1)


@ray.remote(num_cpus=1)
def _import_the_study() -> int:
    """What a stage's worker does before its first stage: import the study and torch."""
    import charfast.study.pipeline  # noqa: F401

    return os.getpid()


def test_quick_study_and_a_rerun_with_every_stage_reused(benchmark, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"  # the first 30k chars of 4 plays: the quick preset in minutes
    corpus.mkdir()
    for name, text in shakespeare_documents()[:4]:
        (corpus / f"{name}.txt").write_text(text[:30_000], encoding="utf-8")
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    narrow = ["--preset", "quick", "--tokenizers", "bpe:300", "--seeds", "0", "--device", "cpu", "--data", str(corpus)]
    started = time.perf_counter()
    _with_private_ray(lambda: None)
    times = {"ray_start_and_stop_s": round(time.perf_counter() - started, 2)}
    started = time.perf_counter()
    _with_private_ray(lambda: ray.get([_import_the_study.remote() for _ in range(2)]))
    times["ray_start_workers_import_study_and_stop_s"] = round(time.perf_counter() - started, 2)
    for engine, flags in (("local", ["--jobs", "2"]), ("ray", ["--engine", "ray"])):
        out = ["--out-dir", str(tmp_path / engine)]
        for run in ("first", "rerun"):
            started = time.perf_counter()
            assert cli.main([*narrow, *out, *flags]) == 0
            times[f"{engine}_{run}_s"] = round(time.perf_counter() - started, 2)
    benchmark.extra_info.update(times)
    print(f"\nquick preset (bpe:300, seed 0, 3 archs), wall seconds: {times}")
    benchmark.pedantic(lambda: None, rounds=1)
