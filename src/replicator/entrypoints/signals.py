"""--follow and status --watch stop on SIGTERM/SIGINT at a point where nothing is in flight."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("replicator")


@contextmanager
def stop_on_signals(
    stop: threading.Event, follow: bool, doing: str = "finishing the current batch"
) -> Iterator[None]:
    """In --follow, SIGTERM/SIGINT finish the current batch and exit 0; a second SIGINT aborts."""
    if not follow:
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("%s received: %s", signal.Signals(signum).name, doing)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
