"""Backward char-LSTM with W_hh split across the whole GPU, the split forward's mirror: each
reverse step is shared by J x G work items (hidden slice j, row group g), so no program
streams all of W_hh per step.

Dimensions as in split_lstm_forward.py: U rows (sorted longest first), S packed steps, H
hidden, J = cdiv(H, BLOCK_H), G = cdiv(U, BLOCK_U).

Input `gates` [S, 4H] float32 holds every step's pre-activations (recomputed before the
launch, as for the tiled backward) and is overwritten with dgates in place. Work item
(j, g) at reverse step t:
  1. dh_t of its slice: the output's gradient at a row's last step, else
     dgates_{t+1} [BU, 4H] @ W_hh[:, slice] (all 4H columns, written by every slice the
     step before: the only dependence between items, hence one barrier per step);
  2. its four gate slices' dgates_t and dc_{t-1}, elementwise (lstm_tile_gate_grads).
dc stays with its slice: a float32 scratch dc_carry [U, H] carries it between steps.
Every slice reads all 4H dgates of its rows, so that read is the step's largest: it comes
from a ring dgates_ring [2, U, 4H] in W_hh's dtype (the dot's operand type anyway: half
the bytes of the float32 slots in bf16, and rows side by side), step t's dgates in half
t % 2. Step t reads half (t + 1) % 2 and writes half t % 2: no item reads what another
writes in the same step.

It runs in the two launch shapes of kernels/split_grid.py, from the table's width (or the
longest row, persistent) down to step 0.
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.lstm_tile import lstm_tile_gate_grads, lstm_tile_recurrent_grad
from charfast.kernels.row_blocks import load_row_block
from charfast.kernels.split_grid import SplitBlocks, grid_barrier, launch_split


@triton.jit
def _split_backward_step(
    t,
    g,
    j,
    gates,  # [S, 4H] float32: pre-activations in, dgates out
    c_prev,  # [S, H] float32
    weight_hh,  # [4H, H]
    grad_h,  # [U, H] gradient of h_out (output row order)
    sorted_lengths,  # [U] int64, longest first
    offsets,  # [U] int64
    order,  # [U] int64
    dc_carry,  # [U, H] float32 scratch: dL/dc_t of each sorted row
    dgates_ring,  # [2, U, 4H] W_hh's dtype: dgates of steps t + 1 and t by sorted row
    U,
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Reverse step t of the rows of group g, hidden slice j."""
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(g, sorted_lengths, offsets, order, U, BLOCK_U)
    slot = first_slot + t  # [BU]
    cols = j * BLOCK_H + tl.arange(0, BLOCK_H)  # [BH]
    col_ok = cols < H
    active = row_ok & (lengths > t)  # [BU]
    continues, finishes = active & (lengths > t + 1), active & (lengths == t + 1)
    tile_ok = active[:, None] & col_ok[None, :]  # [BU, BH]
    dh = tl.load(grad_h + out_rows[:, None] * H + cols[None, :], mask=finishes[:, None] & col_ok[None, :], other=0.0)
    dh = dh.to(tl.float32)
    if tl.load(sorted_lengths + g * BLOCK_U) > t + 1:  # some row of the group goes on past t
        next_half = dgates_ring + ((t + 1) % 2) * U * (4 * H)  # [U, 4H]
        from_next = lstm_tile_recurrent_grad(
            next_half, weight_hh, rows, continues, cols, H, BLOCK_U, BLOCK_H, BLOCK_K, DOT_PRECISION
        )  # [BU, BH]
        dh = tl.where(continues[:, None], from_next, dh)
    carry = rows[:, None] * H + cols[None, :]  # [BU, BH]
    dc_next = tl.load(dc_carry + carry, mask=continues[:, None] & col_ok[None, :], other=0.0)
    dc_last = lstm_tile_gate_grads(gates, c_prev, slot, cols, tile_ok, dh, dc_next, H)[4]
    tl.store(dc_carry + carry, dc_last, mask=tile_ok)
    tl.debug_barrier()  # the copy reads the dgates just stored, maybe by other threads
    half = dgates_ring + (t % 2) * U * (4 * H)  # [U, 4H]
    for gate in tl.static_range(4):
        dgates = tl.load(gates + slot[:, None] * (4 * H) + gate * H + cols[None, :], mask=tile_ok, other=0.0)
        tl.store(
            half + rows[:, None] * (4 * H) + gate * H + cols[None, :],
            dgates.to(dgates_ring.dtype.element_ty),
            mask=tile_ok,
        )


@triton.jit
def split_lstm_backward_step_kernel(
    t,
    gates,
    c_prev,
    weight_hh,
    grad_h,
    sorted_lengths,
    offsets,
    order,
    dc_carry,
    dgates_ring,
    U,
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Reverse step t, grid (J, G): program (j, g) does work item (j, g); a group whose
    longest row ends before t does nothing."""
    j, g = tl.program_id(0), tl.program_id(1)
    if tl.load(sorted_lengths + g * BLOCK_U) > t:
        _split_backward_step(
            t, g, j, gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order, dc_carry, dgates_ring, U, H,
            BLOCK_U, BLOCK_H, BLOCK_K, DOT_PRECISION,
        )  # fmt: skip


@triton.jit
def split_lstm_backward_persistent_kernel(
    arrivals,  # [1] int32, zeroed
    gates,
    c_prev,
    weight_hh,
    grad_h,
    sorted_lengths,
    offsets,
    order,
    dc_carry,
    dgates_ring,
    U,
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Every reverse step in one launch: program p takes work items p, p + P, ... of the
    J x G items each step, then waits for all P programs at the grid barrier."""
    p, n_programs = tl.program_id(0), tl.num_programs(0)
    n_slices = tl.cdiv(H, BLOCK_H)
    n_items = n_slices * tl.cdiv(U, BLOCK_U)
    steps = tl.load(sorted_lengths)  # the longest row: the first (never read back by the host)
    for step in range(0, steps):
        t = steps - 1 - step
        for item in range(p, n_items, n_programs):
            g = item // n_slices
            if tl.load(sorted_lengths + g * BLOCK_U) > t:
                _split_backward_step(
                    t, g, item % n_slices, gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order,
                    dc_carry, dgates_ring, U, H, BLOCK_U, BLOCK_H, BLOCK_K, DOT_PRECISION,
                )  # fmt: skip
        grid_barrier(arrivals, (step + 1) * n_programs)


def launch_split_lstm_backward(
    gates,
    c_prev,
    weight_hh,
    grad_h,
    sorted_lengths,
    offsets,
    order,
    max_length: int,
    mode: str,
    blocks: SplitBlocks | None = None,
    programs: int | None = None,
):
    """Turn `gates` [S, 4H] float32 (pre-activations) into dgates in place, as
    launch_char_lstm_backward does. max_length: a bound on every row's length the host
    knows (the table's width: the stepped mode launches that many steps). mode and
    programs as for launch_split_lstm_forward."""
    blocks = blocks or SplitBlocks()
    n_rows, hidden = order.shape[0], weight_hh.shape[1]
    dc_carry = torch.empty(n_rows, hidden, dtype=torch.float32, device=gates.device)
    dgates_ring = weight_hh.new_empty(2, n_rows, 4 * hidden)
    args = (gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order, dc_carry, dgates_ring, n_rows, hidden)
    grid = (triton.cdiv(hidden, blocks.hidden), triton.cdiv(n_rows, blocks.rows))
    launch_split(
        split_lstm_backward_step_kernel, split_lstm_backward_persistent_kernel, args, reversed(range(max_length)),
        grid, mode, blocks, weight_hh, programs,
    )  # fmt: skip
    return gates
