"""Faults: kill -9 at random moments of training (a checkpoint every step), a loss that turns
NaN, a full disk; nothing finished is lost and a resumed run is bit for bit the same."""

import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from tiny_runs import read_metrics, tiny_flags

from charfast.gpt import checkpoint, train
from charfast.gpt.checkpoint import load_checkpoint
from charfast.gpt.late_reads import LateRead
from charfast.gpt.trainer import Trainer

KILLS = 10


def _temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def _start(flags: list[str]) -> tuple[subprocess.Popen, threading.Event]:
    """A training process, and an event set once it prints its first line (training begins)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "charfast.train", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    started = threading.Event()

    def read():
        for line in process.stdout:
            if line.startswith("charfast.train: arch="):
                started.set()

    threading.Thread(target=read, daemon=True).start()
    return process, started


@pytest.mark.slow
def test_kill_9_during_training_then_resume_equals_an_uninterrupted_run(tiny_corpus, tiny_cache, tmp_path):
    # Dropout on, a checkpoint every step: a resumed run must restore model, optimizer, data
    # position and every RNG exactly.
    steps = 300  # ~12 ms each with its checkpoint; a kill lands 0-0.3 s into the steps
    settings = dict(max_steps=steps, eval_interval=1, eval_iters=1, dropout=0.1, sample_tokens=0)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    process, _ = _start(tiny_flags(tiny_corpus, whole, tiny_cache, **settings))
    assert process.wait(timeout=600) == 0

    rng = random.Random(20261125)
    kills, temp_files_seen, log = 0, 0, []
    while True:
        resume = (killed / "ckpt.pt").exists()
        process, started = _start(tiny_flags(tiny_corpus, killed, tiny_cache, **settings, resume=resume))
        if kills < KILLS and started.wait(timeout=300):
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the steps and their checkpoint writes
        if kills < KILLS and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            temp_files_seen += len(_temp_files(killed))
            state = load_checkpoint(killed / "ckpt.pt") if (killed / "ckpt.pt").exists() else None  # weights_only
            log.append(None if state is None else state["step"])
            continue
        assert process.wait(timeout=600) == 0
        break
    assert kills == KILLS, log
    assert _temp_files(killed) == []  # what the kills left was removed by the next start
    a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (whole, killed))
    assert a["step"] == b["step"] == steps
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "weights differ after the kills"
    assert [r["step"] for r in read_metrics(killed)] == list(range(1, steps + 1))  # each step once
    assert [r["train_loss"] for r in read_metrics(killed)] == [r["train_loss"] for r in read_metrics(whole)]
    print(f"{kills} kills at checkpoint steps {log}; {temp_files_seen} temp file(s) found right after them")


@pytest.mark.parametrize("eval_interval, kept", [(1, 2), (4, None)], ids=["read-at-once", "read-one-step-late"])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, eval_interval, kept
):
    """Evaluated every step, step 3's loss is read at once; otherwise one step late, after
    step 4 ran: either way nothing after the last good checkpoint is saved."""
    out = tmp_path / "run"
    original = Trainer.train_step

    def turns_nan_at_step_3(self, stop=None):
        numbers = original(self, stop)
        return LateRead(torch.tensor([0.0, float("nan"), 1.0, 0.0])) if self.step == 3 else numbers  # loss nan

    monkeypatch.setattr(Trainer, "train_step", turns_nan_at_step_3)
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=6, eval_interval=eval_interval)) == 1
    err = capsys.readouterr().err.strip()
    holds = f"{out / 'ckpt.pt'} still holds step {kept}" if kept else "no checkpoint was written"
    assert err == (
        f"charfast.train: error: the train loss is nan at step 3: training stopped without saving it; "
        f"{holds} (try a lower --lr or a smaller --grad-clip)"
    )
    if kept:
        state = torch.load(out / "ckpt.pt", weights_only=True)
        assert state["step"] == kept and all(torch.isfinite(v).all() for v in state["model"].values())
    else:
        assert not (out / "ckpt.pt").exists()
    assert [r["step"] for r in read_metrics(out)] == [1, 2] and not (out / "sample.txt").exists()


def test_a_full_disk_is_one_line_naming_the_checkpoint(tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys):
    class FullDisk:
        def __init__(self, file):
            self.file = file

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    monkeypatch.setattr(
        checkpoint, "_WriteErrorRecorder", lambda f, _real=checkpoint._WriteErrorRecorder: _real(FullDisk(f))
    )
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, eval_interval=1)) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"charfast.train: error: {out / 'ckpt.pt'}: No space left on device"
    assert _temp_files(out) == [] and not (out / "ckpt.pt").exists()


def test_resume_may_extend_max_steps_and_the_schedule_follows_it(tiny_corpus, tiny_cache, tmp_path):
    settings = dict(max_steps=8, warmup_steps=1, eval_interval=4, sample_tokens=0)
    fresh, extended = tmp_path / "fresh", tmp_path / "extended"
    assert train.main(tiny_flags(tiny_corpus, fresh, tiny_cache, **settings)) == 0
    assert train.main(tiny_flags(tiny_corpus, extended, tiny_cache, **{**settings, "max_steps": 4})) == 0
    assert train.main(tiny_flags(tiny_corpus, extended, tiny_cache, **settings, resume=True)) == 0
    lr_fresh = {r["step"]: r["lr"] for r in read_metrics(fresh)}
    lr_extended = {r["step"]: r["lr"] for r in read_metrics(extended)}
    assert lr_extended[4] < lr_fresh[4]  # until then it followed the shorter, 4-step schedule
    for step in range(5, 9):  # from the resume on: the 8-step schedule, as if it had been planned
        assert lr_extended[step] == lr_fresh[step], step
    # --lr-decay-steps may change on resume too, like --max-steps.
    assert (
        train.main(
            tiny_flags(
                tiny_corpus, extended, tiny_cache, **{**settings, "max_steps": 9}, lr_decay_steps=20, resume=True
            )
        )
        == 0
    )
