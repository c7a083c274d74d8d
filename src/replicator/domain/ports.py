"""The ports: what the domain needs from the outside world, in domain types only.

Adapters (``replicator.adapters``) and in-memory fakes (``replicator.adapters.memory``) subclass
these explicitly, so a missing method fails at construction and mypy checks the signatures.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from replicator.domain.compaction import CompactedTable
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    AppliedBatch,
    Checkpoint,
    Frontier,
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
    TableMaintained,
    TableSchema,
)


@runtime_checkable
class TableCatalog(Protocol):
    """Which source tables are replicated, and their shape."""

    @abstractmethod
    def discover(self) -> list[TableSchema]:
        """The replicated tables, sorted by ``TableId``, after include/exclude filters."""

    def left_out(self) -> list[TableSchema]:
        """Tables the last ``discover`` found but does not replicate (no key, no REPLICA
        IDENTITY FULL, and ``keyless_tables = "skip"``), for preflight to report."""
        return []


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

    def keep_slot(self) -> None:
        """Make the snapshot's replication slot a lasting one, under the name it was opened
        with: called once every row was read, just before the lake commits. Until then the
        slot lives only as long as the reader (a failed or killed snapshot leaves none)."""
        return None


@runtime_checkable
class SnapshotSource(Protocol):
    """Opens one consistent snapshot for a multi-table read."""

    @abstractmethod
    def open(
        self, tables: Sequence[TableSchema], *, slot: str | None = None
    ) -> AbstractContextManager[SnapshotReader]:
        """A reader whose every ``read`` sees the same committed state; closed on exit. With
        ``slot``, the snapshot is the one a new replication slot exports, and its position is
        that slot's consistent point (``keep_slot`` gives the slot that name for good)."""


class BatchEncoder(Protocol):
    """Encoding: one table's compacted changes -> the lake's columnar batch, in the lake's
    column protocol (``lake_columns``), for the lake writer to merge."""

    @abstractmethod
    def encode(self, schema: TableSchema, table: CompactedTable, soft_delete: bool) -> RowBatch: ...


@runtime_checkable
class ChangeStream(Protocol):
    """An open logical replication stream, from a start position on."""

    @abstractmethod
    def events(self) -> Iterator[StreamEvent]:
        """Committed transactions in commit order, each as its start, its changes and its end;
        ``Idle`` whenever no transaction is in flight.

        ``Idle`` comes at least every few seconds while the source is quiet, so callers can
        check limits and stop requests. Changes come one by one so a large transaction is never
        held whole in memory.
        """

    @property
    @abstractmethod
    def encoder(self) -> BatchEncoder:
        """Encodes this stream's compacted changes (on its session: what the WAL lacks, such
        as generated columns, the source computes)."""

    @abstractmethod
    def acknowledge(self, position: Lsn) -> None:
        """Confirm to the server that everything up to ``position`` is in the lake."""

    @abstractmethod
    def adopt(self, schema: TableSchema) -> None:
        """Compare the table's next Relation messages with ``schema`` (the lake's shape): shape
        changes the stream reported for it were already in the lake (its own snapshot)."""

    @abstractmethod
    def pending_bytes(self) -> int:
        """Bytes of row data read so far in the transaction in flight (0 between them)."""

    @abstractmethod
    def keepalive(self) -> AbstractContextManager[None]:
        """Keep the stream alive (server timeouts) while the caller is busy elsewhere."""


@runtime_checkable
class ChangeSource(Protocol):
    """Logical replication from the source: slot, publication and the change stream."""

    @abstractmethod
    def prepare(self, tables: Sequence[TableSchema]) -> None:
        """Make the publication cover ``tables``."""

    @abstractmethod
    def slot(self, name: str) -> SlotState | None:
        """A replication slot of ours as the server sees it; None if it does not exist."""

    @abstractmethod
    def retire(self, name: str) -> bool:
        """Drop a replication slot that no lake continues from; True if one was dropped."""

    @abstractmethod
    def occupied(self, name: str) -> bool:
        """A replication slot of this name exists on the server, in any database."""

    @abstractmethod
    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the pipeline for one run: a second snapshot or CDC run of it, anywhere, fails
        with PipelineBusyError until this one ends (a CDC run streaming while a snapshot
        replaces its tables would write over them from stale state)."""

    @abstractmethod
    def identity(self) -> SourceIdentity:
        """Which server and database this is (recorded with the lake's checkpoint)."""

    @abstractmethod
    def server_position(self) -> Lsn:
        """The server's current WAL position (where a drain run stops)."""

    @abstractmethod
    def open(
        self, tables: Sequence[TableSchema], start: Lsn, slot: str
    ) -> AbstractContextManager[ChangeStream]:
        """Stream changes committed after ``start`` to ``tables``, from replication slot
        ``slot``."""


# A row as PostgreSQL prints it: every value its type's text output (NULL as None).
TextRow = tuple[str | None, ...]


@runtime_checkable
class SourceTextReader(Protocol):
    """The source's rows at one exported snapshot, as PostgreSQL's text output: ``verify``
    decodes them on its own, sharing nothing with the code that writes the lake."""

    @abstractmethod
    def batches(self, table: TableSchema) -> Iterator[Sequence[TextRow]]:
        """Every row of ``table`` (values in column order), a batch at a time."""

    @abstractmethod
    def sample(self, table: TableSchema, rows: int, seed: int) -> Sequence[TextRow]:
        """About ``rows`` rows picked at random (the same ones for the same ``seed``)."""

    @abstractmethod
    def count(self, table: TableSchema) -> int:
        """How many rows ``table`` holds."""

    def estimate(self, table: TableSchema) -> int:
        """About how many rows ``table`` holds, from statistics (0: unknown)."""
        return 0


@runtime_checkable
class SourceRowReader(Protocol):
    @abstractmethod
    def consistent_point(self) -> AbstractContextManager[tuple[SourceTextReader, Lsn]]:
        """A reader of the source at one exported snapshot, and the WAL position it matches."""


@runtime_checkable
class LakeRowReader(Protocol):
    """The lake's rows as its destination returns them, for ``verify``."""

    @abstractmethod
    def census(self, table: TableSchema) -> LakeCensus:
        """How many rows are live, soft-deleted, ghosts and tombstones."""

    @abstractmethod
    def batches(self, table: TableSchema) -> Iterator[LakeBatch]:
        """Every live row (none marked deleted, no counted row of count 0 or less)."""

    @abstractmethod
    def rows_with_keys(self, table: TableSchema, keys: Sequence[Key]) -> LakeBatch:
        """The live rows whose key (the source's primary key, as the lake stores it) is one of
        ``keys``."""


@runtime_checkable
class VerifyProgress(Protocol):
    """Where ``verify`` reports how far it got (a progress bar, a log)."""

    @abstractmethod
    def start(self, table: TableId, rows: int) -> None:
        """``table``'s check begins; about ``rows`` rows are to be read (both sides)."""

    @abstractmethod
    def advance(self, rows: int) -> None:
        """``rows`` more rows were read."""


@runtime_checkable
class SourceInspector(Protocol):
    """Reads the facts preflight judges (server settings, role, capacity, slot, publication)."""

    @abstractmethod
    def facts(self, slot: str, tables: Sequence[TableId] = ()) -> SourceFacts:
        """A fresh reading of the source; ``slot``: the replication slot the lake uses;
        ``tables``: the tables it replicates, whose privileges are read."""


class LakeMaintenance(Protocol):
    """Keeps lake tables fast to read: small files compacted, files no version within the
    retention still references removed. Leaves every row, and each table's position, as is."""

    @abstractmethod
    def maintain(self, tables: Sequence[TableId]) -> list[TableMaintained]: ...


@runtime_checkable
class LakeWriter(Protocol):
    """Writes tables into the lake's bronze dataset."""

    @abstractmethod
    def replace(
        self,
        loads: Sequence[TableLoad],
        checkpoint: Checkpoint | None,
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> list[LakeTableInfo]:
        """Replace each table's contents with the streamed rows, in one load; ``before_commit``
        runs once every row was read, before anything is committed to the lake.

        ``checkpoint`` is recorded with the data (in the same load), so it can never be ahead of
        (or behind) what the lake holds; its ``tables`` are all the lake's tables, the loaded
        ones included. Each table's own commit also records ``checkpoint.frontier`` as its
        position (see ``positions``).
        """

    @abstractmethod
    def merge(self, changes: Sequence[TableChanges], checkpoint: Checkpoint) -> None:
        """Apply one compacted CDC batch and write ``checkpoint``, in one load.

        Each table's upserts and deletes land in a single atomic commit (a truncated table is
        replaced instead), and that commit records ``checkpoint.frontier`` as the table's
        position. With no ``changes`` only the checkpoint moves.
        """

    def tidy(self) -> None:
        """Remove what the lake keeps for no reader (the checkpoint's history beyond its last
        few versions), so that reading the checkpoint does not slow down with every load."""
        return None

    @abstractmethod
    def positions(self, tables: Iterable[TableId]) -> dict[TableId, Frontier]:
        """Each table's position: the frontier its last write recorded, committed atomically with
        that write's data (tables never written with one are left out).

        The checkpoint is committed after the tables of its load, so after a crash a table may
        hold changes beyond it; CDC skips, per table, every change its position holds. That
        makes every write idempotent under replay: appends and row counts as well as merges.
        """

    @abstractmethod
    def evolve(self, change: SchemaChange) -> None:
        """Make a lake table follow a source ALTER TABLE: add the new columns, give rows older
        than ``change.lsn`` the value PostgreSQL reports for them (``change.defaults``), copy
        renamed columns; dropped columns stay. Idempotent: a replay applies it again."""

    @abstractmethod
    def describe(
        self,
        tables: Iterable[TableId],
        *,
        last_change: Mapping[TableId, LakeColumns] | None = None,
    ) -> list[LakeTableInfo]:
        """Row counts, versions and locations of lake tables, for reports. ``last_change``
        (each table's metadata names) also finds each table's highest WAL position (its
        ``lsn`` column), which reads a whole column: only on demand."""

    @abstractmethod
    def column_names(self, table: TableSchema) -> dict[str, str]:
        """The lake name of each of the table's source columns (source name -> lake name)."""


class CdcObserver(Protocol):
    """Hears what CDC does while it runs (metrics); every method returns at once."""

    def applied(self, batch: AppliedBatch) -> None:
        """A batch is committed to the lake (and the slot confirmed up to it)."""

    def caught_up(self, position: Lsn) -> None:
        """The stream is idle: the lake holds every change of ours up to ``position``."""

    def failed(self, error: Exception) -> None:
        """A run ended with this error (a ``--follow`` run may reconnect after it)."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where the last applied replication position is kept: with the loaded data."""

    @abstractmethod
    def load(self) -> Checkpoint | None:
        """The checkpoint the lake has committed, or None before the first snapshot.

        Read from the destination itself, so an empty local working dir (an ephemeral job
        cluster) resumes exactly where the lake is.
        """
