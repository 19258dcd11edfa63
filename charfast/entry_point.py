"""How the command lines (`python -m charfast.train`, `.sample`, `.study`) start and stop.

From their first instruction a stop signal (Ctrl-C's SIGINT, SIGTERM, and SIGHUP from a
closed terminal or a dropped ssh session) ends the command with one line and exit code
128 + N, never a traceback: during the second or so of heavy imports by exiting at once,
then by raising Stopped, which the command reports. The training loop replaces this with
its own handling, which saves first (charfast.gpt.stop_request). Text the terminal's
encoding cannot hold is written with a replacement character instead of failing the
command.

Imports nothing heavy: it runs before torch is loaded.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from charfast.extras import exit_if_missing

# The signals that ask a command to stop (SIGHUP is not on every platform).
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Stopped(BaseException):  # noqa: N818 - like KeyboardInterrupt: no `except Exception` swallows it
    """A stop signal arrived; signum says which."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


def stop_signum(err: BaseException) -> int:
    """The signal behind a Stopped or a KeyboardInterrupt (Ctrl-C before our handler)."""
    return err.signum if isinstance(err, Stopped) else signal.SIGINT


def run_entry_point(program: str, extra: str, module: str) -> None:
    """Run `module`.main() as the command `program` and exit with its code; `extra` is the
    pip extra the command needs (named when missing)."""

    def exit_at_once(signum, frame):
        # While the command's modules import, an exception raised by a handler can be
        # swallowed by a library's import fallback and leave a module half-initialised: exit
        # instead (nothing has been written yet).
        os.write(2, f"{program}: stopped by {signal_name(signum)} while starting; nothing was written\n".encode())
        os._exit(128 + signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, exit_at_once)
    sys.stdout.reconfigure(errors="replace")  # e.g. PYTHONIOENCODING=ascii: "?" for what it cannot hold
    exit_if_missing(extra, f"python -m {program}")
    main = importlib.import_module(module).main
    for signum in STOP_SIGNALS:
        signal.signal(signum, raise_stopped)
    try:
        code = main()
    except (Stopped, KeyboardInterrupt) as err:  # before the command's own handling took over
        print(f"{program}: stopped by {signal_name(stop_signum(err))}; nothing was written", file=sys.stderr)
        code = 128 + stop_signum(err)
    sys.exit(code)
