"""Tile sizes shared by the forward and backward char-LSTM kernels.

tl.dot needs every tile dimension >= 16. Hidden tiles stay at most 64 wide so the four
gate accumulators [BLOCK_U, BLOCK_H] and the weight tiles fit in registers / shared
memory for any H (H = 1024 runs as 16 x 16 tiles per step). for_shape follows what
benchmarks/test_bench_triton_tiles_gpu.py measures for the TUNING_CANDIDATES on a GPU.
"""

import functools
from dataclasses import dataclass

import torch
import triton

_MIN_DOT = 16
_MAX_TILE = 64


@dataclass(frozen=True)
class LstmBlocks:
    rows: int  # BLOCK_U: tokens per program
    hidden: int  # BLOCK_H: hidden units per gate tile
    reduction: int  # BLOCK_K: width of each matmul reduction tile
    num_warps: int = 4

    def __post_init__(self):
        for name in ("rows", "hidden", "reduction"):
            value = getattr(self, name)
            if value < _MIN_DOT or value & (value - 1):
                raise ValueError(f"LstmBlocks: {name} must be a power of two >= {_MIN_DOT}, got {value}")

    @classmethod
    def for_shape(
        cls, hidden: int, dtype: torch.dtype = torch.bfloat16, n_rows: int = 1, multiprocessors: int = 1
    ) -> "LstmBlocks":
        """The tiles for H = hidden in dtype, for n_rows rows on a device of that many
        multiprocessors (streaming multiprocessors of a GPU)."""
        tile = min(_MAX_TILE, max(_MIN_DOT, triton.next_power_of_2(hidden)))
        # Rows per program, from the tile sweep on an H100 (BENCHMARKS.md) at H = 128 and 256:
        # 32 rows when their programs fit in one wave (B=16: 3342 rows, 1.06-1.43x faster than
        # 16), else 16 (B=64: 7202 rows, 1.07-1.20x faster than 32). Wider H: 16, unmeasured.
        one_wave = triton.cdiv(n_rows, 2 * _MIN_DOT) <= multiprocessors
        rows = 2 * _MIN_DOT if hidden <= 256 and one_wave and dtype.itemsize == 2 else _MIN_DOT
        # float32 operands of the pipelined exact dot need ~140 KB of shared memory at 64-wide
        # reduction tiles (compiled for sm_90): halve them to stay well inside any GPU's limit.
        reduction = min(tile, 32) if dtype == torch.float32 else tile
        return cls(rows=rows, hidden=tile, reduction=reduction)


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 1
    return _cuda_multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """float32 parameters get exact float32 products (the ~1e-5 contract); 16-bit ones
    multiply in their own precision with float32 accumulation whatever this says."""
    return "ieee" if dtype == torch.float32 else "tf32"


# Tile configs a tuning may choose among for 16-bit parameters: every one compiles for
# sm_90 within 100 KB of shared memory (tests/core/test_triton.py), and
# benchmarks/test_bench_triton_tiles_gpu.py times them on real batches. 64 rows take
# 32-wide tiles: with 64-wide ones the pipelined forward needs 120 KB.
TUNING_CANDIDATES = tuple(
    LstmBlocks(rows, tile, tile, warps)
    for rows, tile in ((16, 32), (16, 64), (32, 32), (32, 64), (64, 32))
    for warps in (4, 8)
)
