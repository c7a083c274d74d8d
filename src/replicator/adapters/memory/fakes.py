"""In-memory fakes of every port, for unit tests of the domain services.

They keep real state and fail deterministically when told to (``fail_on_table=...``), never at
random. Batches are plain lists of row dicts (anything with ``num_rows`` would do).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import attrs

from replicator.domain.compaction import CompactedTable
from replicator.domain.errors import (
    LakeWriteError,
    PipelineBusyError,
    ReplicatorError,
    SourceUnavailableError,
)
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    Checkpoint,
    Frontier,
    Idle,
    Key,
    LakeBatch,
    LakeCensus,
    LakeTableInfo,
    RowBatch,
    SchemaChange,
    SlotState,
    SourceFacts,
    SourceIdentity,
    StreamEvent,
    TableChanges,
    TableId,
    TableLoad,
    TableSchema,
    Transaction,
)
from replicator.domain.ports import (
    BatchEncoder,
    ChangeSource,
    ChangeStream,
    CheckpointStore,
    LakeRowReader,
    LakeWriter,
    SnapshotReader,
    SnapshotSource,
    SourceInspector,
    SourceRowReader,
    SourceTextReader,
    TableCatalog,
    TextRow,
)

Row = dict[str, Any]
_START = Lsn(0)


@attrs.frozen
class RowList:
    """A batch of row dicts; satisfies the domain's ``RowBatch``."""

    rows: tuple[Row, ...]

    @property
    def num_rows(self) -> int:
        return len(self.rows)


class InMemoryTableCatalog(TableCatalog):
    def __init__(
        self,
        tables: Iterable[TableSchema] = (),
        error: ReplicatorError | None = None,
        left_out: Iterable[TableSchema] = (),
    ):
        self.tables = list(tables)
        self.error = error
        self.skipped = list(left_out)

    def left_out(self) -> list[TableSchema]:
        return list(self.skipped)

    def discover(self) -> list[TableSchema]:
        if self.error is not None:
            raise self.error
        return sorted(self.tables, key=lambda t: t.table_id)


class _Reader(SnapshotReader):
    def __init__(self, source: InMemorySnapshotSource, slot: str | None) -> None:
        self._source = source
        self._slot = slot

    @property
    def position(self) -> Lsn | None:
        return self._source.position

    def keep_slot(self) -> None:
        if self._slot is not None and self._source.slots is not None:
            self._source.slots.create_slot(self._slot, self._source.position or _START)

    def read(self, table: TableSchema) -> Iterator[RowBatch]:
        if not self._source.is_open:
            raise AssertionError("read outside the snapshot")
        if self._source.fail_on_table == table.table_id:
            raise self._source.failure
        rows = self._source.rows.get(table.table_id, [])
        size = self._source.batch_size
        for start in range(0, len(rows), size):
            yield RowList(tuple(dict(r) for r in rows[start : start + size]))


class InMemorySnapshotSource(SnapshotSource):
    """Serves rows per table; records how many snapshots were opened."""

    def __init__(
        self,
        rows: Mapping[TableId, Sequence[Row]] | None = None,
        *,
        position: Lsn | None = None,
        batch_size: int = 2,
        fail_on_table: TableId | None = None,
        failure: ReplicatorError | None = None,
        slots: InMemoryChangeSource | None = None,
    ) -> None:
        self.rows = {k: list(v) for k, v in (rows or {}).items()}
        # Where a kept snapshot slot appears (the fake server's slots).
        self.slots = slots
        self.position = position
        self.batch_size = batch_size
        self.fail_on_table = fail_on_table
        self.failure: ReplicatorError = failure or ReplicatorError("injected read failure")
        self.opened = 0
        self.is_open = False

    def open(
        self, tables: Sequence[TableSchema], *, slot: str | None = None
    ) -> AbstractContextManager[SnapshotReader]:
        return self._open(slot)

    @contextmanager
    def _open(self, slot: str | None) -> Iterator[SnapshotReader]:
        self.opened += 1
        self.is_open = True
        try:
            yield _Reader(self, slot)
        finally:
            self.is_open = False


class InMemoryLakeWriter(LakeWriter):
    """A lake of row lists. A failing load leaves every table as it was (all or nothing)."""

    def __init__(
        self,
        *,
        fail_on_table: TableId | None = None,
        fail_on_merge: int | None = None,
        crash_before_checkpoint: int | None = None,
        commit_only: int | None = None,
    ) -> None:
        self.tables: dict[TableId, list[Row]] = {}
        self.versions: dict[TableId, int] = {}
        self.checkpoint: Lsn | None = None
        self.checkpoints: list[Lsn] = []  # every checkpoint a merge wrote, in order
        self.checkpoint_tables: set[TableId] = set()
        self.checkpoint_schemas: dict[TableId, TableSchema] = {}
        self.checkpoint_starts: dict[TableId, Lsn] = {}
        self.checkpoint_in_flight: tuple[Lsn, Lsn, int] | None = None
        self.checkpoint_slot: str | None = None
        self.checkpoint_idle = False
        self.checkpoint_source: SourceIdentity | None = None
        self.checkpoint_commit_ts: datetime.datetime | None = None
        self.evolutions: list[SchemaChange] = []
        self.fail_on_table = fail_on_table
        self.fail_on_merge = fail_on_merge
        # The merge with this number commits its tables (each with its position) and then
        # fails before the checkpoint: a crash between the data and the checkpoint commits.
        self.crash_before_checkpoint = crash_before_checkpoint
        # With crash_before_checkpoint: only the first this many tables of that merge commit.
        self.commit_only = commit_only
        self.table_positions: dict[TableId, Frontier] = {}
        self.loads = 0
        self.merges = 0

    def positions(self, tables: Iterable[TableId]) -> dict[TableId, Frontier]:
        return {t: self.table_positions[t] for t in tables if t in self.table_positions}

    def merge(self, changes: Sequence[TableChanges], checkpoint: Checkpoint) -> None:
        self.merges += 1
        if self.fail_on_merge == self.merges:
            raise LakeWriteError(f"injected merge failure on merge {self.merges}")
        staged = {t: [dict(r) for r in rows] for t, rows in self.tables.items()}
        crashing = self.crash_before_checkpoint == self.merges
        if crashing and self.commit_only is not None:
            changes = changes[: self.commit_only]
        for change in changes:
            table_id = change.schema.table_id
            key_names = change.schema.primary_key
            current = [] if change.truncated else staged.get(table_id, [])
            if change.schema.inserts_only:  # rows without a key: every insert is a new row
                assert isinstance(change.batch, RowList)
                staged[table_id] = current + [dict(i["row"].values) for i in change.batch.rows]
                continue
            by_key = {tuple(r[k] for k in key_names): r for r in current}
            previous = dict(by_key)  # the lake as the batch found it
            batch = change.batch
            assert isinstance(batch, RowList)
            for item in batch.rows:
                row: FakeRow = item["row"]
                key = tuple(row.values[k] for k in key_names)
                stored = by_key.get(row.stored_key or key) or previous.get(row.stored_key or key)
                values = dict(row.values)
                for name in row.keep:  # values the source did not send keep what is stored
                    values[name] = stored.get(name) if stored else None
                if row.delete:
                    by_key.pop(key, None)
                else:
                    by_key[key] = values
            staged[table_id] = list(by_key.values())
        self.tables = staged
        for change in changes:
            self.table_positions[change.schema.table_id] = checkpoint.frontier
        if crashing:
            raise LakeWriteError(f"injected crash before the checkpoint of merge {self.merges}")
        self._store(checkpoint)
        self.checkpoints.append(checkpoint.position)

    def _store(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint.position
        self.checkpoint_tables = set(checkpoint.tables)
        self.checkpoint_schemas = dict(checkpoint.schemas)
        self.checkpoint_starts = dict(checkpoint.starts)
        self.checkpoint_in_flight = checkpoint.in_flight
        self.checkpoint_slot = checkpoint.slot
        self.checkpoint_idle = checkpoint.idle
        self.checkpoint_source = checkpoint.source
        self.checkpoint_commit_ts = checkpoint.commit_ts

    def evolve(self, change: SchemaChange) -> None:
        """Older rows take the added columns' values (as text) and copy renamed columns."""
        self.evolutions.append(change)
        lsn = change.before.lake_columns.lsn
        for row in self.tables.get(change.table_id, []):
            if row.get(lsn) is not None and row[lsn] >= change.lsn:
                continue
            for old, new in change.renamed:
                row[new] = row.get(old)
            for name, value in change.added:
                row[name] = value

    def replace(
        self,
        loads: Sequence[TableLoad],
        checkpoint: Checkpoint | None,
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> list[LakeTableInfo]:
        staged: dict[TableId, list[Row]] = {}
        for load in loads:
            table_id = load.schema.table_id
            rows: list[Row] = []
            for batch in load.batches:
                rows.extend(batch.rows)
            if self.fail_on_table == table_id:
                raise LakeWriteError(f"injected write failure on {table_id}")
            staged[table_id] = rows
        if before_commit is not None:
            before_commit()
        for table_id, rows in staged.items():
            self.tables[table_id] = rows
            self.versions[table_id] = self.versions.get(table_id, -1) + 1
            if checkpoint is not None:
                self.table_positions[table_id] = checkpoint.frontier
        if checkpoint is not None:
            self._store(checkpoint)
        self.loads += 1
        return self.describe(staged)

    def column_names(self, table: TableSchema) -> dict[str, str]:
        """The fake lake keeps the source's column names."""
        return {c: c for c in table.column_names}

    def describe(
        self,
        tables: Iterable[TableId],
        *,
        last_change: Mapping[TableId, LakeColumns] | None = None,
    ) -> list[LakeTableInfo]:
        return [
            LakeTableInfo(
                t,
                t.lake_name,
                len(self.tables.get(t, [])),
                self.versions.get(t),
                f"memory://bronze/{t.lake_name}",
            )
            for t in tables
        ]


class InMemoryCheckpointStore(CheckpointStore):
    """Reads the checkpoint an ``InMemoryLakeWriter`` committed, like the real store reads
    the destination's state."""

    def __init__(self, lake: InMemoryLakeWriter) -> None:
        self.lake = lake

    def load(self) -> Checkpoint | None:
        if self.lake.checkpoint is None:
            return None
        return Checkpoint(
            self.lake.checkpoint,
            frozenset(self.lake.checkpoint_tables),
            schemas=dict(self.lake.checkpoint_schemas),
            starts=dict(self.lake.checkpoint_starts),
            in_flight=self.lake.checkpoint_in_flight,
            slot=self.lake.checkpoint_slot,
            idle=self.lake.checkpoint_idle,
            source=self.lake.checkpoint_source,
            commit_ts=self.lake.checkpoint_commit_ts,
        )


@attrs.frozen
class FakeRow:
    """A row as the fake change source hands it to the fake lake.

    ``delete``: remove the key (hard delete). ``keep``: columns whose stored value stays.
    """

    values: dict[str, Any]
    delete: bool
    keep: frozenset[str]
    stored_key: tuple[Any, ...] | None = None


class InMemoryBatchEncoder(BatchEncoder):
    """Rows the in-memory lake writer reads (``FakeRow``), in the lake's column names."""

    def encode(self, schema: TableSchema, table: CompactedTable, soft_delete: bool) -> RowBatch:
        names = schema.column_names
        meta = schema.lake_columns
        rows: list[FakeRow] = []
        for upsert in table.upserts.values():
            values = dict(zip(names, upsert.row, strict=True))
            values[meta.lsn] = upsert.lsn
            values[meta.deleted_ts] = None
            keep = frozenset(names[i] for i in upsert.unchanged)
            rows.append(FakeRow(values, delete=False, keep=keep, stored_key=upsert.stored_key))
        for removal in table.removals.values():
            if removal.row is not None:
                values = dict(zip(names, removal.row, strict=True))
            else:
                values = dict(zip(schema.primary_key, removal.key, strict=True))
            values[meta.lsn] = removal.lsn
            values[meta.deleted_ts] = removal.commit_ts
            keep = frozenset(n for n in names if n not in values) if soft_delete else frozenset()
            rows.append(FakeRow(values, delete=not soft_delete, keep=keep))
        return RowList(tuple({"row": r} for r in rows))


class _FakeStream(ChangeStream):
    def __init__(
        self, source: InMemoryChangeSource, start: Lsn, tables: frozenset[TableId]
    ) -> None:
        self._source = source
        self._start = start
        self._tables = tables  # like the real stream: changes of other tables never arrive
        self._pending_bytes = 0
        self.adopted: list[TableSchema] = []

    def events(self) -> Iterator[StreamEvent]:
        source = self._source
        for index, transaction in enumerate(source.transactions):
            if source.fail_after_events is not None and index >= source.fail_after_events:
                raise SourceUnavailableError("injected: connection lost mid-stream")
            if transaction.end_lsn <= self._start:
                continue
            # Each change accounts for an equal share of the transaction's size.
            share = transaction.size_bytes // max(1, len(transaction.changes))
            for event in transaction.events():
                in_flight = isinstance(event, Change)
                if in_flight and event.table_id not in self._tables:  # type: ignore[union-attr]
                    continue
                self._pending_bytes = self._pending_bytes + share if in_flight else 0
                yield event
            if index in source.idle_after:
                yield Idle(source.idle_after[index])
        yield Idle(source.position)

    @property
    def encoder(self) -> InMemoryBatchEncoder:
        return InMemoryBatchEncoder()

    def acknowledge(self, position: Lsn) -> None:
        self._source.acknowledged.append(position)
        self._source.confirmed_flush = position

    def keepalive(self) -> AbstractContextManager[None]:
        return nullcontext()

    def pending_bytes(self) -> int:
        return self._pending_bytes

    def adopt(self, schema: TableSchema) -> None:
        self.adopted.append(schema)


class InMemoryChangeSource(ChangeSource):
    """Replays fixed transactions; ``acknowledge`` moves the fake slot like the real one."""

    def __init__(
        self,
        transactions: Iterable[Transaction] = (),
        *,
        position: Lsn | None = None,
        confirmed_flush: Lsn | None = _START,
        slot_exists: bool = True,
        fail_after_events: int | None = None,
        idle_after: dict[int, Lsn] | None = None,
    ) -> None:
        self.transactions = list(transactions)
        # A quiet moment after the transaction of this index: the server's position then.
        self.idle_after = dict(idle_after or {})
        last = self.transactions[-1].end_lsn if self.transactions else Lsn(0)
        self.position = position or last
        self.fail_after_events = fail_after_events
        self.acknowledged: list[Lsn] = []
        self.prepared: list[TableId] = []
        # The fake server's slots: name -> confirmed flush position. ``confirmed_flush`` and
        # ``acknowledge`` are the slot's that a stream is opened on ("fake_slot" first).
        self.slots: dict[str, Lsn | None] = {}
        self.active: set[str] = set()
        self.streamed_from: list[str] = []
        self.elsewhere: set[str] = set()  # slot names taken in other databases of the server
        # Slots the server invalidated (max_slot_wal_keep_size): PostgreSQL reports them with
        # wal_status 'lost' and no restart_lsn.
        self.lost: set[str] = set()
        self.busy = False  # another run holds the pipeline
        self.source = SourceIdentity("7000000000000000001", "shop")
        self._current = "fake_slot"
        if slot_exists:
            self.slots["fake_slot"] = confirmed_flush

    @property
    def confirmed_flush(self) -> Lsn | None:
        return self.slots.get(self._current)

    @confirmed_flush.setter
    def confirmed_flush(self, position: Lsn | None) -> None:
        self.slots[self._current] = position

    def create_slot(self, name: str, position: Lsn) -> None:
        if name in self.slots:
            raise AssertionError(f"slot {name} exists already")
        self.slots[name] = position

    def prepare(self, tables: Sequence[TableSchema]) -> None:
        self.prepared = [t.table_id for t in tables]

    def slot(self, name: str) -> SlotState | None:
        if name not in self.slots:
            return None
        at = self.slots[name]
        if name in self.lost:
            return SlotState(name, "pgoutput", at, None, name in self.active, "lost")
        return SlotState(name, "pgoutput", at, at, active=name in self.active)

    def retire(self, name: str) -> bool:
        return self.slots.pop(name, _START) is not _START

    def occupied(self, name: str) -> bool:
        return name in self.slots or name in self.elsewhere

    def exclusive(self) -> AbstractContextManager[None]:
        return self._exclusive()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self.busy:
            raise PipelineBusyError("injected: another run holds the pipeline")
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def identity(self) -> SourceIdentity:
        return self.source

    def server_position(self) -> Lsn:
        return self.position

    def open(
        self, tables: Sequence[TableSchema], start: Lsn, slot: str
    ) -> AbstractContextManager[ChangeStream]:
        self._current = slot
        self.streamed_from.append(slot)
        return nullcontext(_FakeStream(self, start, frozenset(t.table_id for t in tables)))


class InMemorySourceInspector(SourceInspector):
    """Returns the facts it was given; tests vary one fact at a time."""

    def __init__(self, facts: SourceFacts) -> None:
        self.facts_ = facts

    def facts(self, slot: str, tables: Sequence[TableId] = ()) -> SourceFacts:
        return self.facts_


class _TextReader(SourceTextReader):
    def __init__(self, rows: Mapping[TableId, Sequence[TextRow]], batch_rows: int) -> None:
        self._rows = rows
        self._batch = batch_rows

    def batches(self, table: TableSchema) -> Iterator[Sequence[TextRow]]:
        rows = list(self._rows.get(table.table_id, ()))
        for start in range(0, len(rows), self._batch):
            yield rows[start : start + self._batch]

    def sample(self, table: TableSchema, rows: int, seed: int) -> Sequence[TextRow]:
        import random

        held = list(self._rows.get(table.table_id, ()))
        return random.Random(seed).sample(held, min(rows, len(held)))

    def count(self, table: TableSchema) -> int:
        return len(self._rows.get(table.table_id, ()))

    def estimate(self, table: TableSchema) -> int:
        return self.count(table)


@attrs.define
class InMemoryTextRows(SourceRowReader):
    """A source's rows as PostgreSQL's text, at ``position``; ``opened`` counts the snapshots."""

    rows: dict[TableId, list[TextRow]] = attrs.Factory(dict)
    position: Lsn = _START
    batch_rows: int = 2
    opened: int = 0

    def consistent_point(self) -> AbstractContextManager[tuple[SourceTextReader, Lsn]]:
        self.opened += 1
        return nullcontext((_TextReader(self.rows, self.batch_rows), self.position))


@attrs.frozen
class StoredRow:
    """A lake row as a destination stores it: values in source column order, marked deleted
    or not, and a counted row's count."""

    values: tuple[Any, ...]
    deleted: bool = False
    count: int | None = None


@attrs.define
class InMemoryLakeRows(LakeRowReader):
    rows: dict[TableId, list[StoredRow]] = attrs.Factory(dict)
    batch_rows: int = 2

    def census(self, table: TableSchema) -> LakeCensus:
        keys = {table.column_names.index(k) for k in table.primary_key}
        live = soft = ghosts = tombstones = 0
        for row in self.rows.get(table.table_id, ()):
            values = [v for i, v in enumerate(row.values) if i not in keys]
            if row.deleted and values and all(v is None for v in values):
                ghosts += 1
            elif row.deleted:
                soft += 1
            elif row.count is not None and row.count <= 0:
                tombstones += 1
            else:
                live += 1 if row.count is None else row.count
        return LakeCensus(live, soft, ghosts, tombstones)

    def batches(self, table: TableSchema) -> Iterator[LakeBatch]:
        live = [r for r in self.rows.get(table.table_id, ()) if _live(r)]
        for start in range(0, len(live), self.batch_rows):
            part = live[start : start + self.batch_rows]
            counts = [r.count or 0 for r in part] if table.keyless_full else None
            yield _columns(table, [r.values for r in part], counts)

    def rows_with_keys(self, table: TableSchema, keys: Sequence[Key]) -> LakeBatch:
        first = table.column_names.index(table.primary_key[0])
        wanted = {k[0] for k in keys}
        found = [r.values for r in self.rows.get(table.table_id, ()) if _live(r)]
        return _columns(table, [v for v in found if v[first] in wanted])


def _columns(
    table: TableSchema, rows: list[tuple[Any, ...]], counts: list[int] | None = None
) -> LakeBatch:
    columns = [[row[i] for row in rows] for i in range(len(table.columns))]
    return LakeBatch(len(rows), columns, counts)


def _live(row: StoredRow) -> bool:
    return not row.deleted and (row.count is None or row.count > 0)
