"""Backward char-LSTM kernel with the carried gradients in registers: for hidden sizes
whose whole row fits one tile (blocks.LstmBlocks.resident).

Same contract as char_lstm_backward.py (read that first): `gates` [S, 4H] float32 holds
the recomputed pre-activations and is overwritten with dgates. The difference: dh and dc
of a program's rows stay in registers across steps, so there are no scratch rows, no
barriers and no re-reads of dgates; per step the chain is the cell's gradient and
dh_{t-1} = sum over the four gates of dgates_gate @ W_gate.
"""

import triton
import triton.language as tl

from charfast.kernels.activations import sigmoid, tanh
from charfast.kernels.row_blocks import load_row_block


@triton.jit
def _dh_from_gate(acc, dgate, w_tile, w_ok, gate: tl.constexpr, H, DOT_PRECISION: tl.constexpr):
    """acc + dgate [BU, BH(j)] @ W_gate [BH(j), BH(k)] (W_gate = W_hh[gate * H : (gate + 1) * H])."""
    w = tl.load(w_tile + gate * H * H, mask=w_ok, other=0.0)
    return tl.dot(dgate.to(w.dtype), w, acc, input_precision=DOT_PRECISION)


@triton.jit
def char_lstm_backward_resident_kernel(
    gates,  # [S, 4H] float32: pre-activations in, dgates out
    c_prev,  # [S, H] float32
    weight_hh,  # [4H, H] parameter dtype
    grad_h,  # [U, H] gradient of h_out (output row order)
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64
    order,  # [U] int64
    U,
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,  # >= H: one tile holds a whole row
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(sorted_lengths, offsets, order, U, BLOCK_U)  # [BU]
    cols = tl.arange(0, BLOCK_H)  # [BH]
    col_ok = cols < H
    w_tile = weight_hh + cols[:, None] * H + cols[None, :]  # [BH(j), BH(k)] W_hh of gate i
    w_ok = col_ok[:, None] & col_ok[None, :]

    # A row that has not started (t >= its length) keeps dh = grad of its output, dc = 0.
    dh = tl.load(grad_h + out_rows[:, None] * H + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    dh = dh.to(tl.float32)  # [BU, BH] dL/dh_t
    dc = tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32)  # [BU, BH] dL/dc_t from step t + 1
    steps = tl.max(lengths, axis=0)
    for step in range(0, steps):
        t = steps - 1 - step
        active = row_ok & (lengths > t)  # [BU]
        slot = first_slot + t  # [BU]
        tile_ok = active[:, None] & col_ok[None, :]  # [BU, BH]
        gate_at = gates + slot[:, None] * (4 * H) + cols[None, :]  # [BU, BH]
        i = sigmoid(tl.load(gate_at, mask=tile_ok, other=0.0))
        f = sigmoid(tl.load(gate_at + H, mask=tile_ok, other=0.0))
        g = tanh(tl.load(gate_at + 2 * H, mask=tile_ok, other=0.0))
        o = sigmoid(tl.load(gate_at + 3 * H, mask=tile_ok, other=0.0))
        c_last = tl.load(c_prev + slot[:, None] * H + cols[None, :], mask=tile_ok, other=0.0)
        tanh_c = tanh(f * c_last + i * g)
        dc_t = dc + dh * o * (1.0 - tanh_c * tanh_c)
        d_i = dc_t * g * i * (1.0 - i)
        d_f = dc_t * c_last * f * (1.0 - f)
        d_g = dc_t * i * (1.0 - g * g)
        d_o = dh * tanh_c * o * (1.0 - o)
        tl.store(gate_at, d_i, mask=tile_ok)
        tl.store(gate_at + H, d_f, mask=tile_ok)
        tl.store(gate_at + 2 * H, d_g, mask=tile_ok)
        tl.store(gate_at + 3 * H, d_o, mask=tile_ok)
        dc = tl.where(tile_ok, dc_t * f, dc)
        if t > 0:  # dh_{t-1}; step 0 has no h_{-1} to feed
            dh_last = _dh_from_gate(
                tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32), d_i, w_tile, w_ok, 0, H, DOT_PRECISION
            )
            dh_last = _dh_from_gate(dh_last, d_f, w_tile, w_ok, 1, H, DOT_PRECISION)
            dh_last = _dh_from_gate(dh_last, d_g, w_tile, w_ok, 2, H, DOT_PRECISION)
            dh_last = _dh_from_gate(dh_last, d_o, w_tile, w_ok, 3, H, DOT_PRECISION)
            dh = tl.where(tile_ok, dh_last, dh)
