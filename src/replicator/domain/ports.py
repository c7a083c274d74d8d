"""The ports: what the domain needs from the outside world, in domain types only.

Adapters (``replicator.adapters``) and in-memory fakes (``replicator.adapters.memory``) subclass
these explicitly, so a missing method fails at construction and mypy checks the signatures.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    LakeTableInfo,
    RowBatch,
    TableId,
    TableLoad,
    TableSchema,
)


@runtime_checkable
class TableCatalog(Protocol):
    """Which source tables are replicated, and their shape."""

    @abstractmethod
    def discover(self) -> list[TableSchema]:
        """The replicated tables, sorted by ``TableId``, after include/exclude filters."""


@runtime_checkable
class SnapshotReader(Protocol):
    """Reads tables, all at the same point in time."""

    @property
    @abstractmethod
    def position(self) -> Lsn | None:
        """The WAL position the snapshot corresponds to, when the source knows it."""

    @abstractmethod
    def read(self, table: TableSchema) -> Iterator[RowBatch]:
        """Every row of ``table`` as of the snapshot, in columnar batches."""


@runtime_checkable
class SnapshotSource(Protocol):
    """Opens one consistent snapshot for a multi-table read."""

    @abstractmethod
    def open(self, tables: Sequence[TableSchema]) -> AbstractContextManager[SnapshotReader]:
        """A reader whose every ``read`` sees the same committed state; closed on exit."""


@runtime_checkable
class ChangeSource(Protocol):
    """The ordered stream of committed row changes after a position."""

    @abstractmethod
    def changes(self, start: Lsn) -> Iterator[Change]:
        """Changes committed after ``start``, in commit order."""

    @abstractmethod
    def acknowledge(self, position: Lsn) -> None:
        """Tell the source everything up to ``position`` is durably applied downstream."""


@runtime_checkable
class LakeWriter(Protocol):
    """Writes tables into the lake's bronze dataset."""

    @abstractmethod
    def replace(self, loads: Sequence[TableLoad], position: Lsn | None) -> list[LakeTableInfo]:
        """Replace each table's contents with the streamed rows, in one load.

        ``position`` is recorded with the data as the replication checkpoint, so it can never
        be ahead of (or behind) what the lake holds.
        """

    @abstractmethod
    def describe(self, tables: Iterable[TableId]) -> list[LakeTableInfo]:
        """Row counts, versions and locations of lake tables, for reports."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where the last applied replication position is kept: with the loaded data."""

    @abstractmethod
    def load(self) -> Lsn | None:
        """The last position committed to the lake, or None before the first snapshot."""
