"""How the command lines fail: one line on stderr, no traceback, and an exit code by kind.

2    a user mistake (a ValueError or CheckpointError naming the flag or file)
1    an environment fault (an OSError: the path and what the OS said) or a run that
     failed for a reason its message states (RunFailed, e.g. a diverged loss)
128+N  stopped by signal N (SIGINT, SIGTERM, SIGHUP), after saving what there was to save
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from charfast.entry_point import Stopped, signal_name, stop_signum
from charfast.gpt.checkpoint import CheckpointError


class RunFailed(RuntimeError):
    """A run that could not finish, for a reason the message states in full."""

    exit_code = 1


class Interrupted(RunFailed):
    """A signal stopped the run (after it saved)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


def describe_os_error(err: OSError) -> str:
    """The paths and what the operating system said, in one line."""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    return f"{paths}: {err.strerror or err}" if paths else str(err)


def run_cli(program: str, body: Callable[[], int]) -> int:
    """body()'s exit code, or the code of the failure it raised, reported on one line."""
    try:
        return body()
    except (ValueError, CheckpointError) as err:
        code, message = 2, str(err)
    except OSError as err:
        code, message = 1, describe_os_error(err)
    except RunFailed as err:
        code, message = err.exit_code, str(err)
    except (Stopped, KeyboardInterrupt) as err:
        code, message = 128 + stop_signum(err), f"stopped by {signal_name(stop_signum(err))}"
    print(f"{program}: error: {message}", file=sys.stderr)
    return code
