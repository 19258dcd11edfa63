"""A stop signal that asks a training run to finish its step and save."""

from __future__ import annotations

import signal

from charfast.entry_point import STOP_SIGNALS, Stopped


class StopRequest:
    """While active, the first stop signal (Ctrl-C's SIGINT, SIGTERM, SIGHUP) only asks the
    run to stop: the loop finishes its step and saves. A second one stops at once (raises
    Stopped), which leaves the last checkpoint written as it was. (On Ctrl-C torchrun
    signals its workers too.)"""

    def __init__(self):
        self.signal: int | None = None  # the signal that asked to stop
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise Stopped(signum)
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
