"""The split kernels (kernels/split_lstm_forward.py, split_lstm_backward.py): W_hh split over
(hidden slice, row group) work items, stepped (one launch per step) or persistent (one
launch, a grid barrier between steps), against the reference: values and every gradient,
each split kernel also beside the tiled one of the other direction. On the CPU they run
under the interpreter (the persistent ones as a single program, which their work-item loop
and barrier allow); on a GPU compiled."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from backend_cases import (
    EDGE_ROW_CASES,
    TRITON_DEVICES,
    assert_matches_reference,
    assert_triton_matches_reference_on,
    assert_within_lstm_error_budget,
    kernel_case,
    needs_interpreter,
)
from host_reads import HostReads

from charfast import CharEmbedding, TokenCharTable
from charfast.kernels.split_grid import SPLIT_TILE_CANDIDATES, SplitBlocks, persistent_grid, resident_programs

MODES = ["split-stepped", "split-persistent"]


@pytest.fixture(params=MODES)
def split_mode(request, monkeypatch):
    """Both directions split, in one mode."""
    monkeypatch.setenv("CHARFAST_TRITON_FORWARD", request.param)
    monkeypatch.setenv("CHARFAST_TRITON_BACKWARD", request.param)
    return request.param


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("hidden", [40, 130, 256, 768])
def test_split_kernels_match_the_reference_in_float32(split_mode, device, hidden):
    small = kernel_case(hidden, vocab=6, max_len=4, idx_shape=(7,)) if hidden == 768 else kernel_case(hidden)
    assert_matches_reference("triton", small, torch.float32, device=device, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("hidden", [40, 130])
def test_split_kernels_in_bfloat16_err_no_more_than_torch_lstm(split_mode, device, hidden):
    assert_within_lstm_error_budget("triton", kernel_case(hidden), torch.bfloat16, device=device)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("chars, lengths, idx", EDGE_ROW_CASES)
def test_split_kernels_edge_rows(split_mode, device, chars, lengths, idx):
    table = TokenCharTable(torch.tensor(chars), torch.tensor(lengths), 9)
    assert_triton_matches_reference_on(table, idx, 20, device, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_split_kernels_one_very_long_token(split_mode, device):
    """A 128-char token beside short ones: 128 dependent steps, the rows ending one by one."""
    g = torch.Generator().manual_seed(0)
    chars = torch.randint(0, 9, (4, 128), generator=g)
    table = TokenCharTable(chars, torch.tensor([128, 3, 1, 0]), 9)
    assert_triton_matches_reference_on(table, [0, 1, 2, 3, 0], 24, device, rtol=1e-4, atol=1e-5)


@needs_interpreter
def test_split_kernels_read_nothing_back(split_mode, monkeypatch):
    table = TokenCharTable(torch.randint(0, 9, (20, 5)), torch.randint(0, 6, (20,)), 9)
    module = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False)
    idx = torch.randint(0, 20, (3, 7))
    reads = HostReads(monkeypatch)
    with reads:
        module(idx).square().sum().backward()
    assert reads.seen == []


@pytest.mark.parametrize("variable", ["CHARFAST_TRITON_FORWARD", "CHARFAST_TRITON_BACKWARD"])
def test_an_unknown_kernel_is_named(monkeypatch, variable):
    monkeypatch.setenv(variable, "fastest")
    from charfast.backends.triton import chosen_kernel

    with pytest.raises(ValueError, match=f"{variable} must be one of tiled, resident, split-stepped"):
        chosen_kernel(variable)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize(
    "forward, backward",
    [(split, "tiled") for split in MODES] + [("tiled", split) for split in MODES],
)
def test_each_split_kernel_beside_the_tiled_one(monkeypatch, device, forward, backward):
    """The split forward's state feeds the tiled backward, and the tiled forward's the split
    backward: the packed layout is one contract."""
    monkeypatch.setenv("CHARFAST_TRITON_FORWARD", forward)
    monkeypatch.setenv("CHARFAST_TRITON_BACKWARD", backward)
    assert_matches_reference("triton", kernel_case(40), torch.float32, device=device, rtol=1e-5, atol=1e-5)


def test_the_persistent_grid_never_exceeds_what_is_resident():
    # (registers per thread, shared bytes, warps) as sm_90 compiles of the kernels give them
    for n_regs, shared, warps in [(128, 0, 4), (255, 49152, 8), (64, 16384, 4), (168, 100 * 1024, 4)]:
        fits = resident_programs(n_regs, shared, warps, sm_count=132)
        assert fits >= 132  # at least one program per SM for these tiles
        for items in (1, 50, fits, 10 * fits):
            assert persistent_grid(items, n_regs, shared, warps, 132) == min(items, fits)
    with pytest.raises(RuntimeError, match="not one program fits"):
        persistent_grid(10, 255, 0, 32, 132)  # 255 x 32 x 32 registers > one SM's
    assert SplitBlocks().hidden >= 16 and SplitBlocks().rows >= 16  # dot tiles


@pytest.mark.slow
def test_split_kernels_compile_for_sm90_and_fit_resident():
    """Every split tile compiles for an H100/H200 without a GPU, spills at most 512 B a thread
    (the forward spills 0-432 B, BENCHMARKS.md: a guard against one that spills its tiles),
    and at least one program of each fits on every SM (a persistent grid can cover the GPU)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "split_plan.py"
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run(
        [sys.executable, str(script), "--compile-only"], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = re.findall(r"(\d+) regs, +(\d+) B spilled, +(\d+) B shared, +(\d+) resident", done.stdout)
    assert len(rows) == 2 * 2 * 2 * len(SPLIT_TILE_CANDIDATES)  # dtypes x directions x (stepped, persistent) x tiles
    for regs, spilled, shared, resident in rows:
        assert int(regs) <= 255 and int(spilled) <= 512 and int(shared) <= 100 * 1024 and int(resident) >= 132


@pytest.mark.gpu
def test_split_kernels_never_wait_for_the_gpu(split_mode):
    table = TokenCharTable(torch.randint(0, 9, (40, 8)), torch.randint(0, 9, (40,)), 9)
    module = CharEmbedding(table, 16, char_dim=8, hidden=64, backend="triton", check_ids=False).cuda()
    idx = torch.randint(0, 40, (4, 32), device="cuda")
    module(idx).sum().backward()  # compiles the kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        module(idx).square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
