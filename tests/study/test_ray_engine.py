"""The study on Ray: a stage per task, on clusters this test owns (ray.cluster_utils), never
`ray stop` (which would stop every Ray on the machine).

Failures: a killed worker, a removed node and a preempted (SIGTERM) stage are run again
and published once; a raising stage is reported once and skips only what waits for it; a
killed driver leaves nothing written after its death and a rerun reuses what finished.
Science: the quick preset gives the local engine's records; a second run starts no work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402 - after the skip: ray is optional
from tiny_runs import write_tiny_corpus  # noqa: E402

from charfast.atomic import atomic_write  # noqa: E402
from charfast.study import cli, ray_engine  # noqa: E402
from charfast.study.stages import Stage  # noqa: E402

pytestmark = pytest.mark.slow
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module


@dataclass(frozen=True)
class FakeConfig:
    out_dir: str


def _graph() -> list[Stage]:
    first, second = Stage("pretrain", ("bpe:300", "char", 0)), Stage("pretrain", ("bpe:300", "char", 1))
    return [first, second, Stage("probe", (*first.key, 20), (first,)), Stage("probe", (*second.key, 20), (second,))]


def _publish(config, stage: Stage) -> str:
    """What a stage does at its end: its record, atomically, and a line in a log of publications."""
    path = Path(config.out_dir) / f"{stage.name}.json"
    with atomic_write(path) as f:
        f.write(json.dumps({"stage": stage.name, "pid": os.getpid()}).encode())
    with open(Path(config.out_dir) / "published.log", "a") as log:
        log.write(stage.name + "\n")
    return str(path)


def _first_attempt(config, stage: Stage) -> bool:
    marker = Path(config.out_dir) / f"{stage.name}.attempted"
    first = not marker.exists()
    marker.write_text("tried")
    return first


def _killed_once(config, stage, *done):
    if _first_attempt(config, stage):
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-stage
    return _publish(config, stage)


def _preempted_once(config, stage, *done):
    with ray_engine.retried_when_preempted():
        if _first_attempt(config, stage):
            os.kill(os.getpid(), signal.SIGTERM)  # the node is being preempted
            time.sleep(60)
        return _publish(config, stage)


def _one_raises(config, stage, *done):
    if stage.key[2] == 0 and stage.kind == "pretrain":
        raise RuntimeError("the tokenizer file is corrupt")
    return _publish(config, stage)


def _holds_a_gpu(config, stage, *done):
    start = time.time()
    time.sleep(3)
    return json.dumps({"start": start, "end": time.time(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")})


def _waits_on_its_first_node(config, stage, *done):
    started = Path(config.out_dir) / "started"
    started.mkdir(exist_ok=True)
    (started / f"{time.time()}").write_text(ray.get_runtime_context().get_node_id())
    if len(list(started.iterdir())) == 1:
        time.sleep(120)  # until the test removes this node
    return _publish(config, stage)


@pytest.fixture
def cluster(monkeypatch):
    """A test-owned cluster: a head with 2 CPUs and 2 declared GPUs (no real ones needed)."""
    # CI hides the GPUs with CUDA_VISIBLE_DEVICES="", which Ray reads as "declare none".
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    owned = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    ray.init(address=owned.address, include_dashboard=False, configure_logging=False)
    yield owned
    ray.shutdown()
    owned.shutdown()


def _published(tmp_path) -> list[str]:
    return sorted((tmp_path / "published.log").read_text().split("\n")[:-1])


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


CPU_ONLY = {kind: {"cpus": 0.5} for kind in ("pretrain", "splits", "probe", "finetune")}


@pytest.mark.parametrize("task", [_killed_once, _preempted_once], ids=["killed worker", "SIGTERM"])
def test_a_stage_whose_worker_dies_is_run_again_and_published_once(cluster, tmp_path, task):
    outcome = ray_engine.run_graph(ray, FakeConfig(str(tmp_path)), _graph(), CPU_ONLY, task)
    assert not outcome.failed and not outcome.skipped and len(outcome.paths) == 4
    assert _published(tmp_path) == sorted(s.name for s in _graph())  # each once
    assert not _temp_files(tmp_path)


def test_a_raising_stage_is_one_line_and_skips_only_what_waits_for_it(cluster, tmp_path, capsys):
    stages = _graph()
    outcome = ray_engine.run_graph(ray, FakeConfig(str(tmp_path)), stages, CPU_ONLY, _one_raises)
    assert list(outcome.failed) == [stages[0]] and outcome.skipped == [stages[2]]
    assert set(outcome.paths) == {stages[1], stages[3]}  # the independent stages finished
    assert "RuntimeError: the tokenizer file is corrupt" in outcome.failed[stages[0]]
    assert not (tmp_path / f"{stages[0].name}.attempted").exists()  # never retried
    out = capsys.readouterr().out
    assert out.count("failed:") == 1 and "stage pretrain(bpe:300, char, 0) failed: RuntimeError" in out


def test_stages_asking_for_a_gpu_each_share_two_gpus_two_at_a_time(cluster, tmp_path):
    stages = [Stage("pretrain", ("bpe:300", "char", seed)) for seed in range(4)]
    one_gpu = {"pretrain": {"cpus": 0.25, "gpus": 1}}
    outcome = ray_engine.run_graph(ray, FakeConfig(str(tmp_path)), stages, one_gpu, _holds_a_gpu)
    runs = [json.loads(p) for p in outcome.paths.values()]
    assert len(runs) == 4 and {r["gpus"] for r in runs} <= {"0", "1"}  # one GPU each, of the two
    for run in runs:
        alongside = [r for r in runs if r is not run and r["start"] < run["end"] and run["start"] < r["end"]]
        assert all(r["gpus"] != run["gpus"] for r in alongside)  # never two stages on one GPU at once
        at_its_start = [r for r in runs if r["start"] <= run["start"] < r["end"]]
        assert len(at_its_start) <= 2  # at most two at any moment


def test_a_removed_node_is_replaced_by_another(tmp_path):
    owned = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [owned.add_node(num_cpus=1) for _ in range(2)]
    owned.wait_for_nodes()
    ray.init(address=owned.address, include_dashboard=False, configure_logging=False)
    try:
        stage = Stage("pretrain", ("bpe:300", "char", 0))
        result = {}

        def run():
            config = FakeConfig(str(tmp_path))
            result["outcome"] = ray_engine.run_graph(ray, config, [stage], CPU_ONLY, _waits_on_its_first_node)

        thread = threading.Thread(target=run)
        thread.start()
        started = tmp_path / "started"
        deadline = time.time() + 60
        while not (started.exists() and list(started.iterdir())) and time.time() < deadline:
            time.sleep(0.2)
        (first,) = [p.read_text() for p in started.iterdir()]
        owned.remove_node(next(node for node in workers if node.node_id == first))
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert list(result["outcome"].paths) == [stage] and _published(tmp_path) == [stage.name]
        nodes = [p.read_text() for p in sorted(started.iterdir())]
        assert len(nodes) == 2 and nodes[0] != nodes[1]  # the second try ran on the other node
    finally:
        ray.shutdown()
        owned.shutdown()


# ------------------------------------------------------------------ the real study on Ray
NARROW = ["--preset", "quick", "--tokenizers", "bpe:300", "--seeds", "0", "--archs", "char", "baseline-matched"]


@pytest.fixture
def study_flags(tmp_path, monkeypatch):
    corpus = write_tiny_corpus(tmp_path / "corpus", chars_per_doc=30_000)
    monkeypatch.setenv("CHARFAST_CACHE", str(tmp_path / "cache"))
    return ["--out-dir", str(tmp_path / "study"), "--data", str(corpus), "--device", "cpu", *NARROW]


def _records(root: Path) -> dict[str, object]:
    """Every stage record of a study folder, by path inside it, but for the digests of the
    files' bytes ("files", and so the record's own "sha256"): torch.save writes a fresh
    serialization id into every file, so the same weights written twice are two files
    (their weights' digests are compared)."""
    names = ("results.json", "probe.json", "test_set.json", "manifest.json")
    byte_digests = ("files", "sha256")
    return {
        str(p.relative_to(root)): {
            k: v for k, v in json.loads(p.read_text(encoding="utf-8")).items() if k not in byte_digests
        }
        for p in sorted(root.rglob("*.json"))
        if p.name in names or p.parent.name == "kept"
    }


def _stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_the_quick_preset_on_ray_gives_the_local_engines_records(study_flags, tmp_path):
    root = tmp_path / "study"
    assert cli.main([*study_flags, "--jobs", "2"]) == 0  # one torch thread per stage, as each Ray task gets
    local = _records(root)
    root.rename(tmp_path / "local")
    assert cli.main([*study_flags, "--engine", "ray"]) == 0  # a private cluster, in this process
    assert not ray.is_initialized()  # and shut down
    assert _records(root) == local and len(local) > 10
    before = _stamps(root)
    started = time.perf_counter()
    assert cli.main([*study_flags, "--engine", "ray"]) == 0
    rerun = time.perf_counter() - started
    after = _stamps(root)
    changed = sorted(name for name in after if after[name] != before.get(name))
    assert all(name.startswith("report") or name.endswith(".png") for name in changed), changed  # no stage's work
    print(f"rerun with every stage reused: {rerun:.1f} s")


def test_a_killed_driver_writes_nothing_more_and_a_rerun_reuses_what_finished(study_flags, tmp_path):
    owned = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        flags = [*study_flags, "--engine", "ray", "--ray-address", owned.address]
        driver = subprocess.Popen([sys.executable, "-m", "charfast.study", *flags], env=dict(os.environ))
        root = tmp_path / "study"
        deadline = time.time() + 240
        while not list(root.rglob("probe.json")) and time.time() < deadline:
            time.sleep(0.5)
        assert list(root.rglob("probe.json")), "no stage finished in time"
        driver.kill()
        driver.wait()
        time.sleep(3)  # Ray ends the dead driver's tasks
        at_death = _stamps(root)
        time.sleep(5)
        assert _stamps(root) == at_death  # nothing written after the driver's death
        finished = {name: stamp for name, stamp in at_death.items() if name.endswith("probe.json")}
        assert subprocess.run([sys.executable, "-m", "charfast.study", *flags], timeout=600).returncode == 0
        after = _stamps(root)
        assert {name: after[name] for name in finished} == finished  # reused, not published again
        assert (root / "report.md").exists() and not _temp_files(root)
    finally:
        owned.shutdown()


def test_cuda_on_a_cluster_without_gpus_is_one_line(study_flags, tmp_path, capsys):
    owned = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        flags = [*study_flags, "--engine", "ray", "--ray-address", owned.address, "--device", "cuda"]
        assert cli.main(flags) == 2
        err = capsys.readouterr().err
        assert "--device cuda: stages ask for 1 GPU(s) but the Ray cluster has 0" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        owned.shutdown()


def test_a_cluster_that_refuses_the_driver_is_one_line_with_the_likely_cause(study_flags, monkeypatch, capsys):
    """Ray reports a refused token (a `ray start` cluster of Ray >= 2.59) as a failed connection."""

    def refused(**settings):
        raise ConnectionError(f"Failed to connect to Ray cluster at {settings['address']}")

    monkeypatch.setattr(ray, "init", refused)
    with socket.create_server(("127.0.0.1", 0)) as listening:  # something answers there: Ray's turn to refuse
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert cli.main([*study_flags, "--engine", "ray", "--ray-address", address]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"charfast.study: error: --ray-address {address}: Failed to connect to Ray cluster at {address}; "
        "is the cluster up at that address? A cluster started with `ray start` may ask for Ray's token: "
        "set RAY_AUTH_MODE=token"
    )
    assert len(err.strip().splitlines()) == 1


def test_an_address_where_nothing_listens_is_one_line_in_bounded_time(study_flags, capsys):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # free once closed: nothing listens there
    started = time.monotonic()
    assert cli.main([*study_flags, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 1
    assert time.monotonic() - started < ray_engine.CONNECT_TIMEOUT_S + 10
    err = capsys.readouterr().err
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in err and len(err.strip().splitlines()) == 1


def test_a_request_no_node_can_hold_is_refused_before_any_stage(study_flags, tmp_path, capsys):
    owned = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        for request, most in (("pretrain=cpus:8", "cpus:2"), ("probe=cpus:1,memory:100000", "memory:")):
            flags = [*study_flags, "--engine", "ray", "--ray-address", owned.address, "--stage-resources", request]
            assert cli.main(flags) == 2
            err = capsys.readouterr().err
            assert f"--stage-resources {request}: no node of the Ray cluster has that much" in err, err
            assert most in err and len(err.strip().splitlines()) == 1
        assert not list((tmp_path / "study").rglob("ckpt.pt"))
    finally:
        owned.shutdown()


@pytest.mark.parametrize("part", ["cpus:inf", "cpus:nan", "cpus:1e-9", "cpus:-1", "gpus:1.5", "disks:1", "cpus:x"])
def test_a_request_ray_cannot_take_names_the_flag(part):
    with pytest.raises(ValueError, match=f"--stage-resources pretrain={part}: expected cpus:N, gpus:N or memory"):
        ray_engine.parse_stage_resources([f"pretrain={part}"], "cuda")


def test_a_request_fits_when_one_node_has_all_of_it():
    nodes = [{"CPU": 8.0, "memory": 4 * 2**30}, {"CPU": 2.0, "GPU": 1.0, "memory": 64 * 2**30}]
    ray_engine._check_request_fits("pretrain", {"cpus": 2, "gpus": 1, "memory": 32}, nodes)
    with pytest.raises(ValueError, match=r"pretrain=cpus:8,gpus:1: .*cpus:8, gpus:1\)"):
        ray_engine._check_request_fits("pretrain", {"cpus": 8, "gpus": 1}, nodes)  # no node has both


def _ray_processes() -> set[int]:
    import psutil

    names = ("raylet", "gcs_server")
    return {p.pid for p in psutil.process_iter(["name"]) if any(n in (p.info["name"] or "") for n in names)}


def test_sigterm_to_a_private_cluster_study_leaves_nothing_running(study_flags, tmp_path):
    before = _ray_processes()
    driver = subprocess.Popen([sys.executable, "-m", "charfast.study", *study_flags, "--engine", "ray"])
    root = tmp_path / "study"
    deadline = time.time() + 240
    while not list(root.rglob("ckpt.pt")) and time.time() < deadline:
        time.sleep(0.5)
    assert _ray_processes() - before, "the private cluster did not start"
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) == 128 + signal.SIGTERM
    deadline = time.time() + 30
    while _ray_processes() - before and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_processes() - before  # the private cluster ended with the study
