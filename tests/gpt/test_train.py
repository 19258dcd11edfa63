"""The training CLI end to end: a run's files, gradient accumulation, exact resume after
Ctrl-C, refused resumes and clear errors for bad settings.

Every run here is a tiny model on a tiny slice of the default corpus, on CPU.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from tiny_runs import read_metrics, tiny_flags, write_tiny_corpus

from charfast.gpt import train
from charfast.gpt.checkpoint import load_checkpoint, save_checkpoint


def test_cli_smoke_run(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache)) == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train_loss"]) and r["tokens_per_s"] > 0 for r in records)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 6]
    for name in ("ckpt.pt", "loss.png", "sample.txt"):
        assert (out / name).stat().st_size > 0, name
    state = torch.load(out / "ckpt.pt", weights_only=True)  # plain tensors and values only
    assert state["step"] == 6 and state["config"]["arch"] == "char" and state["tokenizer"]["n_vocab"] == 301
    printed = capsys.readouterr().out
    assert "---- sample ----" in printed
    assert printed.strip().splitlines()[-1].startswith("wrote ") and str(out / "metrics.jsonl") in printed
    # The same command again must not overwrite the finished checkpoint.
    before = (out / "ckpt.pt").read_bytes()
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache)) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert (out / "ckpt.pt").read_bytes() == before


@pytest.mark.gpu
def test_cli_run_and_resume_on_cuda(tiny_corpus, tiny_cache, tmp_path):
    """On CUDA the default is torch.compile, bf16 autocast and the Triton backend."""
    out = tmp_path / "run"
    assert (
        train.main(tiny_flags(tiny_corpus, out, tiny_cache, device="cuda", max_steps=4, n_embd=32, char_hidden=32)) == 0
    )
    assert (
        train.main(
            tiny_flags(tiny_corpus, out, tiny_cache, device="cuda", max_steps=6, n_embd=32, char_hidden=32, resume=True)
        )
        == 0
    )
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["train_loss"]) for r in records)
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 6


def test_grad_accumulation_draws_one_micro_batch_each(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, grad_accum=3, max_steps=2, sample_tokens=0)) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2]
    assert torch.load(out / "ckpt.pt", weights_only=True)["data"]["position"] == 6


def _interrupt_at(step: int):
    """A train_step that sends this process SIGINT (Ctrl-C) during step `step`."""
    original = train.Trainer.train_step

    def train_step(self):
        if self.step + 1 == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    return train_step


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tiny_corpus, tiny_cache, tmp_path, monkeypatch, capsys):
    # Dropout on: the resumed run must also restore the RNG to match.
    flags = dict(dropout=0.1, max_steps=6, eval_interval=2)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train.main(tiny_flags(tiny_corpus, whole, tiny_cache, **flags)) == 0

    with monkeypatch.context() as patch:
        patch.setattr(train.Trainer, "train_step", _interrupt_at(3))
        assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags)) == 0
    assert "interrupted: saved step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3]
    assert not (split / "sample.txt").exists()
    assert train.main(tiny_flags(tiny_corpus, split, tiny_cache, **flags, resume=True)) == 0

    expected, got = read_metrics(whole), read_metrics(split)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert [r["train_loss"] for r in got] == [r["train_loss"] for r in expected]  # exact equality
    assert [r.get("val_loss") for r in got] == [r.get("val_loss") for r in expected]
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_conflicting_or_broken_checkpoints(tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, n_embd=32, resume=True)) == 2
    assert "--n-embd 32 (checkpoint: 16)" in capsys.readouterr().err
    # The checkpoint remembers the tokenizer: a different corpus means a different BPE.
    other = write_tiny_corpus(tmp_path / "other", n_docs=3)
    state = load_checkpoint(out / "ckpt.pt")
    state["config"]["data"] = str(other)  # as if the checkpoint's data path now held other text
    save_checkpoint(out / "ckpt.pt", {k: v for k, v in state.items() if k != "format"})
    assert train.main(["--out-dir", str(out), "--resume", "--max-steps", "3", "--no-progress"]) == 2
    assert "was trained with tokenizer" in capsys.readouterr().err
    (out / "ckpt.pt").write_bytes(b"not a checkpoint")
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=3, resume=True)) == 2
    assert "is corrupt or not a charfast checkpoint" in capsys.readouterr().err


def test_restore_run_gives_the_trained_model(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=2, sample_tokens=0)) == 0
    restored = train.restore_run(out, device="cpu")
    saved = torch.load(out / "ckpt.pt", weights_only=True)
    assert restored.step == 2 and restored.encoding.name == saved["tokenizer"]["name"]
    assert all(torch.equal(restored.model.state_dict()[k], v) for k, v in saved["model"].items())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=18, n_head=4), "n_embd (18) must be divisible by n_head (4)"),
        (dict(tokenizer="nope_base"), "unknown tokenizer 'nope_base'"),
        (dict(arch="bytes"), "arch must be one of"),
        (dict(block_size=100_000), "fewer than block_size + 1 = 100001"),
        (dict(max_steps=0), "--max-steps must be >= 1"),
    ],
)
def test_bad_settings_get_clear_messages(tiny_corpus, tiny_cache, tmp_path, capsys, overrides, message):
    assert train.main(tiny_flags(tiny_corpus, tmp_path / "run", tiny_cache, **overrides)) == 2
    assert message in capsys.readouterr().err
