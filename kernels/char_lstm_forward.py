"""Forward Triton kernel of the char-LSTM: one launch for all distinct tokens of a batch.

Dimensions: U distinct tokens (rows), S = sum of their lengths (packed steps), C chars,
H hidden, V vocabulary, W table width (longest token of the table).

Rows arrive sorted by length, longest first, so a block of BLOCK_U rows has near-equal
lengths; each program loops to its own block's longest row (read from `lengths` inside
the kernel: the host never waits for it) and masks rows that have ended, whose state
then stays frozen.

Each step is gates [BLOCK_U, 4H] = G[char] + h_{t-1} @ W_hh^T, tiled: for every tile of
BLOCK_H hidden units the four gate slices (i, f, g, o) accumulate over BLOCK_K-wide
tiles of h_{t-1}, so no program ever holds all of W_hh and any H works (tails masked).
The state goes through global memory (L1/L2-resident): step t reads h_{t-1} and c_{t-1}
from the packed slots that step t-1 wrote, and a barrier separates the steps. Those slots
are exactly what the backward needs, so saving them costs no extra traffic:

    h_prev [S, H]  (parameter dtype: it only ever feeds a matmul in that dtype)
    c_prev [S, H]  (float32: the cell state accumulates)
    step_chars [S] (int32: the char of every step, for the backward's scatter into dG)

with row r's step t at slot offsets[r] + t. State and accumulation are float32.
"""

import torch
import triton
import triton.language as tl

from charfast.kernels.blocks import LstmBlocks, dot_precision, multiprocessors
from charfast.kernels.lstm_tile import lstm_tile_start, lstm_tile_step
from charfast.kernels.row_blocks import load_row_block


@triton.jit
def char_lstm_forward_kernel(
    gate_table,  # [C, 4H] parameter dtype: char_emb @ W_ih^T + b_ih + b_hh
    weight_hh,  # [4H, H] parameter dtype
    table_chars,  # [V, W] char ids of every token of the table
    sorted_ids,  # [U] int64 rows of the table, longest first (any row where the length is 0)
    sorted_lengths,  # [U] int64
    offsets,  # [U] int64 packed slot of each row's first step
    order,  # [U] int64 output row of each sorted row
    h_out,  # [U, H] parameter dtype: h after each token's last char (0 if it has none)
    h_prev,  # [S, H] parameter dtype: h_{t-1} of every step (h_{-1} = 0)
    c_prev,  # [S, H] float32: c_{t-1} of every step (c_{-1} = 0)
    step_chars,  # [S] int32
    U,
    H,
    table_width,
    n_chars,  # C: rows of gate_table
    BLOCK_U: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    rows, row_ok, lengths, first_slot, out_rows = load_row_block(
        tl.program_id(0), sorted_lengths, offsets, order, U, BLOCK_U
    )  # [BU]
    tokens = tl.load(sorted_ids + rows, mask=row_ok, other=0)  # [BU]
    starts = row_ok & (lengths > 0)
    empty = row_ok & (lengths == 0)

    # Step 0 reads no state: write its zero h_prev / c_prev slots for the backward, and
    # h = 0 for zero-length rows (every element of h_out is written).
    for j0 in range(0, H, BLOCK_H):
        cols = j0 + tl.arange(0, BLOCK_H)  # [BH]
        lstm_tile_start(h_prev, c_prev, h_out, first_slot, out_rows, starts, empty, cols, H, BLOCK_U, BLOCK_H)
    tl.debug_barrier()  # step 0 reads the c_prev slots just zeroed, maybe by other threads

    steps = tl.max(lengths, axis=0)  # this block's longest row (rows are sorted, any order works)
    for t in range(0, steps):
        active = row_ok & (lengths > t)  # [BU] rows that have a char at step t
        continues = active & (lengths > t + 1)  # their state feeds step t + 1
        finishes = active & (lengths == t + 1)  # step t is their last char
        # Unmasked: t < steps <= table_width and masked rows read token 0, so the address is
        # always inside the table (zero-padded past each token's end); every use of an inactive
        # row's char is masked. A mask here broke Triton 3.6's sm_90 compile at BLOCK_U >= 32
        # ("'tt.load' op failed to verify that mask type matches ptr type").
        chars = tl.load(table_chars + tokens * table_width + t).to(tl.int64)  # [BU]
        # The table is data: whatever it holds, the gate rows read stay inside gate_table.
        chars = tl.minimum(tl.maximum(chars, 0), n_chars - 1)
        slot = first_slot + t  # [BU]
        tl.store(step_chars + slot, chars.to(tl.int32), mask=active)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)  # [BH]
            lstm_tile_step(
                t, gate_table, weight_hh, h_prev, c_prev, h_out, chars, slot, out_rows, active, continues, finishes,
                cols, H, BLOCK_K, DOT_PRECISION,
            )  # fmt: skip
        # Step t + 1 reads the whole h_t, written tile by tile by all threads of this program.
        tl.debug_barrier()


def forward_outputs(weight_hh, n_rows: int, step_capacity: int):
    """What every forward kernel writes, unwritten yet: (h_out [U, H], h_prev [S_max, H] in
    W_hh's dtype, c_prev [S_max, H] float32, step_chars [S_max] int32)."""
    hidden = weight_hh.shape[1]
    return (
        weight_hh.new_empty(n_rows, hidden),
        weight_hh.new_empty(step_capacity, hidden),
        weight_hh.new_empty(step_capacity, hidden, dtype=torch.float32),
        torch.empty(step_capacity, dtype=torch.int32, device=weight_hh.device),
    )


def launch_char_lstm_forward(
    gate_table,
    weight_hh,
    table_chars,
    sorted_ids,
    sorted_lengths,
    offsets,
    order,
    step_capacity: int,
    blocks: "LstmBlocks | None" = None,
):
    """Run the forward kernel; returns (h_out [U, H], h_prev [S_max, H], c_prev [S_max, H],
    step_chars [S_max]) for S_max = step_capacity >= S; rows from S on are left unwritten.

    Inputs must be contiguous, on one device, rows sorted longest first (see the kernel);
    `blocks` overrides the tile sizes (tests use it to force many tiles).
    """
    n_rows, hidden = sorted_ids.shape[0], weight_hh.shape[1]
    blocks = blocks or LstmBlocks.for_shape(hidden, weight_hh.dtype, n_rows, multiprocessors(weight_hh.device))
    h_out, h_prev, c_prev, step_chars = forward_outputs(weight_hh, n_rows, step_capacity)
    if n_rows:
        char_lstm_forward_kernel[(triton.cdiv(n_rows, blocks.rows),)](
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
            n_rows,
            hidden,
            table_chars.shape[1],
            gate_table.shape[0],
            BLOCK_U=blocks.rows,
            BLOCK_H=blocks.hidden,
            BLOCK_K=blocks.reduction,
            DOT_PRECISION=dot_precision(weight_hh.dtype),
            num_warps=blocks.num_warps,
        )
    return h_out, h_prev, c_prev, step_chars
