"""Tile sizes shared by the forward and backward char-LSTM kernels.

tl.dot needs every tile dimension >= 16. Two kernel families read these tiles:

- resident (char_lstm_*_resident.py): one tile holds a whole row of the state
  (hidden >= H), which then stays in registers across steps. for_shape picks it whenever
  the four [BLOCK_H, BLOCK_H] weight tiles of a step fit the GPU's shared memory, and
  sizes rows per program so that every program of a batch runs in one wave.
- tiled (char_lstm_forward.py / char_lstm_backward.py): hidden tiles at most 64 wide,
  state through global memory between steps, so any H works (H = 1024 runs as 16 x 16
  tiles per step).

benchmarks/test_bench_triton_tiles_gpu.py times the TUNING_CANDIDATES on a GPU.
"""

import functools
from dataclasses import dataclass

import torch
import triton

_MIN_DOT = 16
_MAX_TILE = 64
# Widest resident row tile per element size (bytes): the resident kernels' shared memory
# for sm_90 (tests/core/test_triton.py compiles them) stays within 100 KB up to these.
_MAX_RESIDENT = {2: 128, 4: 64}
_RESIDENT_STATE = 4096  # rows x row tile of one resident program


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

    def holds_row(self, hidden: int) -> bool:
        """Whether one tile covers a whole row of H = hidden units (the resident kernels)."""
        return self.hidden >= hidden and self.reduction >= hidden

    def launch_options(self, hidden: int) -> dict:
        """Triton's launch options for these tiles at H = hidden. The resident kernels take
        num_stages=1: pipelining their step loop would multi-buffer all four weight tiles
        (270 KB of shared memory at H = 128 for sm_90 instead of 36 KB)."""
        return (
            dict(num_warps=self.num_warps, num_stages=1) if self.holds_row(hidden) else dict(num_warps=self.num_warps)
        )

    @classmethod
    def for_shape(
        cls, hidden: int, dtype: torch.dtype = torch.bfloat16, n_rows: int = 1, multiprocessors: int = 1
    ) -> "LstmBlocks":
        """The tiles for H = hidden in dtype, for n_rows rows on a device of that many
        multiprocessors (streaming multiprocessors of a GPU)."""
        row_tile = max(_MIN_DOT, triton.next_power_of_2(hidden))
        if row_tile <= _MAX_RESIDENT.get(dtype.itemsize, 0):
            # One wave: the fewest rows per program (16 at least) that need no more programs
            # than multiprocessors, so no program waits for another to finish its chain; at
            # most _RESIDENT_STATE elements of state per program (16-bit) so four warps hold
            # h, c and a gate without spilling, 16 rows for float32 (its exact dot compiles
            # slowly and into more shared memory).
            per_program = triton.cdiv(max(n_rows, 1), multiprocessors)
            most = _RESIDENT_STATE // row_tile if dtype.itemsize == 2 else _MIN_DOT
            rows = min(most, max(_MIN_DOT, triton.next_power_of_2(per_program)))
            return cls(rows=rows, hidden=row_tile, reduction=row_tile)
        tile = min(_MAX_TILE, row_tile)
        # 16 rows per program: measured on a GPU (BENCHMARKS.md); 32 and 64 compile too.
        # float32 operands of the pipelined exact dot need ~140 KB of shared memory at 64-wide
        # reduction tiles (compiled for sm_90): halve them to stay well inside any GPU's limit.
        reduction = min(tile, 32) if dtype == torch.float32 else tile
        return cls(rows=_MIN_DOT, hidden=tile, reduction=reduction)


def multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the interpreter runs one
    program at a time)."""
    return (
        _cuda_multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
        if (device.type == "cuda")
        else 1
    )


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
# Resident tiles (state in registers) a tuning may choose among, for H = their width.
RESIDENT_CANDIDATES = tuple(
    LstmBlocks(rows, width, width, warps)
    for rows, width, warps in ((16, 128, 4), (32, 128, 4), (64, 128, 4), (64, 128, 8), (16, 256, 4), (16, 256, 8))
)
