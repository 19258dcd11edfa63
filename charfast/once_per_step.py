"""The char embedding once per optimizer step, for any number of micro-batches.

CharEmbedding's output depends only on token ids and its own parameters, and those change
only at the optimizer step. With gradient accumulation the char-LSTM would otherwise run
forward and backward once per micro-batch. Instead (GradCache's pattern, applied to a
composed embedding):

    enter     one dedup over the union of the step's ids, one char forward: their rows,
              and a detached copy of them that requires grad (the leaf)
    inside    every forward of the module gathers from the leaf; each micro-batch's
              backward accumulates only into the leaf's gradient
    exit      one char backward with the accumulated gradient, adding into the parameters'
              .grad what the micro-batches' own backwards would have added; from then on a
              backward that reaches the leaf raises (its gradient could reach no parameter)

The rows are sized by the number of ids given (at most the vocabulary), never by the
number of distinct ids, so a compiled model sees the same shapes every step; padding rows
hold id -1 (charfast.distinct.PAD_ID).

Dimensions: N ids given, R = min(N, V) rows (and a NaN row), V vocabulary, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepRows:
    """The rows of one optimizer step's distinct ids, and a NaN row last (the answer to an id
    outside the step's union, or outside the table)."""

    rows: torch.Tensor  # [R + 1, D] with the autograd graph back to the char encoder's parameters
    leaf: torch.Tensor  # [R + 1, D] rows.detach(), requiring grad: the micro-batches' backwards add here
    row_of: torch.Tensor  # [V] int64: the row of each id; R (the NaN row) for an id outside the union
    closed: bool = False  # the block has ended: a gradient reaching the leaf now would be lost

    def __post_init__(self):
        if self.leaf.requires_grad:
            self.leaf.register_hook(self._refuse_after_close)

    def _refuse_after_close(self, grad: torch.Tensor) -> torch.Tensor:
        if self.closed:
            raise RuntimeError(
                "CharEmbedding.once_per_step: a backward reached the char embedding after its once_per_step "
                "block ended, so its gradient would never reach the char encoder; run every micro-batch's "
                "backward inside the block (or leave once_per_step out)"
            )
        return grad

    @property
    def nan_row(self) -> int:
        return self.leaf.shape[0] - 1

    def positions(self, ids: torch.Tensor, check: bool) -> torch.Tensor:
        """[N] rows of the leaf for ids [N] (inside the table). An id outside the step's union:
        a ValueError when `check` (one read back to the host), else the NaN row."""
        positions = self.row_of.index_select(0, ids)  # [N]
        if check and ids.numel():
            missing = positions == self.nan_row  # [N]
            if bool(missing.any()):
                raise ValueError(
                    f"CharEmbedding: token id {int(ids[missing][0])} is not among the ids given to once_per_step "
                    "for this optimizer step; pass the ids of every micro-batch of the step"
                )
        return positions

    def close(self, run_backward: bool) -> None:
        """End the block: (run_backward) add the accumulated gradient through the char encoder,
        once; from then on a backward that reaches the leaf raises."""
        self.closed = True
        if run_backward and self.leaf.grad is not None and self.rows.requires_grad:
            self.rows.backward(self.leaf.grad)


def with_nan_row(rows: torch.Tensor) -> torch.Tensor:
    """[M, D] -> [M + 1, D]: rows, then a row of NaN (what an id without an answer gathers)."""
    return torch.cat([rows, rows.new_full((1, rows.shape[1]), float("nan"))])


def step_rows(ids: torch.Tensor, vocab_size: int, rows_of_ids) -> StepRows:
    """StepRows for the union of ids [N] (each inside [0, vocab_size)); rows_of_ids(distinct
    [R] padded with -1) -> [R, D] computes the embedding rows of distinct ids.

    The union is found through a presence mask over the vocabulary, O(N + V) with no sort
    and no read back to the host: present ids get consecutive rows in ascending order. No
    ids (N = 0) give the NaN row alone: every id is then outside the union."""
    n_rows = min(ids.numel(), vocab_size)  # R: every step of N ids gets R rows (and the NaN row)
    present = torch.zeros(vocab_size, dtype=torch.bool, device=ids.device).index_fill_(0, ids, True)  # [V]
    rank = torch.cumsum(present, 0) - 1  # [V] the row of each present id
    every_id = torch.arange(vocab_size, device=ids.device)  # [V]
    # Present id v goes to row rank[v]; the others to spare slots R + v, so no slot is written twice.
    slots = torch.where(present, rank, n_rows + every_id)  # [V]
    distinct = torch.full((n_rows + vocab_size,), -1, dtype=torch.int64, device=ids.device)
    distinct = distinct.scatter_(0, slots, every_id)[:n_rows]  # [R] the distinct ids ascending, then -1
    rows = with_nan_row(rows_of_ids(distinct))  # [R + 1, D]
    leaf = rows.detach().requires_grad_(rows.requires_grad)
    return StepRows(rows=rows, leaf=leaf, row_of=torch.where(present, rank, n_rows))
