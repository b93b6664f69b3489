"""Command-line tools: `mlxbatchwhisper` (transcribe) and `mlxbatchwhisper-convert`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupts:
    """The stop signal (Ctrl-C or SIGTERM) a command received, if any."""

    def __init__(self) -> None:
        self.received: int | None = None

    def check(self) -> None:
        """Raise KeyboardInterrupt again if a signal came: some libraries swallow the first one (PyAV's
        resampler does), which would let the run go on to the end and exit 0."""
        if self.received is not None:
            raise KeyboardInterrupt


@contextmanager
def interrupts_unwind() -> Iterator[Interrupts]:
    """While inside, Ctrl-C and SIGTERM raise KeyboardInterrupt, so cleanup code runs for both, and are
    recorded for `Interrupts.check`."""
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return

    def interrupt(signum, frame):
        interrupts.received = signum
        raise KeyboardInterrupt

    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not signal.SIG_IGN:  # a signal the caller ignores stays ignored
                previous[s] = signal.signal(s, interrupt)
        yield interrupts
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
