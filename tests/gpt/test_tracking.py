"""--log tensorboard / wandb: the trackers show metrics.jsonl's numbers, each step once
(also across a kill -9 and a resume), a sample at each eval and the run's settings; W&B
keeps its run id through a resume; only rank 0 logs; a missing extra is one line."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tiny_runs import read_metrics, tiny_flags, torchrun_two_ranks, write_tiny_corpus
from wandb_records import wandb_history, wandb_records

from charfast.gpt import train
from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.tracking import METRIC_TAGS

pytest.importorskip("tensorboard")


def read_tensorboard(folder):
    """(scalars {tag: [(step, value)]}, texts {tag: [(step, text)]}) as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    texts = {
        tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }
    return scalars, texts


def assert_equals_metrics(scalars: dict, records: list[dict]) -> None:
    """Every number of every record, once per step, at float32 (what an event holds)."""
    for key, tag in METRIC_TAGS.items():
        expected = [(r["step"], np.float32(r[key])) for r in records if key in r]
        assert [(step, np.float32(value)) for step, value in scalars.get(tag, [])] == expected, tag


def test_tensorboard_shows_the_metrics_a_sample_per_eval_and_the_settings(tiny_corpus, tiny_cache, tmp_path):
    logged, plain = tmp_path / "logged", tmp_path / "plain"
    settings = dict(dropout=0.1, max_steps=6, eval_interval=2, sample_tokens=8)
    assert train.main([*tiny_flags(tiny_corpus, logged, tiny_cache, **settings), "--log", "tensorboard"]) == 0
    records = read_metrics(logged)
    scalars, texts = read_tensorboard(logged / "tb")
    assert_equals_metrics(scalars, records)
    assert {"train/loss", "val/loss", "train/grad_norm", "train/char_grad_share", "perf/ms_per_step"} <= set(scalars)
    assert all(r["grad_norm"] > 0 and 0 < r["char_grad_share"] < 1 for r in records)
    assert [step for step, _ in texts["sample/text_summary"]] == [2, 4, 6]
    assert all(text.strip() for _, text in texts["sample/text_summary"])
    # The settings as hyperparameters (TensorBoard's HParams plugin reads them from the run).
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventAccumulator(str(logged / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["arch"].string_value == "char" and hparams["max_steps"].number_value == 6
    assert hparams["dropout"].number_value == pytest.approx(0.1)
    # Logging (and its samples, drawn from forked generators) changes nothing of the training.
    assert train.main(tiny_flags(tiny_corpus, plain, tiny_cache, **settings)) == 0
    for a, b in zip(records, read_metrics(plain), strict=True):
        assert (a["train_loss"], a["grad_norm"], a.get("val_loss")) == (
            b["train_loss"],
            b["grad_norm"],
            b.get("val_loss"),
        )


def _train_process(flags: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charfast.train", *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _kill_between_checkpoints(process: subprocess.Popen, metrics) -> None:
    """SIGKILL a run with a checkpoint every 40 steps 5 to 30 steps past one (the steps after
    it logged and flushed where a tracker flushes), not at the next."""
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if lines >= 40 and 5 <= lines % 40 <= 30:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read()


@pytest.mark.slow
def test_tensorboard_after_a_kill_9_and_a_resume_shows_each_step_once(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "run"
    # Steps of ~20-40 ms, a checkpoint every 40: the kill lands between two checkpoints, after
    # the run has logged (and flushed) steps that the resume then replays.
    size = dict(n_embd=64, block_size=64, batch_size=8, n_head=4)
    settings = dict(**size, max_steps=200, eval_interval=40, eval_iters=1, dropout=0.1, sample_tokens=4)
    flags = [*tiny_flags(tiny_corpus, out, tiny_cache, **settings), "--log", "tensorboard"]
    _kill_between_checkpoints(_train_process(flags), out / "metrics.jsonl")
    saved = load_checkpoint(out / "ckpt.pt")["step"]
    before, _ = read_tensorboard(out / "tb")
    logged_before = [step for step, _ in before["train/loss"]]
    assert max(logged_before) > saved, (saved, logged_before[-3:])  # steps the resume replays were on disk

    resumed = _train_process([*flags, "--resume"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 201))
    scalars, texts = read_tensorboard(out / "tb")
    assert_equals_metrics(scalars, records)  # each step once: the replayed ones replaced the killed run's
    assert [step for step, _ in texts["sample/text_summary"]] == list(range(40, 201, 40))


def _merged_wandb_history(out) -> list[dict]:
    """The history of the W&B run as `wandb sync` of its offline sessions gives it: each
    session's rows in turn, a step lower than the last one held dropped."""
    rows = []
    for session in sorted((out / "wandb").glob("offline-run-*")):
        for row in wandb_history(next(session.glob("run-*.wandb"))):
            if not rows or row["_step"] > rows[-1]["_step"]:
                rows.append(row)
            elif row["_step"] == rows[-1]["_step"]:
                rows[-1] = {**row, **rows[-1]}
    return rows


def test_wandb_after_a_kill_9_and_a_resume_has_every_step(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    """W&B's writer keeps records in memory (no flush): what the killed run held is lost
    with it, and the resume logs the steps up to its checkpoint again."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-settings"))
    out = tmp_path / "run"
    settings = dict(n_embd=64, block_size=64, batch_size=8, n_head=4, max_steps=120, eval_interval=40, eval_iters=1)
    flags = [*tiny_flags(tiny_corpus, out, tiny_cache, **settings), "--log", "wandb"]
    _kill_between_checkpoints(_train_process(flags), out / "metrics.jsonl")
    saved = load_checkpoint(out / "ckpt.pt")["step"]
    assert saved >= 40
    resumed = _train_process([*flags, "--resume"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    records = read_metrics(out)
    history = _merged_wandb_history(out)
    for key, tag in METRIC_TAGS.items():
        expected = [(r["step"], r[key]) for r in records if key in r]
        logged = [(row["_step"], row[tag]) for row in history if tag in row]
        if tag.startswith("perf/"):  # a step the killed session wrote keeps its own timing
            assert [step for step, _ in logged] == [step for step, _ in expected], tag
        else:  # the numbers training computes: the same in both sessions
            assert logged == expected, tag


def test_wandb_offline_history_and_a_resume_that_keeps_the_run_id(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-settings"))  # no user settings: offline
    out = tmp_path / "run"
    flags = [*tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4, eval_interval=2), "--log", "wandb"]
    flags += ["--wandb-project", "charfast-tests", "--wandb-run-name", "tiny"]
    assert train.main(flags) == 0
    run_id = load_checkpoint(out / "ckpt.pt")["wandb_run_id"]
    assert (
        train.main(
            [
                *flags[: flags.index("--max-steps")],
                *flags[flags.index("--max-steps") + 2 :],
                "--max-steps",
                "6",
                "--resume",
            ]
        )
        == 0
    )
    assert load_checkpoint(out / "ckpt.pt")["wandb_run_id"] == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert [run.name.split("-")[-1] if not run.name.endswith(run_id) else run_id for run in runs] == [run_id] * 2
    files = [next(run.glob(f"run-{run_id}.wandb")) for run in runs]
    history = [row for f in files for row in wandb_history(f)]
    records = read_metrics(out)
    for key, tag in METRIC_TAGS.items():
        assert [(row["_step"], row[tag]) for row in history if tag in row] == [
            (r["step"], r[key]) for r in records if key in r
        ], tag
    samples = [(row["_step"], row["sample/path"]) for row in history if row.get("sample/_type") == "html-file"]
    assert [step for step, _ in samples] == [2, 4, 6]
    pages = [next(out.glob(f"wandb/offline-run-*/files/{path}")).read_text() for _, path in samples]
    assert all(page.split("<pre>")[1].split("</pre>")[0] for page in pages)  # a sample's text in each
    first_run = next(r.run for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "run")
    assert (first_run.project, first_run.display_name) == ("charfast-tests", "tiny")
    config = {item.key: item.value_json for item in first_run.config.update}
    assert '"char"' in config["arch"] and config["max_steps"].endswith("4")


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_under_torchrun_only_rank_0_logs(tmp_path, parallel):
    """Two gloo ranks: one event file, each step once, the eval samples (under FSDP drawn from
    the whole weights the save gathered, so no rank waits), and a clean exit of both."""
    corpus = write_tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "pair"
    settings = dict(max_steps=3, eval_interval=2, sample_tokens=4, batch_size=2, parallel=parallel)
    torchrun_two_ranks([*tiny_flags(corpus, out, tmp_path / "cache", **settings), "--log-to", "tensorboard"])
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    scalars, texts = read_tensorboard(out / "tb")
    assert_equals_metrics(scalars, read_metrics(out))
    assert [step for step, _ in texts["sample/text_summary"]] == [2, 3]
    assert (out / "sample.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--log", "tensorboard"],
            "--log tensorboard needs the 'tensorboard' extra, which is not installed; "
            "pip install 'charfast[tensorboard]'",
        ),
        (
            ["--log", "wandb"],
            "--log wandb needs the 'wandb' extra, which is not installed; pip install 'charfast[wandb]'",
        ),
        (["--log", "mlflow"], "--log 'mlflow': unknown tracker 'mlflow'; expected one of tensorboard, wandb"),
    ],
)
def test_a_missing_extra_or_an_unknown_tracker_is_one_line_and_exit_2(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, flags, message
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "wandb") else find_spec(name, *a)
    )
    assert train.main([*tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"charfast.train: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_log_may_be_repeated_or_comma_separated():
    from charfast.gpt.config import settings_from_flags

    assert settings_from_flags(["--log", "tensorboard", "--log", "wandb"])[0].log == "tensorboard,wandb"
    assert settings_from_flags(["--log", "tensorboard,wandb"])[0].log == "tensorboard,wandb"
    assert settings_from_flags(["--log-to", "wandb"])[0].log == "wandb"  # the spelling torchrun lets through
    assert settings_from_flags([])[0].log == ""


def test_wandb_is_offline_unless_the_users_settings_say_otherwise(tmp_path, monkeypatch):
    from charfast.gpt.tracking import wandb_mode

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "user"))
    assert wandb_mode() == "offline"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "settings").write_text("[default]\nmode = online\n")
    assert wandb_mode() == "online"
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "settings").write_text("[default]\nmode = offline\n")  # the project's first
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")  # the environment over both
    assert wandb_mode() == "online"
