"""The host runs ahead of the device: a training step reads nothing back (the triton path,
no id checks on our own tokens), and the loop reads each step's loss one step late, after
the next step is queued, except at evaluation steps. On CUDA, sync debug mode proves it."""

from __future__ import annotations

import pytest
import torch
from backend_cases import needs_interpreter
from host_reads import HostReads
from tiny_runs import read_metrics, tiny_flags

from charfast.gpt import train
from charfast.gpt.config import resolve_config
from charfast.gpt.distributed import init_distributed
from charfast.gpt.late_reads import LateRead
from charfast.gpt.trainer import Trainer


def _trainer(tiny_corpus, tiny_cache, out, **flags) -> Trainer:
    run = resolve_config(tiny_flags(tiny_corpus, out, tiny_cache, char_backend="triton", **flags))
    ddp, device = init_distributed(run.config.device)
    return Trainer(run, ddp, device)


@needs_interpreter
@pytest.mark.parametrize("grad_accum", [1, 3])
def test_a_training_step_reads_nothing_back(tiny_corpus, tiny_cache, tmp_path, monkeypatch, grad_accum):
    trainer = _trainer(tiny_corpus, tiny_cache, tmp_path / "run", grad_accum=grad_accum)
    trainer.train_step()  # the first step builds what is built once
    reads = HostReads(monkeypatch)
    with reads:
        numbers = trainer.train_step()
        trainer.train_step()
    assert reads.seen == []
    stopping, loss, grad_norm, char_grad_share = numbers.read()
    assert stopping == 0 and loss > 0 and grad_norm > 0 and 0 < char_grad_share < 1


def test_the_loop_reads_each_loss_after_queueing_the_next_step(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    events = []
    original_step, original_read = Trainer.train_step, LateRead.read

    def train_step(self, stop=None):
        numbers = original_step(self, stop)
        numbers.step = self.step
        events.append(("queued", self.step))
        return numbers

    def read(self):
        events.append(("read", self.step))
        return original_read(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(LateRead, "read", read)
    out = tmp_path / "run"
    assert train.main(tiny_flags(tiny_corpus, out, tiny_cache, max_steps=6, eval_interval=3, sample_tokens=0)) == 0
    reads = [step for kind, step in events if kind == "read"]
    assert reads == [1, 2, 3, 4, 5, 6]  # every step once, in order
    for step in (1, 2, 4, 5):  # not evaluated: read once the next step is queued
        assert events.index(("read", step)) > events.index(("queued", step + 1))
    for step in (3, 6):  # evaluated: read at once, before another step is queued
        assert events.index(("read", step)) > events.index(("queued", step))
        assert step == 6 or events.index(("read", step)) < events.index(("queued", step + 1))
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.gpu
@pytest.mark.parametrize("grad_accum", [1, 3])
def test_a_training_step_never_waits_for_the_gpu(tiny_corpus, tiny_cache, tmp_path, grad_accum):
    trainer = _trainer(tiny_corpus, tiny_cache, tmp_path / "run", device="cuda", compile="off", grad_accum=grad_accum)
    trainer.train_step()  # the first step builds what is built once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        numbers = [trainer.train_step() for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(n.read()[0] > 0 for n in numbers)
