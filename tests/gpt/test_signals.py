"""Stop signals at every phase of a training run: SIGINT (Ctrl-C), SIGTERM and SIGHUP (a
closed terminal) end it with a saved checkpoint (or the one already saved), one line that
says so and exit code 128 + N; never a traceback, a lost step or a temp file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_runs import read_metrics, tiny_flags

from charfast.gpt import checkpoint, run_outputs, train
from charfast.gpt.trainer import Trainer

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _signal_during(monkeypatch, owner, name: str, signum: int, times: int = 1, when=lambda *args: True):
    """Make owner.name send this process `signum` (`times` times) on its first call where `when` holds."""
    original = getattr(owner, name)
    sent = []

    def wrapped(*args, **kwargs):
        if not sent and when(*args):
            sent.append(signum)
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return sent


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_mid_run_saves_and_resumes_exactly(tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, signum):
    whole, split = tmp_path / "whole", tmp_path / "split"
    flags = dict(dropout=0.1, max_steps=5, eval_interval=2, sample_tokens=0)
    assert train.main(tiny_flags(tiny_corpus, whole, tiny_cache, **flags)) == 0
    with monkeypatch.context() as patch:
        _signal_during(patch, Trainer, "train_step", signum, when=lambda self, *rest: self.step == 2)
        assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags)) == 128 + signum
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: saved step 3" in capsys.readouterr().out
    assert torch.load(split / "ckpt.pt", weights_only=True)["step"] == 3
    assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags, resume=True)) == 0
    assert [r["train_loss"] for r in read_metrics(split)] == [r["train_loss"] for r in read_metrics(whole)]
    assert not list(split.glob(".*.tmp*"))


@pytest.mark.parametrize("phase", ["plot", "sample"])
def test_a_signal_after_the_last_step_keeps_the_final_checkpoint(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys, phase
):
    out = tmp_path / "run"
    if phase == "plot":
        _signal_during(monkeypatch, run_outputs, "plot_loss_curve", signal.SIGTERM)
    else:
        _signal_during(monkeypatch, run_outputs, "stream_sample", signal.SIGTERM)
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4)) == 128 + signal.SIGTERM
    printed = capsys.readouterr().out
    assert "interrupted by SIGTERM: training had finished; saved step 4" in printed
    assert "skipped sample.txt" in printed and not (out / "sample.txt").exists()
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 4
    assert not list(out.glob(".*.tmp*"))


def test_a_signal_during_the_final_save_waits_for_it(tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _signal_during(monkeypatch, Trainer, "save", signal.SIGHUP, when=lambda self: self.step == 4)
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=4)) == 128 + signal.SIGHUP
    assert "training had finished; saved step 4" in capsys.readouterr().out
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 4


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(
    tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    flags = dict(max_steps=6, eval_interval=2)
    # Two signals as the first checkpoint (step 2's) is about to be written: it is abandoned.
    _signal_during(monkeypatch, checkpoint, "save_checkpoint", signal.SIGTERM, times=2)
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, **flags)) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped at once by a second SIGTERM; no checkpoint was written" in err
    assert not (out / "ckpt.pt").exists() and not list(out.glob(".*.tmp*"))


def _run_module(module: str, args: list[str], signum: int, after: float) -> subprocess.CompletedProcess:
    """`python -m module args`, sent `signum` `after` seconds after its start."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(after)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("module", ["charfast.train", "charfast.sample", "charfast.study"])
def test_a_signal_during_start_up_is_one_line(tmp_path, module, signum):
    """While the command still imports torch (the first second), no handler of the command's
    own exists yet: the entry point's ends it with one line and 128 + N."""
    args = {"charfast.train": ["--out-dir", str(tmp_path / "run")], "charfast.study": ["--out-dir", str(tmp_path)]}
    done = _run_module(module, args.get(module, ["--ckpt", str(tmp_path / "none.pt")]), signum, after=0.3)
    assert done.returncode == 128 + signum, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"stopped by {signal.Signals(signum).name}" in lines[0], done.stderr
