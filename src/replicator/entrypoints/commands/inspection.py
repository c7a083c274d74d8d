"""``check``, ``status`` and ``verify``: they read the source and the lake and change nothing."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from replicator.domain.errors import ConfigurationError
from replicator.entrypoints import render
from replicator.entrypoints.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from replicator.entrypoints.progress import verify_progress
from replicator.entrypoints.signals import stop_on_signals
from replicator.entrypoints.wiring import lake_slot, wired

if TYPE_CHECKING:
    from rich.console import Console


def run_check(console: Console, destination: str) -> int:
    with wired(destination, replicating=False) as container:
        findings = container.preflight_service(slot_name=lake_slot(container)).run()
    render.findings(console, findings)
    return EXIT_USAGE if any(f.severity.value == "fail" for f in findings) else EXIT_OK


def run_verify(
    console: Console,
    destination: str,
    tables: Sequence[str],
    sample: int | None,
    seed: int | None,
) -> int:
    seed = random.randrange(1, 2**31) if seed is None else seed
    with wired(destination, replicating=False) as container, verify_progress(console) as progress:
        service = container.verify_service(progress=progress)
        report = service.run(tables, sample, seed)
    render.verified(console, report, seed)
    return EXIT_OK if report.equal else EXIT_ERROR


def run_status(
    console: Console, destination: str, *, as_json: bool, watch: float | None = None
) -> int:
    if watch is not None and watch <= 0:
        raise ConfigurationError("--watch takes a positive number of seconds")
    stop = threading.Event()
    with wired(destination) as container, stop_on_signals(stop, watch is not None, "stopping"):
        while True:
            report = container.status_service().run()
            if watch is not None and console.is_terminal and not as_json:
                console.clear()
            render.status(console, report, as_json=as_json, compact=watch is not None)
            if watch is None:
                return EXIT_OK
            try:
                if stop.wait(watch):
                    return EXIT_OK
            except KeyboardInterrupt:
                return EXIT_OK
