"""Numbers the host reads from the device one step late, so that it never waits for the
device in the middle of a step and can queue the next one while this one runs.

On CUDA the values are copied into pinned host memory behind the step's kernels and an
event marks when they have arrived: reading them waits for that event only (by then,
usually long passed), never for the whole device. On the CPU they are there at once.
"""

from __future__ import annotations

import torch


class LateRead:
    """values [K] of a device tensor, readable later with read()."""

    def __init__(self, values: torch.Tensor):
        if values.is_cuda:
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._arrived: torch.cuda.Event | None = torch.cuda.Event()
            self._arrived.record()
        else:
            self._host, self._arrived = values.detach(), None

    def read(self) -> list[float]:
        if self._arrived is not None:
            self._arrived.synchronize()
        return self._host.tolist()
