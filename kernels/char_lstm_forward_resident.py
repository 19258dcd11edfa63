"""Forward char-LSTM kernel with the state in registers: for hidden sizes whose whole row
fits one tile (blocks.LstmBlocks.resident).

Same contract, layout and outputs as char_lstm_forward.py (read that first). The
difference: h and c of a program's BLOCK_U rows stay in registers from step to step, so
no step reads state back from global memory and no barrier separates the steps; the
serial chain per step is one W_hh read (L1/L2), four dots and the cell. The state is
still written to the packed h_prev / c_prev slots, which the backward needs.

The gates are finished one after another (i and g, then f, then o), so at most one
[BLOCK_U, BLOCK_H] accumulator is live next to h, c and i * g.
"""

import triton
import triton.language as tl

from charfast.kernels.activations import sigmoid, tanh
from charfast.kernels.row_blocks import load_row_block


@triton.jit
def _gate(h_dot, gate_row, w_tile, tile_ok, w_ok, gate: tl.constexpr, H, DOT_PRECISION: tl.constexpr):
    """Pre-activation [BU, BH] float32 of one gate: G[char] + h_{t-1} @ W_gate^T."""
    acc = tl.load(gate_row + gate * H, mask=tile_ok, other=0.0).to(tl.float32)
    w = tl.load(w_tile + gate * H * H, mask=w_ok, other=0.0)  # [BH(k), BH(j)] = W_hh[gate * H + j, k]
    return tl.dot(h_dot, w, acc, input_precision=DOT_PRECISION)


@triton.jit
def char_lstm_forward_resident_kernel(
    gate_table,  # [C, 4H] parameter dtype
    weight_hh,  # [4H, H] parameter dtype
    table_chars,  # [V, W]
    sorted_ids,  # [U] int64, longest first
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64
    order,  # [U] int64
    h_out,  # [U, H] parameter dtype
    h_prev,  # [S, H] parameter dtype
    c_prev,  # [S, H] float32
    step_chars,  # [S] int32
    U,
    H,
    table_width,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,  # >= H: one tile holds a whole row
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(sorted_lengths, offsets, order, U, BLOCK_U)  # [BU]
    tokens = tl.load(sorted_ids + rows, mask=row_ok, other=0)  # [BU]
    cols = tl.arange(0, BLOCK_H)  # [BH] hidden units; also the reduction index k
    col_ok = cols < H
    w_tile = weight_hh + cols[None, :] * H + cols[:, None]  # [BH(k), BH(j)] W_hh^T of gate i
    w_ok = col_ok[:, None] & col_ok[None, :]
    out_at = h_out + out_rows[:, None] * H + cols[None, :]  # [BU, BH]

    # h = 0 for zero-length rows (every element of h_out is written).
    empty = row_ok & (lengths == 0)
    tl.store(out_at, tl.zeros((BLOCK_U, BLOCK_H), dtype=h_out.dtype.element_ty), mask=empty[:, None] & col_ok[None, :])

    h = tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32)  # h_{t-1}, c_{t-1}: zero before step 0
    c = tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32)
    steps = tl.max(lengths, axis=0)  # this block's longest row
    for t in range(0, steps):
        active = row_ok & (lengths > t)  # [BU]
        # Unmasked (see char_lstm_forward.py): t < table_width and masked rows read token 0.
        chars = tl.load(table_chars + tokens * table_width + t).to(tl.int64)  # [BU]
        slot = first_slot + t  # [BU]
        tile_ok = active[:, None] & col_ok[None, :]  # [BU, BH]
        state = slot[:, None] * H + cols[None, :]  # [BU, BH] this step's slot
        tl.store(step_chars + slot, chars.to(tl.int32), mask=active)
        h_dot = h.to(h_prev.dtype.element_ty)  # the matmul operand, as the backward re-reads it
        tl.store(h_prev + state, h_dot, mask=tile_ok)
        tl.store(c_prev + state, c, mask=tile_ok)
        # Rows that have ended compute on masked (zero) gate rows; their state is never stored
        # again, and rows do not mix in a row-by-row product.
        gate_row = gate_table + chars[:, None] * (4 * H) + cols[None, :]  # [BU, BH]
        i_times_g = sigmoid(_gate(h_dot, gate_row, w_tile, tile_ok, w_ok, 0, H, DOT_PRECISION))
        i_times_g *= tanh(_gate(h_dot, gate_row, w_tile, tile_ok, w_ok, 2, H, DOT_PRECISION))
        c = sigmoid(_gate(h_dot, gate_row, w_tile, tile_ok, w_ok, 1, H, DOT_PRECISION)) * c + i_times_g
        h = sigmoid(_gate(h_dot, gate_row, w_tile, tile_ok, w_ok, 3, H, DOT_PRECISION)) * tanh(c)
        finishes = active & (lengths == t + 1)  # step t is their last char
        tl.store(out_at, h.to(h_out.dtype.element_ty), mask=finishes[:, None] & col_ok[None, :])
