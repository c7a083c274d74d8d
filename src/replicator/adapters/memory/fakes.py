"""In-memory fakes of every port, for unit tests of the domain services.

They keep real state and fail deterministically when told to (``fail_on_table=...``), never at
random. Batches are plain lists of row dicts (anything with ``num_rows`` would do).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import attrs

from replicator.domain.errors import LakeWriteError, ReplicatorError
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    LakeTableInfo,
    RowBatch,
    TableId,
    TableLoad,
    TableSchema,
)
from replicator.domain.ports import (
    ChangeSource,
    CheckpointStore,
    LakeWriter,
    SnapshotReader,
    SnapshotSource,
    TableCatalog,
)

Row = dict[str, Any]


@attrs.frozen
class RowList:
    """A batch of row dicts; satisfies the domain's ``RowBatch``."""

    rows: tuple[Row, ...]

    @property
    def num_rows(self) -> int:
        return len(self.rows)


class InMemoryTableCatalog(TableCatalog):
    def __init__(self, tables: Iterable[TableSchema] = (), error: ReplicatorError | None = None):
        self.tables = list(tables)
        self.error = error

    def discover(self) -> list[TableSchema]:
        if self.error is not None:
            raise self.error
        return sorted(self.tables, key=lambda t: t.table_id)


class _Reader(SnapshotReader):
    def __init__(self, source: InMemorySnapshotSource) -> None:
        self._source = source

    @property
    def position(self) -> Lsn | None:
        return self._source.position

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
    ) -> None:
        self.rows = {k: list(v) for k, v in (rows or {}).items()}
        self.position = position
        self.batch_size = batch_size
        self.fail_on_table = fail_on_table
        self.failure: ReplicatorError = failure or ReplicatorError("injected read failure")
        self.opened = 0
        self.is_open = False

    def open(self, tables: Sequence[TableSchema]) -> AbstractContextManager[SnapshotReader]:
        return self._open()

    @contextmanager
    def _open(self) -> Iterator[SnapshotReader]:
        self.opened += 1
        self.is_open = True
        try:
            yield _Reader(self)
        finally:
            self.is_open = False


class InMemoryLakeWriter(LakeWriter):
    """A lake of row lists. A failing load leaves every table as it was (all or nothing)."""

    def __init__(self, *, fail_on_table: TableId | None = None) -> None:
        self.tables: dict[TableId, list[Row]] = {}
        self.versions: dict[TableId, int] = {}
        self.checkpoint: Lsn | None = None
        self.fail_on_table = fail_on_table
        self.loads = 0

    def replace(self, loads: Sequence[TableLoad], position: Lsn | None) -> list[LakeTableInfo]:
        staged: dict[TableId, list[Row]] = {}
        for load in loads:
            table_id = load.schema.table_id
            rows: list[Row] = []
            for batch in load.batches:
                rows.extend(batch.rows)
            if self.fail_on_table == table_id:
                raise LakeWriteError(f"injected write failure on {table_id}")
            staged[table_id] = rows
        for table_id, rows in staged.items():
            self.tables[table_id] = rows
            self.versions[table_id] = self.versions.get(table_id, -1) + 1
        if position is not None:
            self.checkpoint = position
        self.loads += 1
        return self.describe(staged)

    def describe(self, tables: Iterable[TableId]) -> list[LakeTableInfo]:
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
    def __init__(self, position: Lsn | None = None) -> None:
        self.position = position

    def load(self) -> Lsn | None:
        return self.position


class InMemoryChangeSource(ChangeSource):
    """Replays a fixed list of changes; remembers what was acknowledged."""

    def __init__(self, changes: Iterable[Change] = ()) -> None:
        self.pending = list(changes)
        self.acknowledged: list[Lsn] = []

    def changes(self, start: Lsn) -> Iterator[Change]:
        for change in self.pending:
            if change.commit_lsn > start:
                yield change

    def acknowledge(self, position: Lsn) -> None:
        self.acknowledged.append(position)
