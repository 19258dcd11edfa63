"""The char embedding once per optimizer step vs once per micro-batch, on the CPU.

    pytest benchmarks/test_bench_grad_accum_cpu.py --benchmark-only

The optimizer step of `python -m charfast.train`'s default model (4 layers, width 128,
block 128, batch 32, the 512-token BPE of the default corpus), taken by its own Trainer
at gradient accumulation 1, 4 and 8, interleaved round by round:

    baseline       arch baseline (no char embedding)
    char-each      arch char, the char-LSTM forward and backward in every micro-batch
    char-once      arch char as charfast.train runs it: CharEmbedding.once_per_step, one
                   char forward and one backward for all the step's micro-batches

extra_info holds the medians and each char variant's overhead over the baseline, the
median over rounds of its time / the baseline's in the same round (paired: a slow spell of
the machine hits both). At accumulation 1 the two char variants are the same computation
(charfast.train uses the block only with several micro-batches).
"""

from __future__ import annotations

import contextlib
import statistics

import pytest
import torch
from conftest import interleaved_times, paired_ratio

from charfast.gpt.config import resolve_config
from charfast.gpt.distributed import init_distributed
from charfast.gpt.trainer import Trainer

ROUNDS = {1: 30, 4: 16, 8: 10}  # about 6 s of steps per variant on 2 cores


class _EachMicroBatch(Trainer):
    """The char-LSTM run per micro-batch: charfast.train without the once-per-step block."""

    def _char_once_per_step(self, inputs):
        return contextlib.nullcontext()


def _trainer(tmp_path, name: str, arch: str, grad_accum: int, trainer_class=Trainer) -> Trainer:
    flags = ["--out-dir", str(tmp_path / name), "--arch", arch, "--grad-accum", str(grad_accum)]
    run = resolve_config([*flags, "--device", "cpu", "--compile", "off", "--no-progress"])
    return trainer_class(run, *init_distributed("cpu"))


def _step(tmp_path, name: str, arch: str, grad_accum: int, trainer_class=Trainer):
    trainer = _trainer(tmp_path, name, arch, grad_accum, trainer_class)
    return lambda: trainer.train_step().read()


@pytest.mark.parametrize("grad_accum", [1, 4, 8])
def test_char_once_per_step_overhead(benchmark, tmp_path, grad_accum):
    torch.manual_seed(0)
    steps = {
        "baseline": _step(tmp_path, "baseline", "baseline", grad_accum),
        "char-each": _step(tmp_path, "each", "char", grad_accum, _EachMicroBatch),
        "char-once": _step(tmp_path, "once", "char", grad_accum),
    }
    times = interleaved_times(steps, rounds=ROUNDS[grad_accum], warmup=2)
    each, once = (paired_ratio(times, variant, "baseline") - 1 for variant in ("char-each", "char-once"))
    benchmark.group = f"GPT optimizer step, CPU, default model, grad_accum {grad_accum}: char once per step"
    benchmark.extra_info.update(
        {f"{name}_median_ms": round(statistics.median(t) * 1e3, 2) for name, t in times.items()}
    )
    benchmark.extra_info.update(
        rounds=ROUNDS[grad_accum],
        char_each_overhead=round(each, 4),
        char_once_overhead=round(once, 4),
        once_over_each_overhead=round(once / each, 3) if each > 0 else None,
    )
    benchmark.pedantic(steps["char-once"], rounds=2, warmup_rounds=0)
    assert all(t > 0 for t in times["char-once"])


@pytest.mark.parametrize("grad_accum", [1, 4, 8])
def test_char_embedding_cost_per_optimizer_step(benchmark, tmp_path, grad_accum):
    """The char embedding alone, in the default model on its own micro-batches of real text:
    forward and backward (a fixed output gradient) of every micro-batch of one optimizer
    step, each on its own ("char-each") or in a once_per_step block ("char-once"),
    interleaved. It resolves what the whole step's noise hides: extra_info holds the medians
    and once / each (paired per round)."""
    char_emb = _trainer(tmp_path, "char", "char", grad_accum).model.char_emb
    batches = _trainer(tmp_path, "data", "baseline", grad_accum).data.train_batches
    inputs = [batches.next(torch.device("cpu"))[0] for _ in range(grad_accum)]  # [B, T] each
    grad = torch.randn(*inputs[0].shape, char_emb.d_model, generator=torch.Generator().manual_seed(0))

    def micro_batches():
        for x in inputs:
            char_emb(x).backward(grad)

    def each():
        char_emb.zero_grad(set_to_none=True)
        micro_batches()

    def once():
        char_emb.zero_grad(set_to_none=True)
        with char_emb.once_per_step(inputs):
            micro_batches()

    times = interleaved_times({"char-each": each, "char-once": once}, rounds=30, warmup=3)
    benchmark.group = f"char embedding per optimizer step, CPU, default model, grad_accum {grad_accum}"
    benchmark.extra_info.update(
        {f"{name}_median_ms": round(statistics.median(t) * 1e3, 3) for name, t in times.items()}
    )
    benchmark.extra_info["once_over_each"] = round(paired_ratio(times, "char-once", "char-each"), 3)
    benchmark.pedantic(once, rounds=5, warmup_rounds=0)
