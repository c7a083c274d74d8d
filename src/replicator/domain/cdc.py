"""The CDC use case: stream committed changes into the lake, exactly once in effect.

Invariants, stated once:
- the checkpoint is always a commit position: a batch normally ends at a transaction boundary;
  a transaction too large for one batch is written in parts, and those parts carry the
  checkpoint of the last transaction committed before it (a crash in between replays the whole
  transaction, and since the lake then only moves forward to the same final rows, ends equal);
- each batch is compacted per table and key, then applied as one atomic merge per table, with
  the checkpoint written in the same load;
- the slot is acknowledged only after the lake write returned, never before, and never beyond
  the lake's checkpoint (idle positions are first written to the lake, then acknowledged).
- each table's write records the batch's frontier as that table's position, atomically with its
  data; the checkpoint, a separate commit, follows. A run skips, table by table, every change the
  table's position (or the checkpoint) holds, so a replay never applies a change twice: appends
  and row counts stay exact, not only merges.
A crash anywhere therefore leaves the lake at a checkpoint the slot has not passed, with tables
that may hold more; the next run re-reads from the checkpoint and applies to each table exactly
the changes it lacks.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from replicator.domain.checkpoint import LsnCheckpoint, slot_generations
from replicator.domain.compaction import BatchCompactor
from replicator.domain.errors import ReplicatorError, SourceSchemaError
from replicator.domain.lake_columns import clash
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    AppliedBatch,
    CdcReport,
    Change,
    Checkpoint,
    Frontier,
    Idle,
    SchemaChange,
    SourceIdentity,
    TableApplied,
    TableChanges,
    TableId,
    TableLoad,
    TableSchema,
    TransactionEnd,
    TransactionStart,
    Truncation,
)
from replicator.domain.ports import (
    CdcObserver,
    ChangeSource,
    ChangeStream,
    LakeMaintenance,
    LakeWriter,
    SnapshotSource,
    TableCatalog,
)

log = logging.getLogger(__name__)
_NO_TS = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class StopSignal(Protocol):
    """Set from outside (SIGTERM, SIGINT) to end a ``follow`` run after the current batch."""

    def is_set(self) -> bool: ...


class _NeverStop:
    def is_set(self) -> bool:
        return False


class _Unobserved:
    """The default observer: hears nothing."""

    def applied(self, batch: AppliedBatch) -> None:
        return None

    def caught_up(self, position: Lsn) -> None:
        return None

    def failed(self, error: Exception) -> None:
        return None


@attrs.frozen
class BatchLimits:
    """When a batch is flushed to the lake (whichever limit is reached first)."""

    max_changes: int = 100_000
    # Bytes of pgoutput row messages: what bounds memory (a batch costs ~4x this in Python
    # objects while it is collected, plus its columnar copy and dlt's load).
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 10.0
    # In --follow, once the stream has nothing more to give and the batch's last commit is
    # recent (less than max_seconds ago by the source's clock: the run is live, not catching
    # up), the batch is written at once if it is at least this old, instead of waiting out
    # max_seconds. 0 (the default) writes every batch as soon as the stream pauses: a change
    # is readable in the lake about one write after its commit. Catching up, batches still
    # grow to the limits above, where a write costs least per change.
    min_seconds: float = 0.0
    # A transaction in flight is written in parts of at most this many bytes (or max_changes
    # changes). Smaller than max_bytes: a part cannot be committed anyway, only memory counts.
    # 8 MiB is ~38k rows of 220 bytes; a 2,000,000-row transaction then peaks at ~450 MB RSS,
    # while whole transactions keep batching up to max_bytes (fewer loads: workload C of
    # ``make bench`` takes 27 s with 8 MiB batches, 18 s with 64 MiB).
    part_bytes: int = 8 * 1024 * 1024
    # While idle, move the checkpoint (and so the slot) to the server's position once it is this
    # far ahead, so a quiet publication on a busy server does not pin WAL.
    idle_advance_bytes: int = 16 * 1024 * 1024
    # In --follow, also move it at least this often when the server position moved at all.
    idle_advance_seconds: float = 300.0
    # In --follow, look for tables created (or included) since the run started this often; the
    # run then ends so the next one snapshots them (the CLI starts it at once).
    discover_seconds: float = 60.0


# How many changes pass between two checks of a transaction's size (a check asks the stream).
_SIZE_CHECK_EVERY = 4096


@attrs.define(eq=False)
class _Batch:
    started: float
    compactor: BatchCompactor = attrs.field(factory=BatchCompactor)
    transactions: int = 0
    changes: int = 0
    # Bytes of pgoutput row messages of its transactions (each counted whole at its commit).
    size_bytes: int = 0
    # A batch cut inside a transaction continues it: the bytes the earlier parts wrote, which
    # that transaction's commit counts again.
    written_before: int = 0
    end: Lsn | None = None
    check_at: int = 0  # the first change sets it
    last_commit: datetime.datetime | None = None  # of its last whole transaction


@attrs.define(eq=False)
class CdcService:
    catalog: TableCatalog
    source: ChangeSource
    writer: LakeWriter
    checkpoint: LsnCheckpoint
    limits: BatchLimits = BatchLimits()
    soft_delete: bool = False
    # "replicate" (default): TRUNCATE empties the lake table in order; "ignore": the lake keeps
    # the rows (for users who truncate staging tables at the source but keep history downstream).
    truncate: str = "replicate"
    # Snapshots tables created (or included) after the lake's snapshot, each on its own.
    table_snapshots: SnapshotSource | None = None
    clock: Callable[[], float] = time.monotonic
    # The time now, compared with the source's commit timestamps (is the run live?).
    wall_clock: Callable[[], datetime.datetime] = attrs.field(default=lambda: _now())
    # Hears every batch applied and every idle moment (the metrics endpoint).
    observer: CdcObserver = attrs.field(factory=_Unobserved)
    # Compacts and cleans the lake's tables every ``maintain_every`` batches (0: never).
    maintenance: LakeMaintenance | None = None
    maintain_every: int = 0
    # How long the last batch took to encode, write and acknowledge.
    _last_write_seconds: float = attrs.field(default=0.0, init=False)

    def run(
        self,
        *,
        follow: bool = False,
        stop: StopSignal | None = None,
        until: Lsn | None = None,
        locked: bool = False,
    ) -> CdcReport:
        """Drain (default): apply everything committed before the run started, then return.
        ``follow``: keep applying until ``stop`` is set; the batch in hand is finished first.
        ``until``: drain exactly the transactions whose commit record lies before this position
        (the lake then equals a snapshot exported there). ``locked``: the caller holds the
        pipeline's lock (``source.exclusive()``) already."""
        try:
            if locked:
                return self._run(follow, stop or _NeverStop(), until)
            with self.source.exclusive():
                return self._run(follow, stop or _NeverStop(), until)
        except Exception as e:
            self.observer.failed(e)
            raise

    def _run(self, follow: bool, stop: StopSignal, until: Lsn | None) -> CdcReport:
        tables = self._replicable(self.catalog.discover())
        self.source.prepare(tables)
        checkpoint = self.checkpoint.resolve(self.source.slot, self.source.identity())
        self._report_other_slots(checkpoint.slot)
        self.writer.tidy()
        checkpoint = self._snapshot_new_tables(tables, checkpoint)
        checkpoint = self._reload_reprinted(tables, checkpoint)
        tables = self._snapshotted(tables, checkpoint)
        # The shapes the lake follows: as of the checkpoint (ahead of it, the catalog may
        # already show columns the stream has not reached yet).
        schemas = {t.table_id: self._lake_shape(t, checkpoint) for t in tables}
        target = None if follow else (until or self.source.server_position())
        log.info(
            "CDC from %s%s", checkpoint.position, f" up to {target}" if target else " (follow)"
        )

        lake = _LakeState(
            checkpoint.tables or frozenset(schemas),
            {**checkpoint.schemas, **schemas},
            dict(checkpoint.starts),
            slot=checkpoint.slot,
            source=checkpoint.source,
            commit_ts=checkpoint.commit_ts,
        )
        report = _Progress(start=checkpoint.position, position=checkpoint.position)
        held_by = _Held.of(checkpoint, self.writer.positions(schemas), lake.starts)
        slot = self.checkpoint.slot_of(checkpoint)
        with self.source.open(list(schemas.values()), checkpoint.position, slot) as stream:
            run = _Run(self, stream, checkpoint, schemas, lake, report, held_by)
            run.follow, run.stop, run.until, run.target = follow, stop, until, target
            run.batch = run.new_batch()
            for event in stream.events():
                if isinstance(event, Change):  # the hot path: few checks, then fold it in
                    if event.lsn == run.at_lsn:
                        run.at_n += 1
                    else:
                        run.at_lsn, run.at_n = event.lsn, 1
                    if run.replayed is not None and (run.at_lsn, run.at_n) <= run.replayed:
                        continue
                    if run.held and (run.at_lsn, run.at_n) <= run.held.get(
                        event.table_id, _NOTHING
                    ):
                        continue
                    batch = run.batch
                    batch.compactor.apply(event, run.commit_ts)
                    batch.changes += 1
                    if batch.changes >= batch.check_at and self._split(stream, batch):
                        run.cut_part()
                elif isinstance(event, TransactionStart):
                    if not run.begin(event):
                        break  # committed after the point we drain to
                elif isinstance(event, TransactionEnd):
                    run.end(event)
                elif isinstance(event, Truncation):
                    run.truncation(event)
                elif isinstance(event, SchemaChange):
                    run.schema_change(event)
                elif run.idle(event):
                    break
            run.finish()
        return report.freeze()

    def _report_other_slots(self, ours: str | None) -> None:
        for name in slot_generations(self.checkpoint.slot_name):
            if name != ours and self.source.occupied(name):
                log.warning(
                    "replication slot %s exists and this lake does not use it (it continues "
                    "from %s): another pipeline's, or left by an interrupted snapshot (then it "
                    "pins WAL: drop it with `replicator drop-slot --slot %s`)",
                    name,
                    ours,
                    name,
                )

    def _catalog_moved(self, lake: _LakeState) -> bool:
        """New tables to snapshot, or types whose values now print differently (their tables
        to reload): the run ends, the next one (started at once by --follow) does it."""
        tables = self.catalog.discover()
        added = sorted({t.table_id for t in tables} - lake.tables)
        if added:
            log.info("new table(s) %s: restarting to snapshot them", ", ".join(map(str, added)))
        reprinted = [
            t.table_id
            for t in tables
            if t.table_id in lake.shapes and lake.shapes[t.table_id].reprinted(t)
        ]
        if reprinted:
            log.info(
                "the values of %s print differently now: restarting to reload them",
                ", ".join(map(str, reprinted)),
            )
        return bool(added or reprinted)

    # -- decisions -------------------------------------------------------------------------

    def _full(self, batch: _Batch) -> bool:
        limits = self.limits
        return (
            batch.changes >= limits.max_changes
            or batch.size_bytes - batch.written_before >= limits.max_bytes
            or self._old(batch)
        )

    def _split(self, stream: ChangeStream, batch: _Batch) -> bool:
        """Inside a transaction: has the batch outgrown its limits before the commit came?"""
        limits = self.limits
        batch.check_at = min(batch.changes + _SIZE_CHECK_EVERY, limits.max_changes + 1)
        if batch.compactor.holding:  # a deferrable key's rows are known at the commit only
            return False
        return (
            batch.changes > limits.max_changes
            or batch.size_bytes - batch.written_before + stream.pending_bytes() > limits.part_bytes
        )

    def _maintenance_due(self, batches: int) -> bool:
        every = self.maintain_every
        return self.maintenance is not None and every > 0 and batches % every == 0

    def _old(self, batch: _Batch) -> bool:
        return self.clock() - batch.started >= self.limits.max_seconds

    def _live(self, batch: _Batch) -> bool:
        """Is the batch's last commit recent, and the batch old enough to write on a pause?

        Old enough: ``min_seconds``, and as old as the last write took, so that writing takes
        at most about half of a live run's time and reading keeps up; a write's cost is mostly
        fixed (a round of statements per table), so batches grow while writes are slow."""
        limits = self.limits
        age = self.clock() - batch.started
        if batch.last_commit is None or age < max(limits.min_seconds, self._last_write_seconds):
            return False
        behind = self.wall_clock() - batch.last_commit
        return behind.total_seconds() < limits.max_seconds

    def _should_advance(self, idle: Idle, position: Lsn, follow: bool, last: float) -> bool:
        ahead = idle.position - position
        if ahead <= 0:
            return False
        if ahead >= self.limits.idle_advance_bytes:
            return True
        return follow and self.clock() - last >= self.limits.idle_advance_seconds

    @staticmethod
    def _replicable(tables: list[TableSchema]) -> list[TableSchema]:
        if not tables:
            raise SourceSchemaError(
                "no tables to replicate: check the schemas and the include/exclude lists "
                "in [sources.pg_replication]"
            )
        for table in tables:
            if table.identity_problem:
                raise SourceSchemaError(table.identity_problem)
            if not (table.primary_key or table.keyless_full or table.inserts_only):
                raise SourceSchemaError(
                    f"{table.table_id} has no primary key, so its updates and deletes cannot be "
                    f"matched in the lake: {table.fix_sql()}, or set [sources.pg_replication] "
                    'keyless_tables = "insert_only" to replicate its inserts only'
                )
        return tables

    @staticmethod
    def _lake_shape(table: TableSchema, checkpoint: Checkpoint) -> TableSchema:
        """The shape as of the checkpoint, replicated as the source is now (inserts only or
        not, with a deferrable key or not)."""
        stored = checkpoint.schemas.get(table.table_id)
        if stored is None:
            return table
        return attrs.evolve(
            stored, inserts_only=table.inserts_only, deferrable_key=table.deferrable_key
        )

    def _snapshot_new_tables(self, tables: list[TableSchema], checkpoint: Checkpoint) -> Checkpoint:
        """Load tables the lake does not have yet, in a snapshot of their own taken now at a
        position P; their changes apply from the transactions committing at or after P, the
        other tables' from the checkpoint as before."""
        new = [t for t in tables if checkpoint.tables and t.table_id not in checkpoint.tables]
        return self._snapshot_on_their_own(new, checkpoint, "snapshotted new table(s)")

    def _reload_reprinted(self, tables: list[TableSchema], checkpoint: Checkpoint) -> Checkpoint:
        """Reload, on their own as new tables are, the tables with values that print
        differently than when the lake wrote them (``ALTER TYPE ... RENAME VALUE``, ``ADD
        ATTRIBUTE``...: no row rewritten, so no WAL; the lake's untouched rows would keep the
        old text)."""
        stale = []
        for table in tables:
            lake = checkpoint.schemas.get(table.table_id)
            columns = lake.reprinted(table) if lake is not None else []
            if columns:
                log.warning(
                    "%s: the values of %s print differently than when the lake wrote them (a "
                    "type's value renamed or its attributes changed, which rewrites no row): "
                    "reloading the table",
                    table.table_id,
                    ", ".join(columns),
                )
                stale.append(table)
        if stale and self.table_snapshots is None:
            raise SourceSchemaError(
                f"{', '.join(str(t.table_id) for t in stale)}: values print differently than "
                "the lake holds them; run `replicator --mode snapshot`"
            )
        return self._snapshot_on_their_own(stale, checkpoint, "reloaded table(s)")

    def _reload_in_stream(
        self,
        change: SchemaChange,
        until: Lsn | None,
        stream: ChangeStream,
        checkpoint: Checkpoint,
    ) -> tuple[TableSchema, Lsn]:
        """Reload a table the stream cannot evolve exactly, on its own as new tables are: its
        shape now and the position from which its changes apply."""
        table_id = change.table_id
        if until is not None:
            raise SourceSchemaError(
                f"{table_id}: {change.reload}: it must be reloaded, which a drain to a fixed "
                "position cannot do; run `replicator --mode cdc`, which reloads it, then again"
            )
        found = [t for t in self.catalog.discover() if t.table_id == table_id]
        if not found or self.table_snapshots is None:
            raise SourceSchemaError(
                f"{table_id}: {change.reload}; run `replicator --mode snapshot`"
            )
        log.warning("%s: %s: reloading the table", table_id, change.reload)
        with stream.keepalive():
            extended = self._snapshot_on_their_own(
                self._replicable(found), checkpoint, "reloaded table(s)"
            )
        return extended.schemas[table_id], extended.starts[table_id]

    def _snapshot_on_their_own(
        self, new: list[TableSchema], checkpoint: Checkpoint, done: str
    ) -> Checkpoint:
        if not new or self.table_snapshots is None:
            return checkpoint
        names = ", ".join(str(t.table_id) for t in new)
        # Loaded from scratch: the metadata columns take names no source column has.
        new = [t.choosing_lake_columns(self.writer.column_names(t).values()) for t in new]
        with self.table_snapshots.open(new) as reader:
            start = reader.position
            if start is None:
                raise SourceSchemaError(
                    f"{names}: cannot snapshot on its own without a replication slot position; "
                    "run `replicator --mode snapshot`"
                )
            extended = attrs.evolve(
                checkpoint,
                tables=checkpoint.tables | {t.table_id for t in new},
                schemas={**checkpoint.schemas, **{t.table_id: t for t in new}},
                starts={**checkpoint.starts, **{t.table_id: start for t in new}},
                idle=False,
            )
            loads = [
                TableLoad(t, reader.read(t), t.retyped_since(checkpoint.schemas.get(t.table_id)))
                for t in new
            ]
            infos = self.writer.replace(loads, extended)
        rows = sum(i.rows for i in infos)
        log.info("%s %s at %s (%d rows); CDC continues", done, names, start, rows)
        return extended

    @staticmethod
    def _snapshotted(tables: list[TableSchema], checkpoint: Checkpoint) -> list[TableSchema]:
        if not checkpoint.tables:
            return tables
        found = {t.table_id for t in tables}
        for gone in sorted(checkpoint.tables - found):
            log.warning(
                "%s is no longer replicated (dropped or excluded); its lake table stays", gone
            )
        new = sorted(found - checkpoint.tables)
        if new:
            names = ", ".join(str(t) for t in new)
            raise SourceSchemaError(
                f"{names} not in the lake yet (created or included after the snapshot): run "
                "`replicator --mode snapshot` to load it, or exclude it"
            )
        return [t for t in tables if t.table_id in checkpoint.tables]

    # -- actions -----------------------------------------------------------------------------

    def _flush(
        self,
        stream: ChangeStream,
        batch: _Batch,
        *,
        schemas: dict[TableId, TableSchema],
        lake: _LakeState,
        report: _Progress,
        partial: bool = False,
    ) -> None:
        # A part of a transaction in flight carries the last committed position (see above).
        position = batch.end or report.position
        encoder = stream.encoder
        applied = tuple(
            TableApplied(t.table_id, t.changes, t.transactions)
            for t in batch.compactor.tables.values()
            if t.changes
        )
        if batch.last_commit is not None:
            lake.commit_ts = batch.last_commit
        flush_started = self.clock()
        # The server hears from us while a large batch is encoded and written: it would
        # otherwise time the session out, or ask for a reply in the middle of a transaction.
        with stream.keepalive():
            changes = [
                TableChanges(
                    schema=schemas[table.table_id],
                    batch=encoder.encode(schemas[table.table_id], table, self.soft_delete),
                    truncated=table.truncated,
                    soft_delete=self.soft_delete,
                )
                for table in batch.compactor.tables.values()
                if table.size or table.truncated
            ]
            # The columnar batches hold everything now: the compacted rows (a few hundred bytes
            # of Python objects per change) are freed before the load, which can reuse their
            # memory.
            batch.compactor.tables.clear()
            started = self.clock()
            self.writer.merge(changes, lake.at(position))
        if batch.end is not None:
            # Only now, with the lake committed, may the server forget these changes.
            stream.acknowledge(batch.end)
        self._last_write_seconds = self.clock() - flush_started
        self.observer.applied(
            AppliedBatch(
                applied,
                batch.transactions,
                batch.changes,
                self.clock() - started,
                position,
                batch.last_commit,
            )
        )
        report.batches += 1
        if self._maintenance_due(report.batches):
            assert self.maintenance is not None
            try:
                with stream.keepalive():
                    done = self.maintenance.maintain(sorted(lake.tables))
            except ReplicatorError as e:  # housekeeping: the batch is committed, acknowledged
                log.warning("maintenance after %d batches failed; CDC goes on: %s",
                            report.batches, e)  # fmt: skip
            else:
                log.info("maintained %s after %d batches", _counted(len(done), "table"),
                         report.batches)  # fmt: skip
        report.tables.update(c.schema.table_id for c in changes)
        report.transactions += batch.transactions
        report.changes += batch.changes
        report.position = position
        part = None
        if partial and lake.in_flight is not None:
            commit = lake.in_flight[0]
            report.parts = report.parts + 1 if report.parted == commit else 1
            report.parted = commit
            part = (commit, report.parts, False)
        elif report.parted is not None:  # this batch holds the last part
            part = (report.parted, report.parts + 1, True)
            report.parted, report.parts = None, 0
        log.info(
            "%s", applied_line(batch.changes, batch.transactions, len(changes), position, part)
        )

    def _advance(
        self, stream: ChangeStream, position: Lsn, lake: _LakeState, report: _Progress
    ) -> None:
        """Nothing of ours is pending: record the server's position, then confirm it."""
        with stream.keepalive():
            self.writer.merge([], lake.at(position, idle=True))
        stream.acknowledge(position)
        report.position = position
        log.debug("idle: checkpoint and slot advanced to %s", position)


def _counted(n: int, what: str) -> str:
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"


def applied_line(
    changes: int,
    transactions: int,
    tables: int,
    position: Lsn,
    part: tuple[Lsn, int, bool] | None = None,
) -> str:
    """The log line of one batch written. ``part``: (commit position, part number, last) when
    the batch holds a part of a transaction written in parts."""
    if part is None:
        return (
            f"applied {_counted(changes, 'change')} ({_counted(transactions, 'transaction')}, "
            f"{_counted(tables, 'table')}) up to {position}"
        )
    commit, number, last = part
    whole = transactions - 1 if last else transactions
    before = f" and {_counted(whole, 'whole transaction')}" if whole else ""
    which = "the last part" if last else "part"
    return (
        f"applied {which} {number} of the transaction committing at {commit}{before}: "
        f"{_counted(changes, 'change')}, {_counted(tables, 'table')}"
        + (f", up to {position}" if last else "")
    )


_ALL = (1 << 64, 0)  # every change of a transaction
_NOTHING = (-1, 0)  # none of them


@attrs.define
class _Held:
    """Tables that hold more of the stream than the checkpoint: written after it by a run that
    crashed before committing the checkpoint (their own position says how far), or snapshotted
    on their own (their snapshot saw the transactions committed before its start). Empty once
    the stream has passed them all, which keeps the hot path free of checks."""

    frontiers: dict[TableId, Frontier]

    @classmethod
    def of(
        cls,
        checkpoint: Checkpoint,
        positions: dict[TableId, Frontier],
        starts: dict[TableId, Lsn],
    ) -> _Held:
        base = checkpoint.frontier
        frontiers = {t: p for t, p in positions.items() if p > base}
        for table, start in starts.items():
            frontiers[table] = max(frontiers.get(table, base), Frontier(int(start)))
        for table, frontier in sorted(frontiers.items()):
            if table not in starts:
                log.info("%s already holds the changes up to %s: skipping them", table, frontier)
        return cls({t: f for t, f in frontiers.items() if f > base})

    def __bool__(self) -> bool:
        return bool(self.frontiers)

    def hold(self, table: TableId, start: Lsn) -> None:
        """The table holds every transaction committed before ``start`` (reloaded there)."""
        self.frontiers[table] = Frontier(int(start))

    def at(self, commit: Lsn) -> dict[TableId, tuple[int, int]]:
        """For the transaction committing at ``commit``: per table, up to which of its changes
        (WAL position, number) the table holds it. Frontiers the stream has passed are
        dropped."""
        at = int(commit)
        held: dict[TableId, tuple[int, int]] = {}
        for table, frontier in list(self.frontiers.items()):
            if frontier.commit > at:
                held[table] = _ALL
            elif frontier.commit == at and frontier.within > (0, 0):
                held[table] = frontier.within
            else:
                del self.frontiers[table]
        return held


@attrs.define
class _LakeState:
    """What the lake's checkpoint holds besides its position, kept current while CDC runs."""

    tables: frozenset[TableId]
    shapes: dict[TableId, TableSchema]  # as of the last commit read
    starts: dict[TableId, Lsn]
    in_flight: tuple[Lsn, Lsn, int] | None = None  # set while a transaction is written in parts
    slot: str | None = None
    source: SourceIdentity | None = None
    commit_ts: datetime.datetime | None = None  # of the last transaction the lake holds

    def at(self, position: Lsn, *, idle: bool = False) -> Checkpoint:
        return Checkpoint(
            position,
            self.tables,
            schemas=dict(self.shapes),
            starts={t: s for t, s in self.starts.items() if s > position},
            in_flight=self.in_flight,
            slot=self.slot,
            idle=idle,
            source=self.source,
            commit_ts=self.commit_ts,
        )

    def snapshotted_before(self, commit: Lsn | None) -> frozenset[TableId]:
        """Tables whose own snapshot already holds a transaction committing at ``commit``."""
        if not self.starts or commit is None:
            return frozenset()
        return frozenset(t for t, start in self.starts.items() if commit < start)


@attrs.define
class _Progress:
    start: Lsn
    position: Lsn
    transactions: int = 0
    changes: int = 0
    batches: int = 0
    tables: set[TableId] = attrs.field(factory=set)
    rescan: bool = False
    # The transaction being written in parts (its commit position), and its parts so far.
    parted: Lsn | None = None
    parts: int = 0

    def freeze(self) -> CdcReport:
        return CdcReport(
            self.transactions,
            self.changes,
            self.batches,
            self.start,
            self.position,
            tuple(sorted(self.tables)),
            self.rescan,
        )


@attrs.define(eq=False)
class _Run:
    """One CDC run's state between stream events, with one method per kind of event; the hot
    path (a row change) stays in ``CdcService._run``'s loop, reading this state."""

    service: CdcService
    stream: ChangeStream
    checkpoint: Checkpoint
    schemas: dict[TableId, TableSchema]  # the shapes the lake follows
    lake: _LakeState
    report: _Progress
    held_by: _Held
    follow: bool = False
    stop: StopSignal = attrs.field(factory=_NeverStop)
    until: Lsn | None = None
    target: Lsn | None = None  # a drain ends at the first idle moment at or past it
    batch: _Batch = attrs.field(init=False)
    # The transaction in flight: its commit position and time.
    commit: Lsn | None = None
    commit_ts: datetime.datetime = _NO_TS
    # The last change's place in the transaction in flight: its WAL position and number among
    # the changes at that position (the same whichever tables this run follows).
    at_lsn: int = 0
    at_n: int = 0
    # Up to where every table holds the transaction (the checkpoint's part), and where tables
    # that hold more do.
    replayed: tuple[int, int] | None = None
    held: dict[TableId, tuple[int, int]] = attrs.field(factory=dict)
    # Tables snapshotted on their own whose snapshot already holds the transaction.
    skipping: frozenset[TableId] = frozenset()
    # Shape changes inside the transaction in flight: the lake's shapes once it commits.
    new_shapes: dict[TableId, TableSchema] = attrs.field(factory=dict)
    last_idle: Lsn | None = None
    last_advance: float = 0.0
    last_discover: float = 0.0
    # The tables whose rows are counted (keyless) and whose key is deferrable: per batch.
    counted: frozenset[TableId] = frozenset()
    deferred: frozenset[TableId] = frozenset()

    def __attrs_post_init__(self) -> None:
        self.last_advance = self.last_discover = self.service.clock()
        self._table_kinds()

    def _table_kinds(self) -> None:
        schemas = self.schemas.items()
        self.counted = frozenset(t for t, schema in schemas if schema.keyless_full)
        self.deferred = frozenset(t for t, schema in schemas if schema.deferrable_key)

    # -- batches ---------------------------------------------------------------------------

    def new_batch(self, written_before: int = 0) -> _Batch:
        compactor = BatchCompactor(self.counted, self.deferred)
        return _Batch(self.service.clock(), compactor, written_before=written_before)

    def flush(self, *, partial: bool = False) -> None:
        self.service._flush(
            self.stream,
            self.batch,
            schemas=self.schemas,
            lake=self.lake,
            report=self.report,
            partial=partial,
        )

    def cut_part(self) -> None:
        """Write the batch in hand, which ends inside the transaction in flight; a new one
        continues it."""
        commit = self.commit
        self.lake.in_flight = None if commit is None else (commit, Lsn(self.at_lsn), self.at_n)
        self.flush(partial=True)
        self.batch = self.new_batch(written_before=self.stream.pending_bytes())

    # -- events ----------------------------------------------------------------------------

    def begin(self, event: TransactionStart) -> bool:
        """A transaction starts; False if it commits after the point a drain ends at."""
        commit = self.commit = event.commit_lsn
        if self.until is not None and commit is not None and commit >= self.until:
            return False
        self.commit_ts = event.commit_ts
        self.skipping = self.lake.snapshotted_before(commit)
        self.at_lsn = self.at_n = 0
        part = self.checkpoint.in_flight
        self.replayed = (int(part[1]), part[2]) if part and part[0] == commit else None
        self.held = self.held_by.at(commit) if self.held_by and commit is not None else {}
        if self.batch.transactions == 0:
            self.batch.started = self.service.clock()
        return True

    def end(self, event: TransactionEnd) -> None:
        batch = self.batch
        batch.compactor.end_transaction()
        self.lake.in_flight = None
        batch.transactions += 1
        batch.size_bytes += event.size_bytes
        batch.end = event.end_lsn
        batch.last_commit = self.commit_ts
        if self.new_shapes:
            self.lake.shapes.update(self.new_shapes)
            self.new_shapes.clear()
        if self.service._full(batch):
            self.flush()
            self.batch = self.new_batch()

    def truncation(self, event: Truncation) -> None:
        if self.service.truncate == "ignore":
            log.info(
                "TRUNCATE of %s ignored (--truncate=ignore)", ", ".join(map(str, event.table_ids))
            )
            return
        if event.lsn == self.at_lsn:
            self.at_n += 1
        else:
            self.at_lsn, self.at_n = event.lsn, 1
        place = (self.at_lsn, self.at_n)
        if self.replayed is not None and place <= self.replayed:
            return
        if self.held:
            kept = tuple(t for t in event.table_ids if place > self.held.get(t, _NOTHING))
            if not kept:
                return
            event = Truncation(kept, event.lsn)
        self.batch.compactor.apply(event, self.commit_ts)
        self.batch.changes += 1

    def schema_change(self, event: SchemaChange) -> None:
        table_id = event.table_id
        if self.skipping and table_id in self.skipping:
            # Older than the table's own snapshot, which has the newer shape.
            self.stream.adopt(self.schemas[table_id])
            return
        if event.problems:
            raise SourceSchemaError(event.problems[0])
        # (A table to reload chooses its metadata names anew.)
        names = self.service.writer.column_names(event.after)
        if event.reload is None and (problem := clash(event, names)):
            raise SourceSchemaError(problem)
        # Changes before it have the old shape: they go first, then the lake's table is
        # evolved (or reloaded), then changes in the new shape follow.
        if self.batch.changes:
            # Changes held for a deferrable key are folded in as they stand.
            self.batch.compactor.end_transaction()
            self.cut_part()
        if event.reload is not None:
            self._reload(event)
            return
        log.info("schema change at %s: %s", Lsn(event.lsn), event.describe())
        with self.stream.keepalive():
            self.service.writer.evolve(event)
        after = self.schemas[table_id].keeping_signatures(event.after)
        self.schemas[table_id] = self.new_shapes[table_id] = after

    def _reload(self, event: SchemaChange) -> None:
        table_id = event.table_id
        shape, start = self.service._reload_in_stream(
            event, self.until, self.stream, self.lake.at(self.report.position)
        )
        self.lake.starts[table_id] = start
        self.lake.shapes[table_id] = self.schemas[table_id] = shape
        self.new_shapes.pop(table_id, None)
        self.stream.adopt(shape)
        # Its changes up to the reload's position are in the reloaded table.
        self.held_by.hold(table_id, start)
        self.held = self.held_by.at(self.commit) if self.commit is not None else {}
        self.skipping = self.lake.snapshotted_before(self.commit)
        self._table_kinds()  # its kind may have changed: the next batches follow

    def idle(self, event: Idle) -> bool:
        """Nothing in flight on the server side; True when the run is to end."""
        service, batch = self.service, self.batch
        self.last_idle = event.position
        done = self.target is not None and event.position >= self.target
        if batch.transactions and (
            done
            or self.stop.is_set()
            or (self.follow and (service._old(batch) or service._live(batch)))
        ):
            self.flush()
            batch = self.batch = self.new_batch()
        # Never while transactions wait in the batch: the checkpoint would pass changes the
        # lake does not hold, and a crash would lose them.
        if not batch.transactions and service._should_advance(
            event, self.report.position, self.follow, self.last_advance
        ):
            service._advance(self.stream, event.position, self.lake, self.report)
            self.last_advance = service.clock()
        if not batch.transactions:
            service.observer.caught_up(event.position)
        if self.stop.is_set() or done:
            return True
        if self.follow and service.clock() - self.last_discover >= service.limits.discover_seconds:
            self.last_discover = service.clock()
            if service._catalog_moved(self.lake):
                self.report.rescan = True
                return True
        return False

    def finish(self) -> None:
        if self.batch.transactions:
            self.flush()
        # Once everything received is confirmed, psycopg2 moves the slot's flush position on
        # to the server's WAL end from keepalives by itself. Record that position in the lake
        # before leaving, so the slot is never left ahead of the lake's checkpoint (which the
        # next start would take for lost changes).
        if self.last_idle is not None and self.last_idle > self.report.position:
            self.service._advance(self.stream, self.last_idle, self.lake, self.report)
