"""The resident kernels (kernels/resident_lstm.py): W_hh loaded once per program and kept
for every step, h and c (dh and dc) carried on chip, for hidden sizes whose padded W_hh
fits 128 KB. Against the reference, values and every gradient, alone and beside the tiled
kernel of the other direction; larger hidden sizes are refused by name. On the CPU they run
under the interpreter; the sm_90 compile is checked without a GPU."""

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
from charfast.kernels.resident_lstm import resident_fits


@pytest.fixture
def resident(monkeypatch):
    """Both directions resident."""
    monkeypatch.setenv("CHARFAST_TRITON_FORWARD", "resident")
    monkeypatch.setenv("CHARFAST_TRITON_BACKWARD", "resident")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("hidden", [1, 16, 40, 64])
def test_resident_kernels_match_the_reference_in_float32(resident, device, hidden):
    assert_matches_reference("triton", kernel_case(hidden), torch.float32, device=device, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("hidden", [40, 128])
def test_resident_kernels_in_bfloat16_err_no_more_than_torch_lstm(resident, device, hidden):
    assert_within_lstm_error_budget("triton", kernel_case(hidden), torch.bfloat16, device=device)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("chars, lengths, idx", EDGE_ROW_CASES)
def test_resident_kernels_edge_rows(resident, device, chars, lengths, idx):
    table = TokenCharTable(torch.tensor(chars), torch.tensor(lengths), 9)
    assert_triton_matches_reference_on(table, idx, 20, device, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_resident_kernels_one_very_long_token_among_many_rows(resident, device):
    """A 128-char token beside 40 short ones: 128 dependent steps in the first of three row
    blocks, its rows ending one by one, the other blocks shorter."""
    g = torch.Generator().manual_seed(0)
    chars = torch.randint(0, 9, (41, 128), generator=g)
    lengths = torch.cat([torch.tensor([128]), torch.randint(0, 7, (40,), generator=g)])
    table = TokenCharTable(chars, lengths, 9)
    assert_triton_matches_reference_on(table, [*range(41), 0, 5], 24, device, rtol=1e-4, atol=1e-5)


@needs_interpreter
def test_resident_kernels_read_nothing_back(resident, monkeypatch):
    table = TokenCharTable(torch.randint(0, 9, (20, 5)), torch.randint(0, 6, (20,)), 9)
    module = CharEmbedding(table, 8, char_dim=5, hidden=20, backend="triton", check_ids=False)
    idx = torch.randint(0, 20, (3, 7))
    reads = HostReads(monkeypatch)
    with reads:
        module(idx).square().sum().backward()
    assert reads.seen == []


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("forward, backward", [("resident", "tiled"), ("tiled", "resident")])
def test_each_resident_kernel_beside_the_tiled_one(monkeypatch, device, forward, backward):
    """The packed slots the resident forward writes feed the tiled backward, and the other
    way round: one layout contract."""
    monkeypatch.setenv("CHARFAST_TRITON_FORWARD", forward)
    monkeypatch.setenv("CHARFAST_TRITON_BACKWARD", backward)
    assert_matches_reference("triton", kernel_case(40), torch.float32, device=device, rtol=1e-5, atol=1e-5)


def test_what_fits_on_chip():
    assert resident_fits(128, torch.bfloat16) and resident_fits(128, torch.float16) and resident_fits(64, torch.float32)
    assert not resident_fits(129, torch.bfloat16) and not resident_fits(65, torch.float32)


@needs_interpreter
@pytest.mark.parametrize(
    "variable, hidden, dtype, size",
    [
        ("CHARFAST_TRITON_FORWARD", 130, torch.float16, "hidden 130 in torch.float16 takes 512 KB"),
        ("CHARFAST_TRITON_BACKWARD", 128, torch.float32, "hidden 128 in torch.float32 takes 256 KB"),
    ],
)
def test_a_hidden_size_too_large_to_keep_on_chip_is_refused_by_name(monkeypatch, variable, hidden, dtype, size):
    monkeypatch.setenv(variable, "resident")
    table = TokenCharTable(torch.randint(0, 9, (6, 4)), torch.randint(1, 5, (6,)), 9)
    module = CharEmbedding(table, 8, char_dim=4, hidden=hidden, backend="triton").to(dtype)
    with pytest.raises(ValueError, match=f"{variable}=resident keeps W_hh on chip: {size} padded, more than 128 KB"):
        module(torch.tensor([0, 1, 2])).sum().backward()


@pytest.mark.slow
def test_resident_kernels_compile_for_sm90():
    """Each resident kernel compiles for an H100/H200 without a GPU at every hidden size it
    takes; registers, spills and shared memory are printed (and recorded in BENCHMARKS.md)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "resident_plan.py"
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    rows = re.findall(
        r"(\w+) +(\w+) +H= *(\d+) rows +(\d+) warps (\d+): +(\d+) regs, +(\d+) B spilled, +(\d+) B shared", done.stdout
    )
    # forward and backward x (bf16, fp16: 16..128; fp32: 16..64), and the forward's 32 and 64 rows per dtype
    assert len(rows) == 2 * (2 * 4 + 3) + 3 * 2
    assert all(int(regs) <= 255 and int(shared) <= 227 * 1024 for *_, regs, _, shared in rows)
    # The launched configurations (16 rows) spill at most 512 B a thread: a guard against a
    # change that spills W_hh (at 4 warps H = 128 spilled 1.3-2 KB).
    assert all(int(spilled) <= 512 for *_, rows_, _, _, spilled, _ in rows if rows_ == "16")


@pytest.mark.gpu
def test_resident_kernels_never_wait_for_the_gpu(resident):
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
