"""The resident kernels before a GPU measures them: what sm_90 compiles them to.

    python benchmarks/resident_plan.py    # CPU only: compiles for sm_90 without a GPU

Every hidden size class the resident kernels take (padded to 16, 32, 64, 128; float32 up
to 64), forward and backward, bfloat16, float16 and float32, compiled to a cubin for an
H100/H200 (sm_90): registers and local (spilled) bytes per thread, shared memory, and how
many programs fit on an SM at once. Where W_hh lives shows here: registers, shared memory,
or spilled to local memory (L1-cached, but off the chip's register file); the GPU run
(chain_latency.py --kernels tiled resident) says what that costs.
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
)
from charfast.kernels.split_grid import resident_programs  # noqa: E402

WARPS = 4
DTYPES = ((torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "fp32"))


def signatures(name: str) -> list[tuple[str, object, dict]]:
    forward = forward_signature(name)
    backward = dict(
        gates="*fp32", c_prev="*fp32", weight_hh="*" + name, grad_h="*" + name, sorted_lengths="*i64",
        offsets="*i64", order="*i64", U="i32", H="i32",
    )  # fmt: skip
    return [("forward", resident_lstm_forward_kernel, forward), ("backward", resident_lstm_backward_kernel, backward)]


def main() -> None:
    print(f"sm_90 compile of the resident kernels ({RESIDENT_ROWS} rows a program, {WARPS} warps; per thread:")
    print("registers, local bytes; shared bytes; programs resident at once per SM):")
    for dtype, name in DTYPES:
        for padded in (16, 32, 64, 128):
            if not resident_fits(padded, dtype):
                continue
            consts = dict(BLOCK_U=RESIDENT_ROWS, H_PAD=padded, DOT_PRECISION=dot_precision(dtype))
            for direction, kernel, signature in signatures(name):
                regs, local, shared = compile_sm90(kernel, signature, consts, WARPS)
                per_sm = resident_programs(regs, shared, WARPS, SMS) // SMS
                print(
                    f"  {direction:<8} {name} H={padded:>3}: {regs:>3} regs, {local:>5} B spilled, "
                    f"{shared:>6} B shared, "
                    f"{per_sm:>2} per SM"
                )


if __name__ == "__main__":
    main()
