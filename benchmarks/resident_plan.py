"""The resident kernels before a GPU measures them: what sm_90 compiles them to.

    python benchmarks/resident_plan.py    # CPU only: compiles for sm_90 without a GPU

Every hidden size class the resident kernels take (padded to 16, 32, 64, 128; float32 up
to 64), forward and backward at 16 rows a program, bfloat16, float16 and float32, and the
forward's larger row blocks (32, 64) at each dtype's largest size, compiled to a cubin for
an H100/H200 (sm_90): registers and spilled bytes per thread (the stack frame, see
split_plan.cubin_resources), shared memory, and how many programs fit on an SM at once.
Where W_hh lives shows here: shared memory, registers, or spilled to local memory
(L1-cached, but off the register file); the GPU run (chain_latency.py --kernels tiled
resident) says what that costs.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # compile, never interpret
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from split_plan import SMS, compile_sm90, forward_signature  # noqa: E402

from charfast.kernels.blocks import dot_precision  # noqa: E402
from charfast.kernels.resident_lstm import (  # noqa: E402
    RESIDENT_ROWS,
    resident_fits,
    resident_lstm_backward_kernel,
    resident_lstm_forward_kernel,
    resident_warps,  # noqa: E402
)
from charfast.kernels.split_grid import resident_programs  # noqa: E402

LARGER_ROWS = (32, 64)  # forward row blocks compiled for the record (the backward's pass 227 KB)
DTYPES = ((torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "fp32"))


def signatures(name: str) -> list[tuple[str, object, dict]]:
    forward = forward_signature(name)
    backward = dict(
        gates="*fp32", c_prev="*fp32", weight_hh="*" + name, grad_h="*" + name, sorted_lengths="*i64",
        offsets="*i64", order="*i64", U="i32", H="i32",
    )  # fmt: skip
    return [("forward", resident_lstm_forward_kernel, forward), ("backward", resident_lstm_backward_kernel, backward)]


def main() -> None:
    print("sm_90 compile of the resident kernels (per thread: registers, stack bytes = spills; shared bytes;")
    print("programs resident at once per SM):")
    for dtype, name in DTYPES:
        sizes = [padded for padded in (16, 32, 64, 128) if resident_fits(padded, dtype)]
        jobs = [(direction, padded, RESIDENT_ROWS) for padded in sizes for direction in ("forward", "backward")]
        jobs += [("forward", sizes[-1], rows) for rows in LARGER_ROWS]
        kernels = {direction: (kernel, signature) for direction, kernel, signature in signatures(name)}
        for direction, padded, rows in jobs:
            kernel, signature = kernels[direction]
            consts = dict(BLOCK_U=rows, H_PAD=padded, DOT_PRECISION=dot_precision(dtype))
            warps = resident_warps(padded, dtype)
            regs, stack, shared = compile_sm90(kernel, signature, consts, warps)
            per_sm = resident_programs(regs, shared, warps, SMS) // SMS
            print(
                f"  {direction:<8} {name} H={padded:>3} rows {rows:>2} warps {warps}: {regs:>3} regs, "
                f"{stack:>5} B spilled, {shared:>6} B shared, {per_sm:>2} per SM"
            )


if __name__ == "__main__":
    main()
