"""The launch shapes shared by the split forward and backward kernels.

A split kernel divides each step's work into J x G work items, (hidden slice j, row group
g), and every item of a step needs what all slices wrote the step before. Two shapes keep
that order:
- stepped: one launch per step, grid (J, G); the launch boundary is the barrier. Runs
  under TRITON_INTERPRET=1, where programs run one after another, and in a CUDA graph.
- persistent: one launch of P programs; each takes items p, p + P, ... every step and
  waits at a grid barrier (a monotonic arrival counter). All P programs must be resident
  at once, so the launcher sizes P by what the compiled kernel lets fit (sm_90 limits).
  With P = 1 it runs in the interpreter.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import dot_precision, multiprocessors

SPLIT_MODES = ("split-stepped", "split-persistent")
REGISTERS_PER_SM, SHARED_PER_SM, BLOCKS_PER_SM = 65536, 227 * 1024, 32  # sm_90 (H100/H200)


class SplitBlocks:
    """Tile sizes of the split kernels: rows per group, hidden units per slice, reduction
    width, warps. Dot operands need every tile side >= 16."""

    def __init__(self, rows: int = 32, hidden: int = 16, reduction: int = 64, num_warps: int = 4):
        self.rows, self.hidden, self.reduction, self.num_warps = rows, hidden, reduction, num_warps

    def __repr__(self) -> str:
        return (
            f"SplitBlocks(rows={self.rows}, hidden={self.hidden}, reduction={self.reduction}, warps={self.num_warps})"
        )

    def meta(self, dtype: torch.dtype) -> dict:
        """The kernels' compile-time arguments for weights of `dtype`."""
        return dict(
            BLOCK_U=self.rows,
            BLOCK_H=self.hidden,
            BLOCK_K=self.reduction,
            DOT_PRECISION=dot_precision(dtype),
            num_warps=self.num_warps,
        )


# The tiles the sm_90 compile checks (benchmarks/split_plan.py) and a GPU run may choose among.
SPLIT_TILE_CANDIDATES = (
    SplitBlocks(16, 16, 64, 4),
    SplitBlocks(32, 16, 64, 4),
    SplitBlocks(64, 16, 64, 4),
    SplitBlocks(32, 32, 64, 4),
    SplitBlocks(64, 32, 64, 8),
    SplitBlocks(32, 16, 128, 4),
)


@triton.jit
def grid_barrier(arrivals, target):
    """Wait until `arrivals` (an int32 counter that only grows, zeroed before the launch)
    reaches `target`: every program adds 1 when it arrives, so barrier k of P programs
    waits for (k + 1) P. Needs every program resident at once."""
    tl.debug_barrier()  # this program's stores are done before it announces its arrival
    seen = tl.atomic_add(arrivals, 1, sem="release", scope="gpu") + 1
    while seen < target:
        seen = tl.atomic_add(arrivals, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


def resident_programs(n_regs: int, shared_bytes: int, num_warps: int, sm_count: int) -> int:
    """How many programs of a compiled kernel fit on the GPU at once (sm_90 limits): what a
    persistent launch with a grid barrier may ask for at the most."""
    by_registers = REGISTERS_PER_SM // max(1, n_regs * 32 * num_warps)
    by_shared = SHARED_PER_SM // shared_bytes if shared_bytes else BLOCKS_PER_SM
    return sm_count * max(0, min(by_registers, by_shared, BLOCKS_PER_SM))


def persistent_grid(n_items: int, n_regs: int, shared_bytes: int, num_warps: int, sm_count: int) -> int:
    """The persistent launch's program count: every work item's program if they all fit at
    once, else as many as fit (each then takes several items per step)."""
    fits = resident_programs(n_regs, shared_bytes, num_warps, sm_count)
    if fits < 1:
        raise RuntimeError("split persistent kernel: not one program fits on an SM with these tiles")
    return min(n_items, fits)


def launch_split(
    step_kernel,
    persistent_kernel,
    args: tuple,
    steps: Iterable[int],
    grid: tuple[int, int],
    mode: str,
    blocks: SplitBlocks,
    weight_hh: torch.Tensor,
    programs: int | None = None,
) -> None:
    """Run a split kernel pair in `mode`. step_kernel(t, *args) does step t on grid (J, G),
    once per t of `steps` (a bound the host knows); persistent_kernel(arrivals, *args) does
    every step in one launch of `programs` programs (by default as many as fit at once).
    weight_hh [4H, H] sets the dot precision and the device. An empty grid (no rows)
    launches nothing."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"split kernels: mode must be one of {SPLIT_MODES}, got {mode!r}")
    if grid[0] * grid[1] == 0:
        return
    meta, device = blocks.meta(weight_hh.dtype), weight_hh.device
    if mode == "split-stepped":
        for t in steps:
            step_kernel[grid](t, *args, **meta)
        return
    arrivals = torch.zeros(1, dtype=torch.int32, device=device)
    if programs is None:
        compiled = persistent_kernel.warmup(arrivals, *args, grid=(1,), **meta)
        programs = persistent_grid(
            grid[0] * grid[1], compiled.n_regs, compiled.metadata.shared, blocks.num_warps, multiprocessors(device)
        )
    persistent_kernel[(programs,)](arrivals, *args, **meta)
