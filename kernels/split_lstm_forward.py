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

The step body (`_split_step`) runs in the two launch shapes of kernels/split_grid.py:
stepped (a launch per step) and persistent (one launch, a grid barrier per step).

The state goes through the same packed slots as the tiled kernel (h_prev [S, H], c_prev
[S, H] float32, step_chars [S]; row r's step t at offsets[r] + t), so the tiled backward
takes the split forward's outputs unchanged.
"""

import triton
import triton.language as tl

from charfast.kernels.char_lstm_forward import forward_outputs
from charfast.kernels.lstm_tile import lstm_tile_start, lstm_tile_step
from charfast.kernels.row_blocks import load_row_block
from charfast.kernels.split_grid import SplitBlocks, grid_barrier, launch_split


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
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(g, sorted_lengths, offsets, order, U, BLOCK_U)
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
    blocks = blocks or SplitBlocks()
    n_rows, hidden = sorted_ids.shape[0], weight_hh.shape[1]
    h_out, h_prev, c_prev, step_chars = forward_outputs(weight_hh, n_rows, step_capacity)
    args = (gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets, order)
    args += (h_out, h_prev, c_prev, step_chars, n_rows, hidden, table_chars.shape[1], gate_table.shape[0])
    grid = (triton.cdiv(hidden, blocks.hidden), triton.cdiv(n_rows, blocks.rows))
    steps = range(table_chars.shape[1])  # the table's width bounds every row's length
    launch_split(
        split_lstm_step_kernel, split_lstm_persistent_kernel, args, steps, grid, mode, blocks, weight_hh, programs
    )
    return h_out, h_prev, c_prev, step_chars
