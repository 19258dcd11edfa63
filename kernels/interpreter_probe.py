"""A 16 x 16 tl.dot, to check what Triton's interpreter computes for a dtype.

Up to Triton 3.9 the interpreter multiplies the raw bit patterns of bfloat16 tl.dot
operands (triton-lang/triton#11584); the Triton backend runs this probe once before it
lets bfloat16 through the interpreter (charfast.backends.triton).
"""

import triton
import triton.language as tl


@triton.jit
def dot_probe_kernel(a, b, out, N: tl.constexpr):
    """out [N, N] float32 = a [N, N] @ b [N, N], both row-major."""
    tile = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]  # [N, N]
    tl.store(out + tile, tl.dot(tl.load(a + tile), tl.load(b + tile)))
