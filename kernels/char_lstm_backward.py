"""Backward Triton kernel of the char-LSTM: one launch runs the reverse recurrence of all rows.

Dimensions as in char_lstm_forward.py: U rows (sorted longest first), S packed steps,
H hidden.

Input `gates` [S, 4H] float32 holds the pre-activations of every step, recomputed before
the launch as one parallel GEMM from the saved h_prev (G[char] + h_prev @ W_hh^T): that
matmul has no time dependency, so it runs at full GEMM speed instead of inside this
serial loop. The kernel overwrites each step's pre-activations with its gate gradients
(dgates), in place; the weight gradients are then large GEMMs / one scatter over dgates
outside the time loop (dW_hh = dgates^T @ h_prev, dG = index_add by char).

Per step t, from the row's last step down to 0, two phases separated by barriers:
  A. per hidden tile: activations from gates and c_{t-1} (c_t recomputed), then
     dgates_t from the carried dh_t and dc_t; dc_{t-1} = dc_t * f (elementwise).
  B. per hidden tile: dh_{t-1} = dgates_t [BU, 4H] @ W_hh [4H, H] (reduction over 4H).
The carried dh and dc live in float32 scratch rows [U, H]; a row that has not started
(t >= its length) keeps dh = grad of its output and dc = 0.
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import LstmBlocks, dot_precision, multiprocessors
from charfast.kernels.lstm_tile import lstm_tile_gate_grads, lstm_tile_recurrent_grad
from charfast.kernels.row_blocks import load_row_block


@triton.jit
def char_lstm_backward_kernel(
    gates,  # [S, 4H] float32: pre-activations in, dgates out
    c_prev,  # [S, H] float32: c_{t-1} of every step, saved by the forward
    weight_hh,  # [4H, H] parameter dtype
    grad_h,  # [U, H] gradient of h_out (output row order)
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64 packed slot of each row's first step
    order,  # [U] int64 output row of each sorted row
    dh_carry,  # [U, H] float32 scratch: dL/dh_t of each sorted row
    dc_carry,  # [U, H] float32 scratch: dL/dc_t of each sorted row
    U,
    H,
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(
        tl.program_id(0), sorted_lengths, offsets, order, U, BLOCK_U
    )  # [BU]

    for j0 in range(0, H, BLOCK_H):
        cols = j0 + tl.arange(0, BLOCK_H)  # [BH]
        tile_ok = row_ok[:, None] & (cols < H)[None, :]
        carry = rows[:, None] * H + cols[None, :]
        dh_out = tl.load(grad_h + out_rows[:, None] * H + cols[None, :], mask=tile_ok, other=0.0)
        tl.store(dh_carry + carry, dh_out.to(tl.float32), mask=tile_ok)
        tl.store(dc_carry + carry, tl.zeros((BLOCK_U, BLOCK_H), dtype=tl.float32), mask=tile_ok)
    tl.debug_barrier()

    steps = tl.max(lengths, axis=0)
    for step in range(0, steps):
        t = steps - 1 - step
        active = row_ok & (lengths > t)  # [BU]
        slot = first_slot + t  # [BU]
        # Phase A: gate gradients of step t.
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)  # [BH]
            tile_ok = active[:, None] & (cols < H)[None, :]  # [BU, BH]
            carry = rows[:, None] * H + cols[None, :]
            dh = tl.load(dh_carry + carry, mask=tile_ok, other=0.0)
            dc_next = tl.load(dc_carry + carry, mask=tile_ok, other=0.0)
            dc_last = lstm_tile_gate_grads(gates, c_prev, slot, cols, tile_ok, dh, dc_next, H)[4]
            tl.store(dc_carry + carry, dc_last, mask=tile_ok)
        tl.debug_barrier()  # phase B reads all 4H dgates of the row, written by all threads
        # Phase B: dh_{t-1} = dgates_t @ W_hh (step 0 has no h_{-1} to feed).
        if t > 0:
            for j0 in range(0, H, BLOCK_H):
                cols = j0 + tl.arange(0, BLOCK_H)  # [BH]
                col_ok = cols < H
                acc = lstm_tile_recurrent_grad(
                    gates, weight_hh, slot, active, cols, H, BLOCK_U, BLOCK_H, BLOCK_K, DOT_PRECISION
                )  # [BU, BH]
                tl.store(dh_carry + rows[:, None] * H + cols[None, :], acc, mask=active[:, None] & col_ok[None, :])
        tl.debug_barrier()  # the next step's phase A reads dh_{t-1} of every tile


def launch_char_lstm_backward(
    gates, c_prev, weight_hh, grad_h, sorted_lengths, offsets, order, blocks: "LstmBlocks | None" = None
):
    """Turn `gates` [S, 4H] float32 (pre-activations) into dgates in place.

    Inputs must be contiguous, laid out as the forward kernel left them.
    """
    n_rows, hidden = order.shape[0], weight_hh.shape[1]
    blocks = blocks or LstmBlocks.for_shape(hidden, weight_hh.dtype, n_rows, multiprocessors(weight_hh.device))
    if n_rows:
        dh_carry = torch.empty(n_rows, hidden, dtype=torch.float32, device=gates.device)
        dc_carry = torch.empty_like(dh_carry)
        char_lstm_backward_kernel[(triton.cdiv(n_rows, blocks.rows),)](
            gates,
            c_prev,
            weight_hh,
            grad_h,
            sorted_lengths,
            offsets,
            order,
            dh_carry,
            dc_carry,
            n_rows,
            hidden,
            BLOCK_U=blocks.rows,
            BLOCK_H=blocks.hidden,
            BLOCK_K=blocks.reduction,
            DOT_PRECISION=dot_precision(weight_hh.dtype),
            num_warps=blocks.num_warps,
        )
    return gates
