"""The distinct token ids of a batch without a device->host read.

torch.unique must read the number of distinct ids back to the host to size its output,
which stalls the host until the GPU has caught up. distinct_ids_padded sizes everything
by the number of ids instead, a size the host already knows.
"""

from __future__ import annotations

import torch

PAD_ID = -1  # the id of the rows after the distinct ones


def distinct_ids_padded(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N], inverse [N]) for int64 ids flat [N]: ids holds the distinct ids ascending
    (as torch.unique returns them), then PAD_ID; flat == ids[inverse]."""
    ordered, order = torch.sort(flat)  # [N], [N]
    first = torch.ones_like(ordered, dtype=torch.bool)  # [N] the first of each run of equal ids
    first[1:] = ordered[1:] != ordered[:-1]
    rank = torch.cumsum(first, 0) - 1  # [N] the distinct row of each sorted id
    # Every id of a run writes the same value to its row, so the result does not depend on
    # which write lands last.
    ids = torch.full_like(flat, PAD_ID).scatter_(0, rank, ordered)  # [N]
    inverse = torch.empty_like(rank).scatter_(0, order, rank)  # [N] order is a permutation
    return ids, inverse
