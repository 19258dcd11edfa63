"""Numbers the host reads from the device one step late, so that it never waits for the
device in the middle of a step and can queue the next one while this one runs.

On CUDA the values are copied into pinned host memory behind the step's kernels and an
event marks when they have arrived: reading them waits for that event only (by then,
usually long passed), never for the whole device. On the CPU they are there at once.
"""

from __future__ import annotations

import time

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


class StepTime:
    """How long one step took, started before the step is queued and stopped after, readable
    once the step's LateRead has been read. On CUDA: the time between events recorded on the
    stream at the step's start and end, which is the step's own whether the host runs ahead
    of the device or behind it; on the CPU, where each operation finishes before the next,
    the host's wall time."""

    def __init__(self, device: torch.device):
        if device.type == "cuda":
            self._start: torch.cuda.Event | float = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        self._end: torch.cuda.Event | float | None = None

    def stop(self) -> StepTime:
        if isinstance(self._start, float):
            self._end = time.perf_counter()
        else:
            self._end = torch.cuda.Event(enable_timing=True)
            self._end.record()
        return self

    def seconds(self) -> float:
        if self._end is None:
            raise RuntimeError("StepTime.seconds: the step's time was not stopped")
        if isinstance(self._start, float):
            return self._end - self._start
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1000
