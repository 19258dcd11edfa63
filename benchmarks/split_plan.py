"""The split kernels before a GPU measures them: what sm_90 compiles them to, and what step
time a model of their memory traffic predicts beside the tiled kernels'.

    python benchmarks/split_plan.py [--compile-only]   # CPU only: compiles for sm_90 without a GPU

1. Compile: every tile of SPLIT_TILE_CANDIDATES, bfloat16 and float32, the stepped and the
   persistent kernel of each direction, to a cubin for an H100/H200 (sm_90); for each, registers per thread,
   shared memory and how many programs fit at once on 132 SMs (what a persistent launch
   with a grid barrier may use).
2. Model: per dependent step on cl100k batches of the default corpus (B x 1024 tokens),
   the bytes through L2 and the FLOPs of the tiled and the split kernels, and a predicted
   step time: each SM streams its share at L2_PER_SM (the rate the tiled kernel's measured
   chain latency implies: 4.7 MB of W_hh in 114 us at hidden 768), the split kernels add a
   barrier per step (BARRIER_US, an assumption). Forward, a program reads W_hh (its slice,
   split) and its rows' h_{t-1} (bf16, H wide); backward, W_hh the same way and its rows'
   dgates_{t+1}, 4H wide (float32 in the tiled kernel, the bf16 ring in the split one). The GPU run must
   confirm both constants: chain_latency.py --kernels tiled split-stepped split-persistent.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # compile, never interpret

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from charfast.kernels.blocks import LstmBlocks, dot_precision  # noqa: E402
from charfast.kernels.split_grid import SPLIT_TILE_CANDIDATES, resident_programs  # noqa: E402
from charfast.kernels.split_lstm_backward import (  # noqa: E402
    split_lstm_backward_persistent_kernel,
    split_lstm_backward_step_kernel,
)
from charfast.kernels.split_lstm_forward import split_lstm_persistent_kernel, split_lstm_step_kernel  # noqa: E402

SMS = 132  # H100 SXM; an H200 has the same 132
L2_PER_SM = 4 * 768 * 768 * 2 / 114e-6  # bytes/s one SM streamed in the tiled kernel (measured chain)
BARRIER_US = 2.0  # assumed cost of one grid barrier (or one graph-replayed launch)
MEASURED_TILED_US = {128: 19.0, 256: 41.0, 768: 114.0}  # chain_latency.py, H100, 2026-11-25


def cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of a cubin's kernel, as cuobjdump
    (shipped with Triton) reports them. A Triton kernel calls nothing, so its stack frame
    holds what ptxas spilled out of the registers (ptxas -v: "bytes stack frame, bytes spill
    stores"); cuobjdump's LOCAL stays 0 however much spills."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    return int(re.search(r"REG:(\d+)", usage.stdout).group(1)), int(re.search(r"STACK:(\d+)", usage.stdout).group(1))


def forward_signature(name: str) -> dict:
    """The argument types every forward recurrence kernel shares, weights of Triton type `name`."""
    return dict(
        gate_table="*" + name, weight_hh="*" + name, table_chars="*u8", sorted_ids="*i64", sorted_lengths="*i64",
        offsets="*i64", order="*i64", h_out="*" + name, h_prev="*" + name, c_prev="*fp32", step_chars="*i32",
        U="i32", H="i32", table_width="i32", n_chars="i32",
    )  # fmt: skip


def compile_sm90(kernel, signature: dict, consts: dict, num_warps: int) -> tuple[int, int, int]:
    """(registers per thread, spilled bytes per thread, shared bytes) of `kernel` compiled for
    sm_90, its pointers 16-byte aligned as a launch specialises them."""
    aligned = {(i,): [["tt.divisibility", 16]] for i, (a, k) in enumerate(signature.items()) if k[0] == "*"}
    source = ASTSource(kernel, dict(signature, **dict.fromkeys(consts, "constexpr")), consts, aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    assert "cubin" in compiled.asm, kernel
    return (*cubin_resources(compiled.asm["cubin"]), compiled.metadata.shared)


def kernel_signatures(name: str) -> list[tuple[str, str, object, dict]]:
    """(direction, launch shape, kernel, argument types) of every split kernel, weights of
    Triton type `name`."""
    forward = forward_signature(name)
    backward = dict(
        gates="*fp32", c_prev="*fp32", weight_hh="*" + name, grad_h="*" + name, sorted_lengths="*i64",
        offsets="*i64", order="*i64", dc_carry="*fp32", dgates_ring="*" + name, U="i32", H="i32",
    )  # fmt: skip
    return [
        ("forward", "stepped", split_lstm_step_kernel, dict(t="i32", **forward)),
        ("forward", "persistent", split_lstm_persistent_kernel, dict(arrivals="*i32", **forward)),
        ("backward", "stepped", split_lstm_backward_step_kernel, dict(t="i32", **backward)),
        ("backward", "persistent", split_lstm_backward_persistent_kernel, dict(arrivals="*i32", **backward)),
    ]


def compile_split_kernels() -> list[dict]:
    rows = []
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        for tiles in SPLIT_TILE_CANDIDATES:
            consts = dict(BLOCK_U=tiles.rows, BLOCK_H=tiles.hidden, BLOCK_K=tiles.reduction)
            consts["DOT_PRECISION"] = dot_precision(dtype)
            for direction, kind, kernel, signature in kernel_signatures(name):
                regs, spilled, shared = compile_sm90(kernel, signature, consts, tiles.num_warps)
                rows.append(
                    dict(
                        direction=direction,
                        kind=kind,
                        dtype=name,
                        tiles=tiles,
                        regs=regs,
                        spilled=spilled,
                        shared=shared,
                        resident=resident_programs(regs, shared, tiles.num_warps, SMS),
                    )
                )
    return rows


def batch_lengths(batch: int) -> list[int]:
    """The distinct tokens' lengths of a cl100k batch of B windows of 1024 tokens, longest first."""
    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import batch_ids, load_cl100k_table, load_shakespeare_tokens

    table, tokens = load_cl100k_table(), load_shakespeare_tokens()
    ids = torch.unique(batch_ids(tokens, batch, 1024))
    return sorted(table.lengths[ids].tolist(), reverse=True)


def step_model(lengths: list[int], hidden: int, backward: bool, split_rows: int = 32, split_hidden: int = 16) -> dict:
    """Bytes through L2, FLOPs and predicted time per dependent step, tiled vs split."""
    tiled_rows = LstmBlocks.for_shape(hidden, torch.bfloat16, len(lengths), SMS).rows
    weights = 4 * hidden * hidden * 2  # W_hh, bf16
    # per row: h_{t-1} bf16 forward; dgates_{t+1} backward, float32 (tiled) or bf16 (split ring)
    tiled_row_bytes, split_row_bytes = (4 * hidden * 4, 4 * hidden * 2) if backward else (hidden * 2, hidden * 2)
    slices = math.ceil(hidden / split_hidden)
    totals = dict(tiled_bytes=0.0, split_bytes=0.0, flops=0.0, tiled_s=0.0, split_s=0.0)
    steps = lengths[0] if lengths else 0
    for t in range(steps):
        active = sum(1 for n in lengths if n > t)
        tiled_programs = math.ceil(active / tiled_rows)
        per_program = weights + tiled_rows * tiled_row_bytes
        items = math.ceil(active / split_rows) * slices
        per_item = 4 * split_hidden * hidden * 2 + split_rows * split_row_bytes
        totals["tiled_bytes"] += tiled_programs * per_program
        totals["split_bytes"] += items * per_item
        totals["flops"] += 8 * active * hidden * hidden
        # Each SM streams its programs' bytes one after another; SMs run side by side.
        totals["tiled_s"] += math.ceil(tiled_programs / SMS) * per_program / L2_PER_SM
        totals["split_s"] += math.ceil(items / SMS) * per_item / L2_PER_SM + BARRIER_US * 1e-6
    return {"steps": steps, **{k: v / max(steps, 1) for k, v in totals.items()}}


def main() -> None:
    print("sm_90 compile of the split kernels (per thread: registers, stack bytes = spills; shared bytes; programs")
    print("resident at once on 132 SMs):")
    for row in compile_split_kernels():
        t = row["tiles"]
        print(
            f"  {row['direction']:<8} {row['kind']:<10} {row['dtype']} rows {t.rows:>2} hidden {t.hidden:>2} "
            f"k {t.reduction:>3} "
            f"warps {t.num_warps}: {row['regs']:>3} regs, {row['spilled']:>4} B spilled, {row['shared']:>6} B shared, "
            f"{row['resident']:>5} resident"
        )
    if "--compile-only" in sys.argv:
        return
    print(f"\nmodel per dependent step (L2 {L2_PER_SM / 1e9:.0f} GB/s per SM, barrier {BARRIER_US} us; bandwidth only:")
    print("at small hidden sizes the chain is latency-bound, which the model leaves out):")
    # The chain (chain_latency.py: 16 rows, the per-step target) and whole batches.
    workloads = [("chain (16 rows of 33 chars)", [33] * 16)]
    for batch in (16, 64):
        lengths = batch_lengths(batch)
        workloads.append((f"B={batch} ({len(lengths)} distinct, longest {lengths[0]})", lengths))
    for name, lengths in workloads:
        for hidden in (128, 256, 768):
            for backward in (False, True):
                m = step_model(lengths, hidden, backward)
                measured = "" if backward or len(lengths) != 16 else f" (measured {MEASURED_TILED_US[hidden]:.0f})"
                print(
                    f"  {'backward' if backward else 'forward '} {name}, hidden {hidden}: L2 MB/step tiled "
                    f"{m['tiled_bytes'] / 1e6:.1f} split {m['split_bytes'] / 1e6:.1f}; GFLOP/step "
                    f"{m['flops'] / 1e9:.3f}; predicted us/step tiled {m['tiled_s'] * 1e6:.1f}{measured} split "
                    f"{m['split_s'] * 1e6:.1f}"
                )


if __name__ == "__main__":
    main()
