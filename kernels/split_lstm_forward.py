"""Forward char-LSTM with W_hh split across the whole GPU: each step's gates are computed by
many programs at once, one per (slice of hidden units, group of rows), so no program ever
streams all of W_hh per step (the tiled kernel's bound: one SM pulling 4H x H weights
through L2 per step).

Dimensions: U distinct tokens (rows, sorted longest first), S packed steps, C chars, H
hidden, J = cdiv(H, BLOCK_H) hidden slices, G = cdiv(U, BLOCK_U) row groups.

A work item (slice j, group g) owns the four gate columns (i, f, g, o) of hidden units
[j BLOCK_H, (j + 1) BLOCK_H) for rows [g BLOCK_U, (g + 1) BLOCK_U), so the cell update
stays local: per step it reads h_{t-1} of its rows (all H units, written by every slice
the step before) and its slice of c_{t-1}, and writes its slice of h_t and c_t. Between
two steps every slice must have written h_t: a barrier over all programs.

Two launch shapes of the same step body (`_split_step`):
- stepped: one launch per step (the launch boundary is the barrier). Runs under
  TRITON_INTERPRET=1, where programs run one after another, and in a CUDA graph.
- persistent: one launch; each program takes work items p, p + P, ... every step and
  waits at a grid barrier (a monotonic arrival counter: all P programs must be resident
  at once, so the launcher sizes P by what fits). With P = 1 it runs in the interpreter.

The state goes through the same packed slots as the tiled kernel (h_prev [S, H], c_prev
[S, H] float32, step_chars [S]; row r's step t at offsets[r] + t), so the tiled backward
takes the split forward's outputs unchanged.
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import dot_precision, multiprocessors
from charfast.kernels.lstm_tile import lstm_tile_start, lstm_tile_step


@triton.jit
def _split_step(
    t,
    g,
    j,
    gate_table,  # [C, 4H]
    weight_hh,  # [4H, H]
    table_chars,  # [V, W]
    sorted_ids,  # [U] int64
    sorted_lengths,  # [U] int64, longest first
    offsets,  # [U] int64
    order,  # [U] int64
    h_out,  # [U, H]
    h_prev,  # [S, H]
    c_prev,  # [S, H] float32
    step_chars,  # [S] int32
    U,
    H,
    table_width,
    n_chars,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Step t of the rows of group g, hidden slice j."""
    rows = g * BLOCK_U + tl.arange(0, BLOCK_U)  # [BU]
    row_ok = rows < U
    lengths = tl.load(sorted_lengths + rows, mask=row_ok, other=0)
    first_slot = tl.load(offsets + rows, mask=row_ok, other=0)
    out_rows = tl.load(order + rows, mask=row_ok, other=0)
    tokens = tl.load(sorted_ids + rows, mask=row_ok, other=0)
    cols = j * BLOCK_H + tl.arange(0, BLOCK_H)  # [BH]
    if t == 0:  # nothing to read yet: h_{-1} = c_{-1} = 0 in the first slot, h = 0 for empty rows
        starts, empty = row_ok & (lengths > 0), row_ok & (lengths == 0)
        lstm_tile_start(h_prev, c_prev, h_out, first_slot, out_rows, starts, empty, cols, H, BLOCK_U, BLOCK_H)
        tl.debug_barrier()  # the step reads the c slots just zeroed, maybe by other threads
    active = row_ok & (lengths > t)  # [BU]
    # The table is data: whatever it holds, reads stay inside it and inside the gate table
    # (inactive rows read token 0's char at t < W, never used).
    chars = tl.load(table_chars + tokens * table_width + tl.minimum(t, table_width - 1)).to(tl.int64)
    chars = tl.minimum(tl.maximum(chars, 0), n_chars - 1)
    slot = first_slot + t  # [BU]
    if j == 0:
        tl.store(step_chars + slot, chars.to(tl.int32), mask=active)
    continues, finishes = active & (lengths > t + 1), active & (lengths == t + 1)
    lstm_tile_step(
        t, gate_table, weight_hh, h_prev, c_prev, h_out, chars, slot, out_rows, active, continues, finishes, cols, H,
        BLOCK_K, DOT_PRECISION,
    )  # fmt: skip


@triton.jit
def split_lstm_step_kernel(
    t,
    gate_table,
    weight_hh,
    table_chars,
    sorted_ids,
    sorted_lengths,
    offsets,
    order,
    h_out,
    h_prev,
    c_prev,
    step_chars,
    U,
    H,
    table_width,
    n_chars,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Step t, grid (J, G): program (j, g) does work item (j, g); a group whose longest row
    has ended does nothing (rows are sorted longest first)."""
    j, g = tl.program_id(0), tl.program_id(1)
    if tl.load(sorted_lengths + g * BLOCK_U) > t or t == 0:
        _split_step(
            t, g, j, gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets, order, h_out, h_prev,
            c_prev, step_chars, U, H, table_width, n_chars, BLOCK_U, BLOCK_H, BLOCK_K, DOT_PRECISION,
        )  # fmt: skip


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


@triton.jit
def split_lstm_persistent_kernel(
    arrivals,  # [1] int32, zeroed
    gate_table,
    weight_hh,
    table_chars,
    sorted_ids,
    sorted_lengths,
    offsets,
    order,
    h_out,
    h_prev,
    c_prev,
    step_chars,
    U,
    H,
    table_width,
    n_chars,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Every step in one launch: program p takes work items p, p + P, ... of the J x G
    (slice, group) items each step, then waits for all P programs at the grid barrier."""
    p, n_programs = tl.program_id(0), tl.num_programs(0)
    n_slices = tl.cdiv(H, BLOCK_H)
    n_items = n_slices * tl.cdiv(U, BLOCK_U)
    steps = tl.load(sorted_lengths)  # the longest row: the first (never read back by the host)
    for t in range(0, tl.maximum(steps, 1)):
        for item in range(p, n_items, n_programs):
            g = item // n_slices
            if tl.load(sorted_lengths + g * BLOCK_U) > t or t == 0:
                _split_step(
                    t, g, item % n_slices, gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets,
                    order, h_out, h_prev, c_prev, step_chars, U, H, table_width, n_chars, BLOCK_U, BLOCK_H, BLOCK_K,
                    DOT_PRECISION,
                )  # fmt: skip
        grid_barrier(arrivals, (t + 1) * n_programs)


# ------------------------------------------------------------------ launch
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


# The tiles the sm_90 compile checks (benchmarks/split_plan.py) and a GPU run may choose among.
SPLIT_TILE_CANDIDATES = (
    SplitBlocks(16, 16, 64, 4),
    SplitBlocks(32, 16, 64, 4),
    SplitBlocks(64, 16, 64, 4),
    SplitBlocks(32, 32, 64, 4),
    SplitBlocks(64, 32, 64, 8),
    SplitBlocks(32, 16, 128, 4),
)


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
        raise RuntimeError("split_lstm_persistent_kernel: not one program fits on an SM with these tiles")
    return min(n_items, fits)


def launch_split_lstm_forward(
    gate_table,
    weight_hh,
    table_chars,
    sorted_ids,
    sorted_lengths,
    offsets,
    order,
    step_capacity: int,
    mode: str,
    blocks: SplitBlocks | None = None,
    programs: int | None = None,
):
    """The split forward; returns (h_out [U, H], h_prev [S_max, H], c_prev [S_max, H],
    step_chars [S_max]) as launch_char_lstm_forward does. mode: "split-stepped" (one launch
    per step of the table's width: no host read, capturable) or "split-persistent" (one
    launch; `programs` overrides its size, e.g. 1 under the interpreter)."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"launch_split_lstm_forward: mode must be one of {SPLIT_MODES}, got {mode!r}")
    blocks = blocks or SplitBlocks()
    n_rows, hidden = sorted_ids.shape[0], weight_hh.shape[1]
    h_out = weight_hh.new_empty(n_rows, hidden)
    h_prev = weight_hh.new_empty(step_capacity, hidden)
    c_prev = weight_hh.new_empty(step_capacity, hidden, dtype=torch.float32)
    step_chars = torch.empty(step_capacity, dtype=torch.int32, device=weight_hh.device)
    if n_rows == 0:
        return h_out, h_prev, c_prev, step_chars
    args = (gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets, order)
    args += (h_out, h_prev, c_prev, step_chars, n_rows, hidden, table_chars.shape[1], gate_table.shape[0])
    meta = dict(
        BLOCK_U=blocks.rows,
        BLOCK_H=blocks.hidden,
        BLOCK_K=blocks.reduction,
        DOT_PRECISION=dot_precision(weight_hh.dtype),
        num_warps=blocks.num_warps,
    )
    n_slices, n_groups = triton.cdiv(hidden, blocks.hidden), triton.cdiv(n_rows, blocks.rows)
    if mode == "split-stepped":
        for t in range(table_chars.shape[1]):  # the table's width bounds every row's length
            split_lstm_step_kernel[(n_slices, n_groups)](t, *args, **meta)
        return h_out, h_prev, c_prev, step_chars
    arrivals = torch.zeros(1, dtype=torch.int32, device=weight_hh.device)
    if programs is None:
        compiled = split_lstm_persistent_kernel.warmup(arrivals, *args, grid=(1,), **meta)
        programs = persistent_grid(
            n_slices * n_groups, compiled.n_regs, compiled.metadata.shared, blocks.num_warps,
            multiprocessors(weight_hh.device),
        )  # fmt: skip
    split_lstm_persistent_kernel[(programs,)](arrivals, *args, **meta)
    return h_out, h_prev, c_prev, step_chars
