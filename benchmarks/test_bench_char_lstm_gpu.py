"""GPU benchmark of the char embedding: fused Triton vs reference vs cuDNN vs the study's approach.

    pytest benchmarks/test_bench_char_lstm_gpu.py --benchmark-only

Real text: batches of B x T cl100k tokens of the default Shakespeare corpus. Every
implementation computes the same thing, proj(h at each token's last char) for every
position, from the same bfloat16 parameters:

    triton     CharEmbedding(backend="triton"): unique ids, one fused launch each way
    triton-split-stepped / -persistent   the same with the split kernels both ways (W_hh
               over many programs; kernels/split_lstm_forward.py, split_lstm_backward.py)
    triton-resident   the same with the resident kernels both ways (W_hh kept on chip by
               each program; kernels/resident_lstm.py; hidden <= 128 in 16 bits)
    reference  CharEmbedding(backend="reference"): unique ids, PyTorch step loop
    cudnn      unique ids, padded to the batch's longest token, torch.nn.LSTM (cuDNN),
               h gathered at each length
    cudnn-packed
               unique ids as packed sequences, torch.nn.LSTM (cuDNN's variable-length
               path): each token runs only its own chars
    study      torch.nn.LSTM over packed sequences of all B*T tokens (charfast.baselines.packed_lstm)
    flashrnn-triton, flashrnn-cuda
               FlashRNN's fused LSTM kernels (Triton; CUDA, compiled on first use) over
               the distinct tokens padded like cudnn's (charfast.baselines.flashrnn);
               skipped when the flashrnn package is not installed

extra_info holds the work (distinct tokens, their chars, the longest token, the trie
nodes a prefix-sharing kernel would step through) and the floor, the slowest of: the
recurrent FLOPs (8*S*H^2 forward, 3x that forward+backward) at the GPU's bf16 peak, the
bytes that must move at its memory bandwidth, and the serial chain, (longest token) x
(one dependent step of the Triton kernels, forward [+ backward], chain_latency.py);
time_over_floor = median time / floor.
"""

from __future__ import annotations

import functools
import os
from unittest import mock

import pytest
import torch
from chain_latency import chain_step_seconds
from conftest import batch_ids, batch_work, recurrent_work

from charfast import CharEmbedding
from charfast.backends.triton import KERNELS_INTERPRETED
from charfast.baselines.flashrnn import flashrnn_char_embedding
from charfast.baselines.packed_lstm import (
    packed_distinct_lstm_char_embedding,
    packed_lstm_char_embedding,
    padded_lstm_char_embedding,
)
from charfast.gpt.gpu_peaks import gpu_peaks
from charfast.kernels.resident_lstm import resident_fits

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or KERNELS_INTERPRETED,
    reason="GPU benchmark: needs CUDA and compiled Triton (TRITON_INTERPRET unset)",
)

SEQ_LEN = 1024
DTYPE = torch.bfloat16


def floor_seconds(least: dict, peaks: tuple[float, float] | None, chain_s: float) -> float | None:
    """Lower bound on the time: the least FLOPs at the bf16 peak, the least bytes at the
    memory bandwidth or the serial chain, whichever is slowest (see module doc)."""
    if peaks is None:
        return None
    flop_per_s, byte_per_s = peaks
    return max(least["recurrent_flops"] / flop_per_s, least["min_bytes"] / byte_per_s, chain_s)


@functools.cache
def chain_step(hidden: int) -> dict:
    return chain_step_seconds(hidden, DTYPE)


# The triton backend's kernels of the other variants, forward and backward (set around the
# whole step: the backward runs after the forward call returns).
KERNEL_VARIANTS = {
    "triton-split-stepped": "split-stepped",
    "triton-split-persistent": "split-persistent",
    "triton-resident": "resident",
}


def kernel_environment(impl: str) -> dict:
    kernel = KERNEL_VARIANTS.get(impl)
    return {} if kernel is None else {"CHARFAST_TRITON_FORWARD": kernel, "CHARFAST_TRITON_BACKWARD": kernel}


IMPLEMENTATIONS = {
    "triton": lambda module, idx: module(idx),
    "triton-split-stepped": lambda module, idx: module(idx),
    "triton-split-persistent": lambda module, idx: module(idx),
    "triton-resident": lambda module, idx: module(idx),
    "reference": lambda module, idx: module(idx),
    "cudnn": padded_lstm_char_embedding,
    "cudnn-packed": packed_distinct_lstm_char_embedding,
    "study": packed_lstm_char_embedding,
    "flashrnn-triton": lambda module, idx: flashrnn_char_embedding(module, idx, backend="triton_fused"),
    "flashrnn-cuda": lambda module, idx: flashrnn_char_embedding(module, idx, backend="cuda_fused"),
}
ROUNDS = {"reference": 5, "study": 5}  # the slow ones; the others run 20


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("hidden", [128, 256, 768])
@pytest.mark.parametrize("batch", [16, 64])
def test_char_embedding_speed(benchmark, cl100k_table, shakespeare_tokens, batch, hidden, impl, mode):
    if impl.startswith("flashrnn"):
        pytest.importorskip("flashrnn", reason="FlashRNN baseline: pip install flashrnn")
    if impl == "triton-resident" and not resident_fits(hidden, DTYPE):
        pytest.skip(f"the resident kernels keep W_hh on chip: hidden {hidden} does not fit")
    table = cl100k_table
    idx = batch_ids(shakespeare_tokens, batch, SEQ_LEN).cuda()
    backend = "reference" if impl == "reference" else "triton"
    module = CharEmbedding(table, 128, char_dim=hidden, hidden=hidden, backend=backend, inference_cache=False).to(
        "cuda", DTYPE
    )
    run = IMPLEMENTATIONS[impl]
    grad = torch.randn(*idx.shape, 128, device="cuda", dtype=DTYPE)
    backward = mode == "forward_backward"

    def step():
        with mock.patch.dict(os.environ, kernel_environment(impl)):
            if backward:
                module.zero_grad(set_to_none=True)
                run(module, idx).backward(grad)
            else:
                with torch.no_grad():
                    run(module, idx)
        torch.cuda.synchronize()

    if impl.startswith("flashrnn"):
        # A third-party baseline: a shape it rejects or a kernel of it that fails (forward or
        # backward) skips this benchmark with the error as the reason (`-rs` prints it).
        try:
            step()
        except Exception as err:  # noqa: BLE001 - any failure of the baseline is reported, not raised
            pytest.skip(f"{impl} failed: {type(err).__name__}: {str(err)[:300]}")

    benchmark.group = (
        f"char embedding {mode.replace('_', '+')}, {torch.cuda.get_device_name()}, "
        f"B={batch} T={SEQ_LEN} hidden={hidden} bf16"
    )
    benchmark.pedantic(step, warmup_rounds=3, rounds=ROUNDS.get(impl, 20), iterations=1)
    work = batch_work(table, idx)
    least = recurrent_work(work, hidden, backward)
    step = chain_step(hidden)
    chain_s = work["longest"] * (step["forward"] + (step["backward"] if backward else 0.0))
    floor = floor_seconds(least, gpu_peaks(torch.cuda.get_device_name()), chain_s)
    benchmark.extra_info.update(
        work,
        **least,
        device=torch.cuda.get_device_name(),
        dtype=str(DTYPE),
        mean_token_len=round(float(table.lengths[idx.cpu()].float().mean()), 3),
        chain_s=chain_s,
        floor_s=floor,
        time_over_floor=None if floor is None else benchmark.stats.stats.median / floor,
    )
