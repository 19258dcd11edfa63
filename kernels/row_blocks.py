"""The rows of one program, shared by the forward and backward char-LSTM kernels.

Rows are the batch's distinct tokens sorted longest first (see char_lstm_forward.py);
program p owns rows [p * BLOCK_U, (p + 1) * BLOCK_U), the last block masked at U.
"""

import triton
import triton.language as tl


@triton.jit
def load_row_block(sorted_lengths, offsets, order, U, BLOCK_U: tl.constexpr):
    """(rows, row_ok, lengths, first_slot, out_rows), each [BLOCK_U]: this program's sorted
    rows, which of them exist, their lengths (0 past U), the packed slot of each row's first
    step and each row's output row."""
    rows = tl.program_id(0) * BLOCK_U + tl.arange(0, BLOCK_U)
    row_ok = rows < U
    lengths = tl.load(sorted_lengths + rows, mask=row_ok, other=0)
    first_slot = tl.load(offsets + rows, mask=row_ok, other=0)
    out_rows = tl.load(order + rows, mask=row_ok, other=0)
    return rows, row_ok, lengths, first_slot, out_rows
