"""Ctrl-C and SIGTERM end a verb with a line that says what was kept, and exit 130 or 143.

SIGTERM is what stops a job from outside: `ray job stop` (then SIGKILL after
``RAY_JOB_STOP_WAIT_TIME_S``, 3 s by default), `timeout`, `kill`, a pod's termination where the
driver is the container's first process. Without this, Ctrl-C printed a traceback from inside
``ray.wait``, and SIGTERM printed a native stack dump from Ray's core worker and left no record.

The command line (``with catch_signals():``) turns both signals into ``KeyboardInterrupt`` in the main
thread. Ray's blocking calls check for signals and raise it, so ``runner.run_per_shard``'s
``finally`` kills the actors, and the verb can write what it has and raise ``Interrupted``.
``ray.init`` installs its own SIGTERM handler (``sys.exit``), so ``runner.ensure_ray`` puts
this one back (``ray_starting``). Library callers keep their own handlers: nothing is installed
unless the command line asked for it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_installed = False
_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """A verb stopped by a signal, after putting its work in order. ``message`` says what was
    kept and how to go on; ``exit_code`` is 128 + the signal's number (130 SIGINT, 143 SIGTERM).
    A ``KeyboardInterrupt``, so that callers that catch that still do."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.message = message
        self.signum = signum or received()
        self.exit_code = 128 + self.signum


def _handler(signum: int, frame: object) -> None:
    global _received
    _received = signum
    raise KeyboardInterrupt


def _install() -> None:
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def catch_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise ``KeyboardInterrupt`` (main thread only; elsewhere
    this does nothing). The handlers there before are put back on the way out."""
    global _installed, _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _installed, _received = True, None
    _install()
    try:
        yield
    finally:
        _installed = False
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def reinstall() -> None:
    """After ``ray.init``, which replaces the SIGTERM handler: put ours back, if we had one."""
    if _installed and threading.current_thread() is threading.main_thread():
        _install()


@contextlib.contextmanager
def ray_starting() -> Iterator[None]:
    """Around ``ray.init``: it installs a SIGTERM handler of its own (``sys.exit(15)``), so a
    SIGTERM while Ray starts (seconds: a `ray job stop` right after the submission) ended the
    command with exit 15 and no line. That ``SystemExit`` becomes ours; then ``reinstall``."""
    global _received
    try:
        yield
    except SystemExit as exc:
        if not (_installed and exc.code == signal.SIGTERM):
            raise
        _received = signal.SIGTERM
        raise KeyboardInterrupt from None
    finally:
        reinstall()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within: a further SIGINT or SIGTERM is ignored, so that a stopped compress writes its
    record whole (a second Ctrl-C there left the previous run's ``_stats.json`` in place). It
    lasts as long as writing that record; SIGKILL (``ray job stop`` 3 s after SIGTERM) still
    ends the process, and the next run works from the shard files, as after a crash."""
    if not (_installed and threading.current_thread() is threading.main_thread()):
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        _install()


def received() -> int:
    """The signal that raised the last ``KeyboardInterrupt`` (SIGINT when none was caught here:
    Python's own Ctrl-C)."""
    return _received or signal.SIGINT


def name() -> str:
    """``received()``'s name: SIGINT or SIGTERM."""
    return signal.Signals(received()).name
