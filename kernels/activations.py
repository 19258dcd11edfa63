"""Numerically stable sigmoid and tanh from tl.exp alone.

The Triton interpreter (used by the CPU test run) has no libdevice, so the LSTM cell
cannot call tanh from there. Both forms only ever exponentiate a non-positive number,
so nothing overflows for large |x|.
"""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    z = tl.exp(-tl.abs(x))  # in (0, 1]
    return tl.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


@triton.jit
def tanh(x):
    z = tl.exp(-2.0 * tl.abs(x))  # in (0, 1]
    magnitude = (1.0 - z) / (1.0 + z)
    return tl.where(x >= 0, magnitude, -magnitude)
