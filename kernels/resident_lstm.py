"""The resident char-LSTM kernels: W_hh loaded once per program and kept on chip for every
step, for small hidden sizes (the default, 128, among them).

Dimensions as in char_lstm_forward.py: U rows (sorted longest first), S packed steps, H
hidden; HP = H padded to a power of two (>= 16, what tl.dot takes); [BU] rows of a block.

The tiled kernels stream W_hh from L2 at every step of every program: at H = 128 that is
128 KB per program per step, on the chain of dependent steps. Here each program loads its
four gate blocks of W_hh (4 x HP x HP) before the first step and keeps them, with its
rows' h and c, for every step of its row block. Rows are independent, so no program waits
for another: no grid barrier, and no barrier inside a program either, since no step reads
back what another thread wrote. The packed slots (h_prev, c_prev, step_chars) are still
written, for the backward, off the chain.

The backward mirrors it: W_hh kept, dh and dc carried in registers, each step's gate
gradients written over its pre-activations in `gates` (as the tiled backward does) and
dh_{t-1} = sum over the gates of dgate [BU, HP] @ W_hh's block [HP, HP].

Weights fit when 4 x HP^2 of them take at most RESIDENT_MAX_BYTES (128 KB: bfloat16 and
float16 up to H = 128, float32 up to H = 64); the backend refuses larger ones.
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import dot_precision
from charfast.kernels.char_lstm_forward import forward_outputs
from charfast.kernels.lstm_tile import lstm_cell, lstm_tile_gate_grads, lstm_tile_start
from charfast.kernels.row_blocks import load_row_block

RESIDENT_MAX_BYTES = 128 * 1024  # W_hh's four gate blocks on one SM, padded
# Rows per program: tl.dot's least. From the sm_90 compile (BENCHMARKS.md): with 32 rows the
# backward's shared memory at H = 128 passes an SM's 227 KB, and the forward spills 3x more.
RESIDENT_ROWS = 16


def resident_warps(hidden: int, dtype: torch.dtype) -> int:
    """Warps per program: 8 once W_hh takes 64 KB or more (at 4 the compiler spills 1-2 KB a
    thread holding it; at 8, 0.3 KB), else 4 (no spills)."""
    return 8 if 4 * padded_hidden(hidden) ** 2 * dtype.itemsize >= 64 * 1024 else 4


def padded_hidden(hidden: int) -> int:
    return max(16, triton.next_power_of_2(hidden))


def resident_fits(hidden: int, dtype: torch.dtype) -> bool:
    """Whether W_hh [4H, H] of `dtype`, padded, stays on chip in the resident kernels."""
    return 4 * padded_hidden(hidden) ** 2 * dtype.itemsize <= RESIDENT_MAX_BYTES


@triton.jit
def _gate_blocks(weight_hh, units, H):
    """W_hh's four gate blocks [HP(j), HP(k)], element (j, k) = W_hh[gate * H + j, k] for
    hidden unit j and input k (units [HP]); zero outside H."""
    at = weight_hh + units[:, None] * H + units[None, :]
    ok = (units < H)[:, None] & (units < H)[None, :]
    w_i = tl.load(at, mask=ok, other=0.0)
    w_f = tl.load(at + H * H, mask=ok, other=0.0)
    w_g = tl.load(at + 2 * H * H, mask=ok, other=0.0)
    w_o = tl.load(at + 3 * H * H, mask=ok, other=0.0)
    return w_i, w_f, w_g, w_o


@triton.jit
def resident_lstm_forward_kernel(
    gate_table,  # [C, 4H] parameter dtype: char_emb @ W_ih^T + b_ih + b_hh
    weight_hh,  # [4H, H] parameter dtype
    table_chars,  # [V, W] char ids of every token of the table
    sorted_ids,  # [U] int64 rows of the table, longest first
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64 packed slot of each row's first step
    order,  # [U] int64 output row of each sorted row
    h_out,  # [U, H] parameter dtype
    h_prev,  # [S, H] parameter dtype: h_{t-1} of every step
    c_prev,  # [S, H] float32: c_{t-1} of every step
    step_chars,  # [S] int32
    U,
    H,
    table_width,
    n_chars,
    BLOCK_U: tl.constexpr,
    H_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(
        tl.program_id(0), sorted_lengths, offsets, order, U, BLOCK_U
    )  # [BU]
    tokens = tl.load(sorted_ids + rows, mask=row_ok, other=0)  # [BU]
    units = tl.arange(0, H_PAD)  # [HP] hidden units, and the inputs of the recurrent product
    unit_ok = units < H
    lstm_tile_start(
        h_prev, c_prev, h_out, first_slot, out_rows, row_ok & (lengths > 0), row_ok & (lengths == 0), units, H,
        BLOCK_U, H_PAD,
    )  # fmt: skip
    # W_hh^T of each gate [HP(k), HP(j)], kept for every step: gates += h_{t-1} @ W_g^T.
    w_i, w_f, w_g, w_o = _gate_blocks(weight_hh, units, H)
    w_i, w_f, w_g, w_o = tl.trans(w_i), tl.trans(w_f), tl.trans(w_g), tl.trans(w_o)
    h = tl.zeros((BLOCK_U, H_PAD), dtype=weight_hh.dtype.element_ty)  # h_{-1} = 0
    c = tl.zeros((BLOCK_U, H_PAD), dtype=tl.float32)  # c_{-1} = 0

    steps = tl.max(lengths, axis=0)  # this block's longest row
    for t in range(0, steps):
        active = row_ok & (lengths > t)  # [BU] rows that have a char at step t
        continues = active & (lengths > t + 1)
        finishes = active & (lengths == t + 1)
        # In bounds unmasked, clamped into gate_table: as in the tiled forward.
        chars = tl.load(table_chars + tokens * table_width + t).to(tl.int64)  # [BU]
        chars = tl.minimum(tl.maximum(chars, 0), n_chars - 1)
        slot = first_slot + t  # [BU]
        tl.store(step_chars + slot, chars.to(tl.int32), mask=active)
        tile_ok = active[:, None] & unit_ok[None, :]  # [BU, HP]
        gate_row = gate_table + chars[:, None] * (4 * H) + units[None, :]
        acc_i = tl.dot(h, w_i, tl.load(gate_row, mask=tile_ok, other=0.0).to(tl.float32), input_precision=DOT_PRECISION)
        acc_f = tl.dot(
            h, w_f, tl.load(gate_row + H, mask=tile_ok, other=0.0).to(tl.float32), input_precision=DOT_PRECISION
        )
        acc_g = tl.dot(
            h, w_g, tl.load(gate_row + 2 * H, mask=tile_ok, other=0.0).to(tl.float32), input_precision=DOT_PRECISION
        )
        acc_o = tl.dot(
            h, w_o, tl.load(gate_row + 3 * H, mask=tile_ok, other=0.0).to(tl.float32), input_precision=DOT_PRECISION
        )
        # Rows that have ended compute on, unstored: each row's product reads its own h only.
        c, h_t = lstm_cell(acc_i, acc_f, acc_g, acc_o, c)  # [BU, HP] float32
        h = h_t.to(weight_hh.dtype.element_ty)  # as the next step's product and the slots take it
        state = slot[:, None] * H + units[None, :]
        next_ok = continues[:, None] & unit_ok[None, :]
        tl.store(c_prev + state + H, c, mask=next_ok)  # slot t + 1 holds c_t
        tl.store(h_prev + state + H, h.to(h_prev.dtype.element_ty), mask=next_ok)
        tl.store(
            h_out + out_rows[:, None] * H + units[None, :],
            h.to(h_out.dtype.element_ty),
            mask=finishes[:, None] & unit_ok[None, :],
        )


@triton.jit
def resident_lstm_backward_kernel(
    gates,  # [S, 4H] float32: pre-activations in, dgates out
    c_prev,  # [S, H] float32: c_{t-1} of every step, saved by the forward
    weight_hh,  # [4H, H] parameter dtype
    grad_h,  # [U, H] gradient of h_out (output row order)
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64
    order,  # [U] int64
    U,
    H,
    BLOCK_U: tl.constexpr,
    H_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(
        tl.program_id(0), sorted_lengths, offsets, order, U, BLOCK_U
    )  # [BU]
    units = tl.arange(0, H_PAD)  # [HP]
    unit_ok = units < H
    # W_hh of each gate [HP(j), HP(k)], kept for every step: dh_{t-1} = sum_g dgate_g @ W_g.
    w_i, w_f, w_g, w_o = _gate_blocks(weight_hh, units, H)
    # A row that has not started (t >= its length) carries the gradient of its output and dc = 0.
    dh = tl.load(
        grad_h + out_rows[:, None] * H + units[None, :], mask=row_ok[:, None] & unit_ok[None, :], other=0.0
    ).to(tl.float32)  # [BU, HP]
    dc = tl.zeros((BLOCK_U, H_PAD), dtype=tl.float32)

    steps = tl.max(lengths, axis=0)
    for step in range(0, steps):
        t = steps - 1 - step
        active = row_ok & (lengths > t)  # [BU]
        tile_ok = active[:, None] & unit_ok[None, :]  # [BU, HP]
        d_i, d_f, d_g, d_o, dc_last = lstm_tile_gate_grads(
            gates, c_prev, first_slot + t, units, tile_ok, dh, dc, H
        )  # [BU, HP] each, written over step t's pre-activations
        dc = tl.where(tile_ok, dc_last, dc)
        # dh_{t-1}, with dgates in W_hh's dtype as the tiled backward takes them. Unconditional
        # (step 0's is computed and dropped): under a branch the compiler copies W_hh into
        # shared memory at every step instead of once.
        dtype = weight_hh.dtype.element_ty
        dh_last = tl.dot(d_i.to(dtype), w_i, input_precision=DOT_PRECISION)
        dh_last = tl.dot(d_f.to(dtype), w_f, dh_last, input_precision=DOT_PRECISION)
        dh_last = tl.dot(d_g.to(dtype), w_g, dh_last, input_precision=DOT_PRECISION)
        dh_last = tl.dot(d_o.to(dtype), w_o, dh_last, input_precision=DOT_PRECISION)
        dh = tl.where(tile_ok, dh_last, dh)


def _check_fits(weight_hh: torch.Tensor, variable: str) -> None:
    hidden = weight_hh.shape[1]
    if not resident_fits(hidden, weight_hh.dtype):
        raise ValueError(
            f"{variable}=resident keeps W_hh on chip: hidden {hidden} in {weight_hh.dtype} takes "
            f"{4 * padded_hidden(hidden) ** 2 * weight_hh.dtype.itemsize // 1024} KB padded, more than "
            f"{RESIDENT_MAX_BYTES // 1024} KB; use tiled or a split kernel"
        )


def launch_resident_lstm_forward(
    gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets, order, step_capacity: int
):
    """The resident forward; returns what launch_char_lstm_forward does (same contract)."""
    _check_fits(weight_hh, "CHARFAST_TRITON_FORWARD")
    n_rows, hidden = sorted_ids.shape[0], weight_hh.shape[1]
    h_out, h_prev, c_prev, step_chars = forward_outputs(weight_hh, n_rows, step_capacity)
    if n_rows:
        resident_lstm_forward_kernel[(triton.cdiv(n_rows, RESIDENT_ROWS),)](
            gate_table, weight_hh, table_chars, sorted_ids, sorted_lengths, offsets, order, h_out, h_prev, c_prev,
            step_chars, n_rows, hidden, table_chars.shape[1], gate_table.shape[0],
            BLOCK_U=RESIDENT_ROWS, H_PAD=padded_hidden(hidden), DOT_PRECISION=dot_precision(weight_hh.dtype),
            num_warps=resident_warps(hidden, weight_hh.dtype),
        )  # fmt: skip
    return h_out, h_prev, c_prev, step_chars


def launch_resident_lstm_backward(gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order):
    """The resident backward: `gates` [S, 4H] float32 pre-activations into dgates, in place."""
    _check_fits(weight_hh, "CHARFAST_TRITON_BACKWARD")
    n_rows, hidden = order.shape[0], weight_hh.shape[1]
    if n_rows:
        resident_lstm_backward_kernel[(triton.cdiv(n_rows, RESIDENT_ROWS),)](
            gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order, n_rows, hidden,
            BLOCK_U=RESIDENT_ROWS, H_PAD=padded_hidden(hidden), DOT_PRECISION=dot_precision(weight_hh.dtype),
            num_warps=resident_warps(hidden, weight_hh.dtype),
        )  # fmt: skip
    return gates
