"""The study's stage graph and its local engine: no barrier between stages, failures that
skip only what waits for them, and a GPU of its own for each job (the device list faked)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import pytest

from charfast.study import cli, engines, presets
from charfast.study import config as study_config
from charfast.study.layout import MIXED
from charfast.study.stages import Stage, descendants, study_stages


@dataclass(frozen=True)
class FakeConfig:
    jobs: int = 2
    device: str = "cpu"


def quick_stages(**overrides) -> list[Stage]:
    config = dataclasses.replace(study_config.StudyConfig(preset="quick", device="cpu"), **overrides).resolved()
    return study_stages(config, presets.PRESETS[config.preset])


def test_the_graph_has_no_barrier_and_a_short_critical_path():
    stages = quick_stages(tokenizers=("bpe:300",), seeds=(0,), archs=("char", "baseline-matched"))
    by_name = {s.name: s for s in stages}
    assert len(by_name) == len(stages)  # every stage once
    assert [s.name for s in stages if s.kind == "pretrain"] == [
        "pretrain(bpe:300, char, 0)",
        "pretrain(bpe:300, baseline-matched, 0)",
    ]
    pretrain = by_name["pretrain(bpe:300, baseline-matched, 0)"]
    splits = by_name["splits(bpe:300)"]
    assert splits.deps == (by_name["pretrain(bpe:300, char, 0)"],)  # the tokenizer's first run only
    mixed = by_name[f"finetune(bpe:300, baseline-matched, 0, 20, {MIXED})"]
    assert mixed.deps == (pretrain, splits)  # not every pretraining: no barrier
    solo = by_name["finetune(bpe:300, baseline-matched, 0, 20, count)"]
    assert solo.deps == (mixed, splits)
    assert by_name["probe(bpe:300, baseline-matched, 0, 5)"].deps == (pretrain,)
    for index, stage in enumerate(stages):  # each after its dependencies
        assert all(stages.index(dep) < index for dep in stage.deps)
    # quick keeps steps 5 and 10: a probe, a mixed and a solo fine-tuning at each of 3 points
    assert len(stages) == 2 + 1 + 2 * 3 * 3
    assert set(descendants(stages, pretrain)) == {
        s for s in stages if s.key[:3] == ("bpe:300", "baseline-matched", 0) and s.kind != "pretrain"
    }


# Runners for the worker processes (module level: they are pickled by name).
def record_runner(config, stage: Stage) -> str:
    start = time.time()
    time.sleep(0.2)
    return f"{stage.name}|{config.device}|{start}|{time.time()}"


def failing_runner(config, stage: Stage) -> str:
    if stage.name == "pretrain(bpe:300, char, 0)":
        raise RuntimeError("the disk is full")
    return stage.name


def mistaken_runner(config, stage: Stage) -> str:
    raise ValueError("--data: a mistake in the settings")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_stage_skips_only_what_waits_for_it(jobs, capsys):
    stages = quick_stages(tokenizers=("bpe:300",), seeds=(0,), archs=("char", "baseline-matched"))
    outcome = engines.run_local(FakeConfig(jobs=jobs), stages, failing_runner)
    failed = next(s for s in stages if s.name == "pretrain(bpe:300, char, 0)")
    assert list(outcome.failed) == [failed] and "RuntimeError: the disk is full" in outcome.failed[failed]
    assert set(outcome.skipped) == set(descendants(stages, failed))
    independent = [s for s in stages if s != failed and s not in outcome.skipped]
    # the baseline run and its probes; its fine-tunings wait for the splits, built from the char run
    assert set(outcome.paths) == set(independent) and len(independent) == 1 + 3
    out = capsys.readouterr().out
    assert out.count("failed") == 1 and "stage pretrain(bpe:300, char, 0) failed: RuntimeError: the disk is full" in out


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_mistake_in_the_settings_ends_the_study(jobs):
    with pytest.raises(ValueError, match="a mistake in the settings"):
        engines.run_local(FakeConfig(jobs=jobs), quick_stages(), mistaken_runner)


def test_jobs_run_stages_as_soon_as_their_dependencies_are_done():
    stages = quick_stages(tokenizers=("bpe:300",), seeds=(0, 1), archs=("char",))
    outcome = engines.run_local(FakeConfig(jobs=2), stages, record_runner)
    started = {s: float(p.split("|")[2]) for s, p in outcome.paths.items()}
    finished = {s: float(p.split("|")[3]) for s, p in outcome.paths.items()}
    assert set(finished) == set(stages)
    for stage in stages:
        assert all(finished[dep] <= started[stage] for dep in stage.deps)
    # No barrier: seed 0's fine-tunings start before seed 1's probes are all done.
    seed0_mixed = next(s for s in stages if s.kind == "finetune" and s.key[2] == 0)
    seed1_probes = [s for s in stages if s.kind == "probe" and s.key[2] == 1]
    assert started[seed0_mixed] < max(finished[s] for s in seed1_probes)


def test_each_job_gets_a_gpu_of_its_own(monkeypatch):
    """--device cuda with 2 visible GPUs (faked) and --jobs 2: the two jobs running at once
    are on different GPUs, never both on cuda:0."""
    monkeypatch.setattr(engines, "cuda_devices", lambda device: ["cuda:0", "cuda:1"])
    stages = [Stage("pretrain", ("bpe:300", "char", seed)) for seed in range(6)]
    outcome = engines.run_local(FakeConfig(jobs=2, device="cuda"), stages, record_runner)
    runs = [(p.split("|")[1], float(p.split("|")[2]), float(p.split("|")[3])) for p in outcome.paths.values()]
    assert {device for device, _, _ in runs} == {"cuda:0", "cuda:1"}
    for device, start, end in runs:  # two jobs at once are never on one GPU
        alongside = [d for d, s, e in runs if (d, s, e) != (device, start, end) and s < end and start < e]
        assert device not in alongside


def test_least_busy_is_round_robin():
    devices = ["cuda:0", "cuda:1", "cuda:2"]
    assert engines.least_busy(devices, []) == "cuda:0"
    assert engines.least_busy(devices, ["cuda:0"]) == "cuda:1"
    assert engines.least_busy(devices, ["cuda:0", "cuda:1"]) == "cuda:2"
    assert engines.least_busy(devices, ["cuda:0", "cuda:1", "cuda:2", "cuda:1"]) == "cuda:0"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--engine", "ray", "--jobs", "2"], "--jobs is for --engine local"),
        (["--engine", "ray", "--device", "cuda:1"], "--device cuda:1: with --engine ray, Ray assigns"),
        (["--ray-address", "auto"], "--ray-address is for --engine ray"),
        (["--stage-resources", "pretrain=cpus:2"], "--stage-resources is for --engine ray"),
    ],
)
def test_engine_flags_that_do_not_fit_are_one_line(tmp_path, capsys, flags, message):
    assert cli.main(["--out-dir", str(tmp_path / "study"), "--preset", "quick", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()


def test_ray_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "ray" else real_find_spec(name))
    assert cli.main(["--out-dir", str(tmp_path / "study"), "--preset", "quick", "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--engine ray needs Ray: pip install 'charfast[ray]'" in err and len(err.strip().splitlines()) == 1


@dataclass(frozen=True)
class KillConfig:
    out_dir: str
    jobs: int = 2
    device: str = "cpu"


def killed_once_runner(config, stage: Stage) -> str:
    """The first try of the first probe dies as the OOM killer ends a process; the rest work."""
    import os
    import signal
    from pathlib import Path

    marker = Path(config.out_dir) / f"{stage.name}.tried"
    first = not marker.exists()
    marker.write_text("tried")
    if stage.kind == "probe" and stage.key[2] == 0 and first:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return stage.name


def always_killed_runner(config, stage: Stage) -> str:
    import os
    import signal

    if stage.kind == "pretrain" and stage.key[2] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return stage.name


def _two_runs() -> list[Stage]:
    first, second = Stage("pretrain", ("bpe:300", "char", 0)), Stage("pretrain", ("bpe:300", "char", 1))
    probes = [Stage("probe", (*run.key, 20), (run,)) for run in (first, second)]
    return [first, second, *probes, Stage("splits", ("bpe:300",), (first,))]


def test_a_killed_worker_loses_only_a_try_the_stages_run_again_in_a_new_pool(tmp_path, capsys):
    stages = _two_runs()
    outcome = engines.run_local(KillConfig(str(tmp_path)), stages, killed_once_runner)
    assert not outcome.failed and not outcome.skipped
    assert outcome.paths == {stage: stage.name for stage in stages}  # every stage finished, the killed one too
    out = capsys.readouterr().out
    assert "the worker running stage probe(bpe:300, char, 0, 20) died" in out and "it runs again" in out


def test_a_stage_that_always_kills_its_worker_fails_alone(tmp_path, capsys):
    stages = _two_runs()
    outcome = engines.run_local(KillConfig(str(tmp_path)), stages, always_killed_runner)
    assert list(outcome.failed) == [stages[0]] and "died each of the 2 times it ran alone" in outcome.failed[stages[0]]
    assert set(outcome.skipped) == {stages[2], stages[4]}  # what waits for it
    assert outcome.paths == {stages[1]: stages[1].name, stages[3]: stages[3].name}
