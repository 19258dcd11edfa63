"""One LSTM step of one tile, forward and backward, shared by the tiled and the split kernels.

A tile is BLOCK_U rows x BLOCK_H hidden units. Its four gate slices (i, f, g, o) start
from the gate table's rows of the step's chars, gain h_{t-1} @ W_hh^T (accumulated over
BLOCK_K-wide tiles of h_{t-1}, read from the packed slots), then the cell updates the
tile's c and h; c_t and h_t go to the next slot of the rows that continue, h to the
output of the rows whose last char this is. State and accumulation are float32.

Dimensions: C chars, H hidden, S packed steps; [BU] rows, [BH] hidden units of the tile.
"""

import triton
import triton.language as tl

from charfast.kernels.activations import sigmoid, tanh


@triton.jit
def lstm_tile_step(
    t,
    gate_table,  # [C, 4H]
    weight_hh,  # [4H, H]
    h_prev,  # [S, H] h_{t-1} of every step
    c_prev,  # [S, H] float32 c_{t-1} of every step
    h_out,  # [U, H]
    chars,  # [BU] int64 the rows' chars at step t
    slot,  # [BU] the rows' packed slot of step t
    out_rows,  # [BU] the rows' output rows
    active,  # [BU] rows that have a char at step t
    continues,  # [BU] active rows whose state feeds step t + 1
    finishes,  # [BU] active rows whose last char is step t's
    cols,  # [BH] the tile's hidden units
    H,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    col_ok = cols < H
    tile_ok = active[:, None] & col_ok[None, :]  # [BU, BH]
    gate_row = gate_table + chars[:, None] * (4 * H) + cols[None, :]  # [BU, BH]
    acc_i = tl.load(gate_row, mask=tile_ok, other=0.0).to(tl.float32)
    acc_f = tl.load(gate_row + H, mask=tile_ok, other=0.0).to(tl.float32)
    acc_g = tl.load(gate_row + 2 * H, mask=tile_ok, other=0.0).to(tl.float32)
    acc_o = tl.load(gate_row + 3 * H, mask=tile_ok, other=0.0).to(tl.float32)
    if t > 0:  # h_{-1} = 0: step 0 has no recurrent term
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)  # [BK]
            k_ok = ks < H
            h_tile = tl.load(
                h_prev + slot[:, None] * H + ks[None, :], mask=active[:, None] & k_ok[None, :], other=0.0
            )  # [BU, BK]
            # W_hh^T tile [BK, BH] of each gate: element (k, j) = W_hh[gate * H + j, k]
            w_tile = weight_hh + cols[None, :] * H + ks[:, None]
            w_ok = k_ok[:, None] & col_ok[None, :]
            acc_i = tl.dot(h_tile, tl.load(w_tile, mask=w_ok, other=0.0), acc_i, input_precision=DOT_PRECISION)
            acc_f = tl.dot(h_tile, tl.load(w_tile + H * H, mask=w_ok, other=0.0), acc_f, input_precision=DOT_PRECISION)
            acc_g = tl.dot(
                h_tile, tl.load(w_tile + 2 * H * H, mask=w_ok, other=0.0), acc_g, input_precision=DOT_PRECISION
            )
            acc_o = tl.dot(
                h_tile, tl.load(w_tile + 3 * H * H, mask=w_ok, other=0.0), acc_o, input_precision=DOT_PRECISION
            )
    state = slot[:, None] * H + cols[None, :]  # [BU, BH] this step's slot
    c_last = tl.load(c_prev + state, mask=tile_ok, other=0.0)  # [BU, BH] c_{t-1}
    c, h = lstm_cell(acc_i, acc_f, acc_g, acc_o, c_last)
    next_ok = continues[:, None] & col_ok[None, :]
    tl.store(c_prev + state + H, c, mask=next_ok)  # slot t + 1 holds c_t
    tl.store(h_prev + state + H, h.to(h_prev.dtype.element_ty), mask=next_ok)
    tl.store(
        h_out + out_rows[:, None] * H + cols[None, :],
        h.to(h_out.dtype.element_ty),
        mask=finishes[:, None] & col_ok[None, :],
    )


@triton.jit
def lstm_tile_start(
    h_prev,
    c_prev,
    h_out,
    first_slot,  # [BU] the rows' packed slot of step 0
    out_rows,  # [BU]
    starts,  # [BU] rows with at least one char: their step 0 reads h = c = 0
    empty,  # [BU] zero-length rows: their output h is 0
    cols,  # [BH]
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Before step 0 of one tile: zero h_{-1}, c_{-1} in the first slot (the backward reads
    them) and the output of zero-length rows, so every element of h_out is written."""
    col_ok = cols < H
    zeros = tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32)
    at_start = starts[:, None] & col_ok[None, :]
    tl.store(h_prev + first_slot[:, None] * H + cols[None, :], zeros.to(h_prev.dtype.element_ty), mask=at_start)
    tl.store(c_prev + first_slot[:, None] * H + cols[None, :], zeros, mask=at_start)
    tl.store(
        h_out + out_rows[:, None] * H + cols[None, :],
        zeros.to(h_out.dtype.element_ty),
        mask=empty[:, None] & col_ok[None, :],
    )


@triton.jit
def lstm_tile_gate_grads(
    gates,  # [S, 4H] float32: pre-activations in, dgates out
    c_prev,  # [S, H] float32 c_{t-1} of every step
    slot,  # [BU] the rows' packed slot of step t
    cols,  # [BH] the tile's hidden units
    tile_ok,  # [BU, BH] active rows x hidden units in range
    dh,  # [BU, BH] float32 dL/dh_t
    dc_next,  # [BU, BH] float32 dL/dc_t from step t + 1 (0 at a row's last step)
    H,
):
    """The backward of one tile's step t, shared by every backward kernel: overwrite its
    four gate slices of `gates` at `slot` with the gate gradients and return them, then
    dL/dc_{t-1}, each [BU, BH] (c_t is recomputed from the pre-activations and c_{t-1})."""
    gate_at = gates + slot[:, None] * (4 * H) + cols[None, :]  # [BU, BH]
    i = sigmoid(tl.load(gate_at, mask=tile_ok, other=0.0))
    f = sigmoid(tl.load(gate_at + H, mask=tile_ok, other=0.0))
    g = tanh(tl.load(gate_at + 2 * H, mask=tile_ok, other=0.0))
    o = sigmoid(tl.load(gate_at + 3 * H, mask=tile_ok, other=0.0))
    c_last = tl.load(c_prev + slot[:, None] * H + cols[None, :], mask=tile_ok, other=0.0)
    tanh_c = tanh(f * c_last + i * g)
    dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
    d_i, d_f = dc * g * i * (1.0 - i), dc * c_last * f * (1.0 - f)
    d_g, d_o = dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)
    tl.store(gate_at, d_i, mask=tile_ok)
    tl.store(gate_at + H, d_f, mask=tile_ok)
    tl.store(gate_at + 2 * H, d_g, mask=tile_ok)
    tl.store(gate_at + 3 * H, d_o, mask=tile_ok)
    return d_i, d_f, d_g, d_o, dc * f


@triton.jit
def lstm_cell(pre_i, pre_f, pre_g, pre_o, c_last):
    """(c_t, h_t) of the LSTM cell from its four float32 gate pre-activations and c_{t-1}."""
    c = sigmoid(pre_f) * c_last + sigmoid(pre_i) * tanh(pre_g)
    return c, sigmoid(pre_o) * tanh(c)


@triton.jit
def lstm_tile_recurrent_grad(
    gates,  # [*, 4H] dgates of step t by `slot` (float32 slots, or a copy in W_hh's dtype)
    weight_hh,  # [4H, H]
    slot,  # [BU] the rows' index into `gates`
    rows_ok,  # [BU] rows whose dgates at `slot` exist
    cols,  # [BH] the tile's hidden units
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """dL/dh_{t-1} [BU, BH] float32 of the tile: dgates_t [BU, 4H] @ W_hh[:, cols], reduced
    over BLOCK_K-wide tiles of the 4H gate units (dgates cast to W_hh's dtype for the dot);
    0 for rows not in `rows_ok`."""
    col_ok = cols < H
    acc = tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32)
    for n0 in range(0, 4 * H, BLOCK_K):
        ns = n0 + tl.arange(0, BLOCK_K)  # [BK] over the 4H gate units
        n_ok = ns < 4 * H
        dgates = tl.load(
            gates + slot[:, None] * (4 * H) + ns[None, :], mask=rows_ok[:, None] & n_ok[None, :], other=0.0
        )  # [BU, BK]
        w_tile = tl.load(weight_hh + ns[:, None] * H + cols[None, :], mask=n_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(dgates.to(weight_hh.dtype.element_ty), w_tile, acc, input_precision=DOT_PRECISION)
    return acc
