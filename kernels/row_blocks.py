"""A block of rows, shared by every char-LSTM kernel (tiled and split, forward and backward).

Rows are the batch's distinct tokens sorted longest first (see char_lstm_forward.py);
block b holds rows [b * BLOCK_U, (b + 1) * BLOCK_U), the last block masked at U. A tiled
kernel's program p owns block p; a split kernel's work item (j, g), block g.
"""

import triton
import triton.language as tl


@triton.jit
def load_row_block(block, sorted_lengths, offsets, order, U, BLOCK_U: tl.constexpr):
    """(rows, row_ok, lengths, first_slot, out_rows), each [BLOCK_U]: the sorted rows of
    `block`, which of them exist, their lengths (0 past U), the packed slot of each row's
    first step and each row's output row."""
    rows = block * BLOCK_U + tl.arange(0, BLOCK_U)
    row_ok = rows < U
    lengths = tl.load(sorted_lengths + rows, mask=row_ok, other=0)
    first_slot = tl.load(offsets + rows, mask=row_ok, other=0)
    out_rows = tl.load(order + rows, mask=row_ok, other=0)
    return rows, row_ok, lengths, first_slot, out_rows
