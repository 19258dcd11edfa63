"""GPU benchmark of the GPT's loss: the fused cross-entropy vs torch's, forward + backward.

    pytest benchmarks/test_bench_cross_entropy_gpu.py --benchmark-only

The GPT-2-small step's shape: N = 16 x 1024 positions of the cl100k-tokenized default
corpus (the real next tokens are the targets), V = 100,277, bfloat16 logits as bf16
autocast leaves them (random: their values do not change the work). Variants:

    fused           charfast.gpt.cross_entropy.mean_cross_entropy (what the GPT runs on a GPU)
    torch           torch_mean_cross_entropy: F.cross_entropy(logits.float()), what the GPT ran before
    torch-compiled  the same under torch.compile (inductor)

extra_info: time_over_floor, the median time over the least bytes any implementation must
move (read the logits twice, once for the loss and once for the gradient, and write the
gradient) at the GPU's memory bandwidth.
"""

from __future__ import annotations

import pytest
import torch
from conftest import batch_ids

from charfast.backends.triton import KERNELS_INTERPRETED
from charfast.gpt.cross_entropy import mean_cross_entropy, torch_mean_cross_entropy
from charfast.gpt.gpu_peaks import gpu_peaks

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or KERNELS_INTERPRETED,
    reason="GPU benchmark: needs CUDA and compiled Triton (TRITON_INTERPRET unset)",
)

BATCH, SEQ_LEN = 16, 1024
LOSSES = {
    "fused": mean_cross_entropy,
    "torch": torch_mean_cross_entropy,
    "torch-compiled": torch.compile(torch_mean_cross_entropy),
}


@pytest.fixture(scope="module")
def logits_and_targets(cl100k_table, shakespeare_tokens):
    targets = batch_ids(shakespeare_tokens, BATCH, SEQ_LEN + 1)[:, 1:].cuda()  # [B, T] real next tokens
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(BATCH, SEQ_LEN, cl100k_table.vocab_size, device="cuda", generator=g, dtype=torch.bfloat16)
    return logits.requires_grad_(), targets


@pytest.mark.parametrize("variant", list(LOSSES))
def test_cross_entropy_forward_backward(benchmark, logits_and_targets, variant):
    logits, targets = logits_and_targets
    loss_of = LOSSES[variant]

    def step():
        loss = loss_of(logits, targets)
        (grad,) = torch.autograd.grad(loss, logits)
        torch.cuda.synchronize()
        return loss, grad

    benchmark.group = (
        f"cross-entropy forward+backward, {torch.cuda.get_device_name()}, N={logits.shape[0] * logits.shape[1]} "
        f"V={logits.shape[-1]} bf16"
    )
    loss, _ = benchmark.pedantic(step, rounds=10, warmup_rounds=3)
    expected = torch_mean_cross_entropy(logits.detach(), targets)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-4)
    peaks = gpu_peaks(torch.cuda.get_device_name())
    if peaks is not None:
        least_bytes = 3 * logits.numel() * logits.element_size()
        benchmark.extra_info["time_over_floor"] = round(benchmark.stats.stats.median / (least_bytes / peaks[1]), 2)
