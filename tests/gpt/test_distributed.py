"""torchrun on CPU (gloo): 2 processes with B rows each take the same steps as 1 process
with the 2B rows of the global batch (each rank draws its shard of it), with DDP and with
FSDP2, with and without gradient accumulation (the char embedding once per step), and
through a resume."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import read_metrics, tiny_flags, torchrun_two_ranks, write_tiny_corpus

from charfast.gpt import train


@pytest.mark.slow
@pytest.mark.parametrize(
    "parallel, grad_accum, resume_at",
    [("ddp", 1, None), ("ddp", 2, 2), ("fsdp", 2, 2)],
    ids=["ddp", "ddp-accumulated-resumed", "fsdp-accumulated-resumed"],
)
def test_two_gloo_ranks_equal_one_process_on_the_concatenated_batch(tmp_path, parallel, grad_accum, resume_at):
    corpus = write_tiny_corpus(tmp_path / "corpus")
    cache = tmp_path / "cache"
    # Dropout off: its masks are drawn per rank, so they cannot match one process's.
    common = dict(max_steps=3, eval_interval=1, sample_tokens=0, dropout=0.0, grad_accum=grad_accum)
    single, pair = tmp_path / "single", tmp_path / "pair"
    assert train.main(tiny_flags(corpus, single, cache, batch_size=4, **common)) == 0

    pair_flags = dict(common, batch_size=2, parallel=parallel)
    if resume_at is not None:  # stop there, then continue from the checkpoint
        torchrun_two_ranks(tiny_flags(corpus, pair, cache, **{**pair_flags, "max_steps": resume_at}))
        pair_flags["resume"] = True
    torchrun_two_ranks(tiny_flags(corpus, pair, cache, **pair_flags))

    one, two = read_metrics(single), read_metrics(pair)  # rank 0 alone writes the metrics
    assert [r["step"] for r in two] == [1, 2, 3] and two[0]["train_loss"] != two[1]["train_loss"]
    for a, b in zip(one, two):
        torch.testing.assert_close(b["train_loss"], a["train_loss"], rtol=1e-5, atol=0)
        torch.testing.assert_close(b["val_loss"], a["val_loss"], rtol=1e-5, atol=0)
    a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (single, pair))
    assert len(b["rng"]) == 2  # every rank's RNG state, for an exact resume
    assert b["data"]["position"] == a["data"]["position"] == 3 * grad_accum
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-4, atol=1e-6, msg=name)
