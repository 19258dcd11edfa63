"""Tile sweep of the Triton char-LSTM kernels on a GPU: which LstmBlocks (rows per program,
hidden tile, reduction tile, warps) is fastest for a shape, forward+backward, real text.

    pytest benchmarks/test_bench_triton_tiles_gpu.py --benchmark-only

Each group is one shape (B windows of T=1024 cl100k tokens of the default corpus, bf16);
the terminal summary ranks its configs. Before it is timed, every config's output is
checked against the default config's on the same weights, so a config that computes
something else fails instead of winning. LstmBlocks.for_shape (kernels/blocks.py) is to
follow what this measures.
"""

from __future__ import annotations

import pytest
import torch
from conftest import batch_ids

from charfast import CharEmbedding
from charfast.backends.triton import KERNELS_INTERPRETED
from charfast.kernels.blocks import TUNING_CANDIDATES, LstmBlocks, multiprocessors

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or KERNELS_INTERPRETED,
    reason="GPU benchmark: needs CUDA and compiled Triton (TRITON_INTERPRET unset)",
)

SEQ_LEN = 1024


def forward_backward(module: CharEmbedding, idx: torch.Tensor, grad: torch.Tensor):
    module.zero_grad(set_to_none=True)
    out = module(idx)
    out.backward(grad)
    torch.cuda.synchronize()
    return out.detach(), module.lstm.weight_hh_l0.grad.clone()


@pytest.mark.parametrize("tiles", TUNING_CANDIDATES, ids=lambda t: f"rows{t.rows}-tile{t.hidden}-warps{t.num_warps}")
@pytest.mark.parametrize("hidden", [128, 256, 768])
@pytest.mark.parametrize("batch", [16, 64])
def test_triton_tiles(benchmark, monkeypatch, cl100k_table, shakespeare_tokens, batch, hidden, tiles):
    idx = batch_ids(shakespeare_tokens, batch, SEQ_LEN).cuda()
    module = CharEmbedding(
        cl100k_table, 128, char_dim=hidden, hidden=hidden, backend="triton", inference_cache=False
    ).to("cuda", torch.bfloat16)
    grad = torch.randn(*idx.shape, 128, device="cuda", dtype=torch.bfloat16)
    expected = forward_backward(module, idx, grad)  # the default tiles
    default = LstmBlocks.for_shape(hidden, torch.bfloat16, torch.unique(idx).numel(), multiprocessors(idx.device))
    monkeypatch.setattr(LstmBlocks, "for_shape", classmethod(lambda cls, *shape: tiles))
    for name, got, want in zip(("output", "grad of weight_hh"), forward_backward(module, idx, grad), expected):
        error = (got.float() - want.float()).abs().max().item()
        scale = want.float().abs().max().item()
        assert error <= 8 * torch.finfo(torch.bfloat16).eps * scale, f"{tiles}: {name} differs by {error:.3e}"

    benchmark.group = (
        f"triton tiles, forward+backward, {torch.cuda.get_device_name()}, B={batch} T={SEQ_LEN} hidden={hidden} bf16"
    )
    benchmark.pedantic(forward_backward, args=(module, idx, grad), warmup_rounds=3, rounds=20, iterations=1)
    benchmark.extra_info.update(
        rows=tiles.rows,
        hidden_tile=tiles.hidden,
        reduction_tile=tiles.reduction,
        num_warps=tiles.num_warps,
        default=tiles == default,
    )
