"""``--mode snapshot`` and ``--mode cdc``: preflight first, then the service; --follow outlives
transient failures."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from replicator.domain.errors import ConfigurationError, SlotLostError, TransientError
from replicator.domain.preflight import failures
from replicator.entrypoints import render
from replicator.entrypoints.exit_codes import EXIT_OK
from replicator.entrypoints.signals import stop_on_signals
from replicator.entrypoints.wiring import lake_slot, wired

if TYPE_CHECKING:
    from rich.console import Console

    from replicator.domain.model import CdcReport

log = logging.getLogger("replicator")


def run_snapshot(console: Console, destination: str, *, new_source: bool = False) -> int:
    with wired(destination) as container:
        _preflight(container, strict=False)
        schemas = ", ".join(container.postgres_settings().schemas)
        log.info("snapshot of schemas %s into %s", schemas, destination)
        report = container.snapshot_service(new_source=new_source).run()
    render.snapshot_loaded(console, report)
    return EXIT_OK


def run_cdc(
    console: Console,
    destination: str,
    *,
    follow: bool,
    soft_delete: bool,
    resnapshot: bool,
    truncate: str,
    metrics_port: int | None = None,
) -> int:
    stop = threading.Event()
    with wired(destination) as container, stop_on_signals(stop, follow):
        _preflight(container, strict=True, slot_lost_ok=resnapshot)
        extra: dict[str, Any] = {}
        if metrics_port is not None:
            extra["observer"] = _metrics(container, metrics_port)
        service = container.cdc_service(soft_delete=soft_delete, truncate=truncate, **extra)
        if resnapshot:
            _resnapshot_if_slot_lost(console, container)
        if follow:
            followed = _follow_with_retries(service, stop)
            if followed is None:
                console.print("stopped while waiting to reconnect; nothing was in flight")
                return EXIT_OK
            report = followed
        else:
            report = service.run(follow=False, stop=stop)
        infos = container.lake_writer().describe(report.tables)
    render.changes_applied(console, report, infos)
    return EXIT_OK


def _resnapshot_if_slot_lost(console: Console, container: Any) -> None:
    """--on-lost-slot=resnapshot: when the slot cannot continue the lake, start over."""
    try:
        source = container.change_source()
        container.lsn_checkpoint().resolve(source.slot, source.identity())
    except SlotLostError as e:
        log.warning("--on-lost-slot=resnapshot: taking a new snapshot (%s)", e)
        render.snapshot_loaded(console, container.snapshot_service().run())
        log.info("re-snapshot done; CDC continues from the new slot %s", lake_slot(container))


def _preflight(container: Any, *, strict: bool, slot_lost_ok: bool = False) -> None:
    """Before a mode runs: stop on what would make CDC fail (strict), or warn (snapshot)."""
    failed = failures(container.preflight_service(slot_name=lake_slot(container)).run())
    if slot_lost_ok:
        failed = [f for f in failed if not f.check.startswith("slot ")]
    if not failed:
        return
    if strict:
        raise ConfigurationError("preflight failed: " + "; ".join(f.line() for f in failed))
    for finding in failed:
        log.warning("CDC will not work until this is fixed: %s", finding.line())


def _metrics(container: Any, port: int) -> Any:
    """The Prometheus endpoint, serving from now on; its slot gauge reads the lake's slot."""
    from replicator.adapters.metrics.prometheus import PrometheusObserver

    source = container.change_source()
    slot_name = lake_slot(container)
    observer = PrometheusObserver(slot=lambda: (source.server_position(), source.slot(slot_name)))
    try:
        observer.serve(port)
    except OSError as e:
        raise ConfigurationError(f"--metrics-port {port}: cannot listen there ({e})") from e
    log.info("serving Prometheus metrics on http://0.0.0.0:%d/metrics", port)
    return observer


RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 60.0


def _follow_with_retries(service: Any, stop: threading.Event) -> CdcReport | None:
    """--follow outlives transient failures (the source restarting, the lake unreachable):
    reconnect with exponential backoff and resume from the lake's checkpoint, which makes a
    retry safe. Terminal errors still stop the run. None: stopped while waiting to reconnect."""
    delay = RETRY_FIRST_DELAY_S
    while True:
        started = time.monotonic()
        try:
            report: CdcReport = service.run(follow=True, stop=stop)
            if report.rescan and not stop.is_set():
                continue  # new tables: the next run snapshots them, then follows on
            return report
        except TransientError as e:
            if stop.is_set():
                raise
            if time.monotonic() - started > RETRY_MAX_DELAY_S:
                delay = RETRY_FIRST_DELAY_S  # it ran fine for a while: start backing off anew
            log.warning("%s; reconnecting in %.0f s", e, delay)
            if stop.wait(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
