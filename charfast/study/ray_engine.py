"""The ray engine: the study's stage graph on a Ray cluster (pip install 'charfast[ray]').

Every stage is a Ray task asking for its kind's resources (--stage-resources); the stages
it waits for are passed as top-level ObjectRef arguments, so Ray starts it once they are
done, wherever resources are free. A task returns only its record's path: weights and
records go through the shared --out-dir, never through Ray's object store.

    no --ray-address   a private cluster inside this process (every core and GPU of the
                       machine, no dashboard), shut down however the study ends
    --ray-address A    an existing cluster: 'auto', or the head's host:port

Failures: a worker or node that dies mid-stage is a system failure, and Ray runs the
stage again elsewhere (its record is published once, atomically). A stage stopped by
SIGTERM (a preempted node) exits its worker the same way, so it is retried, not failed.
A stage that raises is not retried: one line names it and the cause, the stages that wait
for it are skipped, the others finish (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import socket

from charfast.entry_point import STOP_SIGNALS, Stopped, raise_stopped
from charfast.gpt.failures import Interrupted, RunFailed
from charfast.study.engines import Outcome, is_fatal
from charfast.study.stages import KINDS, Stage

RESOURCE_NAMES = {"cpus": "num_cpus", "gpus": "num_gpus", "memory": "memory"}  # memory in GiB
NODE_RESOURCES = {"cpus": "CPU", "gpus": "GPU", "memory": "memory"}  # as ray.nodes() names them
SMALLEST = 1e-4  # Ray counts resources in units of 1/10,000
CONNECT_TIMEOUT_S = 15  # for --ray-address host:port to answer at all
# What a stage of each kind asks for unless --stage-resources says otherwise.
DEFAULT_RESOURCES = {
    "cpu": {kind: {"cpus": 1.0} for kind in KINDS},
    "cuda": {
        "pretrain": {"cpus": 2.0, "gpus": 1.0},
        "splits": {"cpus": 1.0},
        "probe": {"cpus": 1.0, "gpus": 0.5},
        "finetune": {"cpus": 2.0, "gpus": 1.0},
    },
}
SYSTEM_RETRIES = 3  # runs of a stage whose worker or node died, before it counts as failed
RAY_MISSING = "--engine ray needs Ray: pip install 'charfast[ray]'"
# Ray (2.59 on) starts a `ray start --head` cluster with token authentication: a driver or
# node without the token is refused, which Ray reports as a failure to connect.
NOT_CONNECTED = (
    "is the cluster up at that address? A cluster started with `ray start` may ask for Ray's token: "
    "set RAY_AUTH_MODE=token here and on every node, with the head's token (`ray get-auth-token`) in "
    "~/.ray/auth_token or RAY_AUTH_TOKEN"
)
STUDY_CWD = "CHARFAST_STUDY_CWD"  # the driver's working directory, which the stages take as theirs


def parse_stage_resources(items, device_type: str) -> dict[str, dict[str, float]]:
    """kind -> {"cpus": n, "gpus": n} from the defaults for `device_type` ("cpu" or "cuda")
    and --stage-resources items "KIND=RES:N,RES:N"; a ValueError naming the flag."""
    resources = {kind: dict(values) for kind, values in DEFAULT_RESOURCES[device_type].items()}
    for item in items:
        kind, _, spec = item.partition("=")
        if kind not in KINDS or not spec:
            raise ValueError(
                f"--stage-resources: expected KIND=RES:N,... with KIND one of {', '.join(KINDS)}, got {item!r}"
            )
        given = {}
        for part in spec.split(","):
            name, _, number = part.partition(":")
            try:
                value = float(number)
            except ValueError:
                value = math.nan
            fits = name in RESOURCE_NAMES and math.isfinite(value) and (value == 0 or value >= SMALLEST)
            if not fits or (name == "gpus" and value > 1 and not value.is_integer()):
                raise ValueError(
                    f"--stage-resources {item}: expected cpus:N, gpus:N or memory:GiB with N 0 or a finite number "
                    f">= {SMALLEST:g} (more than one GPU: a whole number), got {part!r}"
                )
            given[name] = value
        resources[kind] = given
    if device_type == "cpu" and any(r.get("gpus", 0) for r in resources.values()):
        raise ValueError("--stage-resources asks for GPUs but --device is cpu")
    return resources


def run_ray(config, stages: list[Stage], address: str | None, stage_items) -> Outcome:
    """Run `stages` as Ray tasks on the cluster at `address` (None: a private one)."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    # The stages run where the driver runs: relative --out-dir and --data mean the same on every node.
    runtime_env = {"env_vars": {STUDY_CWD: os.getcwd()}}
    if address is not None:
        _check_answers(address)
    try:
        ray.init(
            address="local" if address is None else address,
            include_dashboard=False,
            configure_logging=False,
            runtime_env=runtime_env,
        )
    except ConnectionError as err:
        raise RunFailed(f"--ray-address {address}: {err}; {NOT_CONNECTED}") from None
    # ray.init puts its own SIGTERM handler (exit 1) in place of the command's, and an
    # exception raised by a handler inside ray.wait comes out as a SystemError: a stop signal
    # is noted here and raised by run_graph between waits, so the study still ends with
    # 128 + N after the cluster is shut down below.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note_stop)
    try:
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        # "auto" is the cluster's GPUs, not the driver's: the driver may have none.
        device_type = "cuda" if config.device == "cuda" or (config.device == "auto" and cluster_gpus) else "cpu"
        resources = parse_stage_resources(stage_items, device_type)
        _check_cluster(ray, config, resources)
        return run_graph(ray, config, stages, resources)
    finally:
        ray.shutdown()  # a private cluster ends with it, whatever ended the study


_stop_signal: list[int] = []  # the stop signal the driver received, if any


def _note_stop(signum, frame) -> None:
    _stop_signal.append(signum)


def _check_answers(address: str) -> None:
    """A RunFailed within CONNECT_TIMEOUT_S when nothing listens at a host:port address
    (Ray itself would wait for it forever); 'auto' and ray:// addresses are Ray's to check."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise RunFailed(
            f"--ray-address {address}: nothing answers there ({reason} within {CONNECT_TIMEOUT_S} s); {NOT_CONNECTED}"
        ) from None


def _check_cluster(ray, config, resources) -> None:
    """Every kind's request fits some node (a stage runs on one); GPUs where stages ask for
    them; --out-dir and --data at the same path on every node."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    wanted = max(r.get("gpus", 0) for r in resources.values())
    if wanted and ray.cluster_resources().get("GPU", 0) < wanted:
        raise ValueError(
            f"--device {config.device}: stages ask for {wanted:g} GPU(s) but the Ray cluster has "
            f"{ray.cluster_resources().get('GPU', 0):g}; use --device cpu, or a cluster with GPUs"
        )
    for kind, asked in resources.items():
        _check_request_fits(kind, asked, [node["Resources"] for node in nodes])
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    out_dir = os.path.abspath(config.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    data = None if config.data is None else os.path.abspath(config.data)
    check = ray.remote(_paths_seen)
    seen = ray.get(
        [
            check.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(out_dir, data)
            for node in nodes
        ]
    )
    for node, (host, missing) in zip(nodes, seen):
        if missing:
            flag, path = missing
            raise ValueError(
                f"{flag} {path} is not visible from node {node['NodeManagerAddress']} ({host}): every node must "
                "see the study's folder and its data at the same path (a shared filesystem)"
            )


def _check_request_fits(kind: str, asked: dict[str, float], nodes: list[dict]) -> None:
    """A ValueError naming --stage-resources when no node has what a stage of `kind` asks
    for (Ray would keep it waiting forever). Node resources as ray.nodes() gives them."""
    unit = {name: 2**30 if name == "memory" else 1 for name in asked}  # memory: GiB here, bytes in Ray
    if any(all(node.get(NODE_RESOURCES[n], 0) >= v * unit[n] for n, v in asked.items()) for node in nodes):
        return
    request = ",".join(f"{name}:{value:g}" for name, value in asked.items())
    most = {name: max((node.get(NODE_RESOURCES[name], 0) for node in nodes), default=0) / unit[name] for name in asked}
    raise ValueError(
        f"--stage-resources {kind}={request}: no node of the Ray cluster has that much (the most any node has: "
        + ", ".join(f"{name}:{value:g}" for name, value in most.items())
        + "); ask for less, or add a larger node"
    )


def _paths_seen(out_dir: str, data: str | None) -> tuple[str, tuple[str, str] | None]:
    """On one node: (its host name, the first of --out-dir and --data it cannot see, or None)."""
    if not os.path.isdir(out_dir):
        return socket.gethostname(), ("--out-dir", out_dir)
    if data is not None and not os.path.exists(data):
        return socket.gethostname(), ("--data", data)
    return socket.gethostname(), None


@contextlib.contextmanager
def retried_when_preempted():
    """Inside a Ray task: SIGTERM (a node being preempted or drained) stops the stage, which
    saves what it can (a pretraining its checkpoint), and the worker then exits as a dying
    node would end it, so Ray runs the stage again (resuming) instead of failing it."""
    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    except (Stopped, Interrupted):
        os._exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def stage_task(config, stage: Stage, *done_dependencies: str) -> str:
    """One stage in a Ray worker (its dependencies' record paths arrive as arguments, which
    is what makes Ray wait for them). Torch takes the CPUs Ray gave the task; a stage given
    a GPU runs on it (Ray sets CUDA_VISIBLE_DEVICES)."""
    import ray
    import torch

    from charfast.study.pipeline import run_stage

    if os.environ.get(STUDY_CWD):
        os.chdir(os.environ[STUDY_CWD])
    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    device = "cuda" if assigned.get("GPU", 0) > 0 else "cpu"
    with retried_when_preempted():
        return run_stage(dataclasses.replace(config, device=device, jobs=1, engine="local"), stage)


def run_graph(ray, config, stages: list[Stage], resources, task_function=stage_task) -> Outcome:
    """Submit every stage as a Ray task of `task_function` (config, stage, *dependencies'
    results) -> record path, and collect the outcome as they finish."""
    from ray.exceptions import RayTaskError

    task = ray.remote(task_function)
    refs = {}
    for stage in stages:  # graph order: each stage's dependencies have their refs already
        asked = resources[stage.kind]
        options = {RESOURCE_NAMES[name]: value for name, value in asked.items()}
        if "memory" in options:  # asked in GiB, given to Ray in bytes
            options["memory"] = int(options["memory"] * 2**30)
        options.setdefault("num_gpus", 0)
        refs[stage] = task.options(
            **options, max_retries=SYSTEM_RETRIES, retry_exceptions=False, name=stage.name
        ).remote(config, stage, *(refs[dep] for dep in stage.deps))
    outcome = Outcome()
    pending = {ref: stage for stage, ref in refs.items()}
    waiting_on_failure: list[Stage] = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if _stop_signal:
                raise Stopped(_stop_signal.pop())
            if not done:
                continue
            (ready,) = done
            stage = pending.pop(ready)
            try:
                outcome.paths[stage] = ray.get(ready)
            except RayTaskError as error:
                cause = error.cause if error.cause is not None else error
                if not all(dep in outcome.paths for dep in stage.deps):
                    waiting_on_failure.append(stage)  # a dependency's failure, passed on
                elif is_fatal(cause):
                    raise cause from None
                else:
                    outcome.fail(stages, stage, cause)
            except ray.exceptions.RayError as error:  # its worker or node died SYSTEM_RETRIES + 1 times
                outcome.fail(stages, stage, f"{type(error).__name__}: its worker died on every try")
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    outcome.skipped += [s for s in waiting_on_failure if s not in outcome.skipped and s not in outcome.failed]
    return outcome
