"""A Prometheus endpoint for ``--follow`` (``--metrics-port``): what CDC applies, how long its
batches take, how far the lake is behind, what the slot retains, and what failed.

The counters and the histogram are updated as CDC reports each batch (``CdcObserver``); the
lag in seconds, the lake's position and the slot's retained WAL are read when Prometheus
scrapes, so they are current between batches (the slot through ``slot``, a callable the entry
point wires to the source).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from replicator.domain.errors import ReplicatorError, TransientError
from replicator.domain.lsn import Lsn
from replicator.domain.model import AppliedBatch, SlotState
from replicator.domain.ports import CdcObserver

# Batch write durations: local Delta takes tens of milliseconds, Databricks seconds.
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class PrometheusObserver(CdcObserver, Collector):
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        slot: Callable[[], tuple[Lsn, SlotState | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._slot = slot
        self._clock = clock
        self._lock = threading.Lock()
        self._position: Lsn | None = None
        self._server: Lsn | None = None
        self._last_commit: dt.datetime | None = None
        self._caught_up = False
        self._last_success: float | None = None
        self.changes = Counter(
            "replicator_changes_applied",
            "Source changes applied to the lake, per source table",
            ["table"],
            registry=self.registry,
        )
        self.transactions = Counter(
            "replicator_transactions_applied",
            "Source transactions applied to the lake, counted once per table they changed",
            ["table"],
            registry=self.registry,
        )
        self.batches = Histogram(
            "replicator_batch_seconds",
            "Time to write one CDC batch to the lake (commit included)",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "replicator_errors",
            "Runs ended by an error, by kind (transient ones are retried by --follow)",
            ["kind", "transient"],
            registry=self.registry,
        )
        self.registry.register(self)

    # -- CdcObserver -----------------------------------------------------------------------

    def applied(self, batch: AppliedBatch) -> None:
        for table in batch.tables:
            name = str(table.table_id)
            self.changes.labels(name).inc(table.changes)
            self.transactions.labels(name).inc(table.transactions)
        self.batches.observe(batch.seconds)
        with self._lock:
            self._position = batch.position
            if batch.last_commit is not None:
                self._last_commit = batch.last_commit
            self._caught_up = False
            self._last_success = self._clock()

    def caught_up(self, position: Lsn) -> None:
        with self._lock:
            self._server = position
            self._caught_up = True

    def failed(self, error: Exception) -> None:
        transient = "true" if isinstance(error, TransientError) else "false"
        self.errors.labels(type(error).__name__, transient).inc()

    # -- Collector (at scrape time) --------------------------------------------------------

    def describe(self) -> list[Any]:
        return []  # values depend on the moment: collected at each scrape

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            position, idle_at, last_commit = self._position, self._server, self._last_commit
            caught_up, last_success = self._caught_up, self._last_success
        # Caught up, the lake holds every change of ours up to where the stream went idle.
        held = max(int(position or 0), int(idle_at or 0)) if caught_up else int(position or 0)
        server: int | None = int(idle_at) if idle_at is not None else None
        slot_state: SlotState | None = None
        if self._slot is not None:
            try:
                fresh, slot_state = self._slot()
                server = int(fresh)
            except ReplicatorError:  # a scrape never fails the pipeline: gauges left out
                slot_state = None
        if held:
            yield _gauge("replicator_lake_position_bytes", "WAL position the lake holds", held)
        if server is not None and held:
            lag = max(0, server - held)
            yield _gauge("replicator_lag_bytes", "WAL between the server and the lake", lag)
        if caught_up:
            seconds = 0.0
        elif last_commit is not None:
            now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
            seconds = max(0.0, (now - last_commit).total_seconds())
        else:
            seconds = None
        if seconds is not None:
            yield _gauge(
                "replicator_lag_seconds",
                "Age of the last transaction the lake holds (0 when caught up)",
                seconds,
            )
        if last_success is not None:
            yield _gauge(
                "replicator_last_commit_timestamp_seconds",
                "When the lake last committed a batch (Unix time)",
                last_success,
            )
        if slot_state is not None and slot_state.restart_lsn is not None and server is not None:
            retained = max(0, server - int(slot_state.restart_lsn))
            yield _gauge(
                "replicator_slot_retained_wal_bytes", "WAL the server keeps for the slot", retained
            )

    def serve(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 (scraped)
        """Serve /metrics on ``port`` from a daemon thread, for the life of the process."""
        start_http_server(port, addr=address, registry=self.registry)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))
