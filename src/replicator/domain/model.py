"""What the replicator reasons about: tables, their columns and keys, and row changes."""

from __future__ import annotations

import datetime
import enum
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import attrs

from replicator.domain.lake_columns import LakeColumns
from replicator.domain.lsn import Lsn

DEFAULT_SCHEMA = "public"


@attrs.frozen(order=True)
class TableId:
    """A source table: schema and name exactly as PostgreSQL spells them."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def lake_name(self) -> str:
        """The table's name in the lake, before the destination's naming convention applies.

        Tables of the ``public`` schema keep their name; tables of any other schema are prefixed
        with it and an underscore (``sales.orders`` -> ``sales_orders``); the lake writer then
        normalises it and tells apart names that would land on one (adapters/lake/naming.py).
        """
        if self.schema == DEFAULT_SCHEMA:
            return self.name
        return f"{self.schema}_{self.name}"


class ReplicaIdentity(enum.Enum):
    """``pg_class.relreplident``: which old values an UPDATE or DELETE carries in the WAL."""

    DEFAULT = "d"  # the primary key
    NOTHING = "n"
    FULL = "f"  # every column
    INDEX = "i"  # a chosen unique index


@attrs.frozen
class ColumnSchema:
    """One source column; ``pg_type`` is PostgreSQL's spelling (``numeric(12,2)``, ``text[]``)."""

    name: str
    pg_type: str
    type_oid: int
    nullable: bool = True
    # For arrays: the element type's name (``int4``); for others: the type's own ``typname``.
    base_type: str = ""
    is_array: bool = False
    # ``e`` enum, ``d`` domain, ``b`` base, ``r`` range, ``c`` composite (``pg_type.typtype``).
    type_kind: str = "b"
    # Listed in ``text_columns``: lands as PostgreSQL's text output, whatever its type.
    as_text: bool = False
    # ``pg_attribute.attnum`` (0: unknown) and ``atttypmod`` (-1: none): together with the name
    # and type they tell a renamed column from a dropped and an added one.
    attnum: int = 0
    typmod: int = -1
    # For arrays: the element type's delimiter in the array's text form (``;`` for box).
    delimiter: str = ","
    # A stored generated column: its expression (``a * 2``), which PostgreSQL up to 17 does not
    # publish the values of, and the columns it reads; None and () for every other column.
    generated: str | None = None
    generated_from: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    # A virtual generated column (PostgreSQL 18+): never stored, never published.
    virtual: bool = False
    # For types that reach enums or composites (arrays, domains, nested composites): how their
    # values print, as the catalog says (every enum's labels by oid, every composite's attribute
    # types, as JSON: {"e": {type: {oid: label}}, "c": {type: [[type, typmod], ...]}}). The
    # lake's shape keeps the one its rows were written with: a rename of an enum value or a
    # changed composite rewrites no row, so writes no WAL, but changes the text of the rows
    # the lake holds.
    type_signature: str | None = None

    def prints_differently(self, now: ColumnSchema) -> bool:
        """Values of this column, written as this shape says, print differently under ``now``
        (the same column, the same type): an enum value renamed, a composite's attributes
        changed. An enum value added changes no existing value."""
        if self.type_signature is None or now.type_signature is None:
            return False
        if self.type_signature == now.type_signature or self.type_oid != now.type_oid:
            return False
        before, after = json.loads(self.type_signature), json.loads(now.type_signature)
        for enum_type, labels in before.get("e", {}).items():
            renamed = after.get("e", {}).get(enum_type, {})
            if any(renamed.get(oid, label) != label for oid, label in (labels or {}).items()):
                return True
        composites = after.get("c", {})
        return any(composites.get(t, shape) != shape for t, shape in before.get("c", {}).items())


@attrs.frozen
class TableSchema:
    """A source table's shape as discovered in the catalog."""

    table_id: TableId
    columns: tuple[ColumnSchema, ...]
    primary_key: tuple[str, ...] = ()
    replica_identity: ReplicaIdentity = ReplicaIdentity.DEFAULT
    # A table without any key, replicated by its inserts (and TRUNCATEs) only: its updates and
    # deletes are neither published nor applied (``keyless_tables = "insert_only"``).
    inserts_only: bool = False
    # The key's constraint is DEFERRABLE: inside a transaction one key can name two rows for a
    # moment (``UPDATE t SET id = id + 1``); only REPLICA IDENTITY FULL can replicate that.
    deferrable_key: bool = False
    # UNLOGGED: its changes are not in the WAL, so no replication can see them (left out).
    unlogged: bool = False
    # The names of the lake's own columns on this table: chosen when a snapshot loads it
    # (``choosing_lake_columns``), then kept with the shape (the catalog's shapes have the
    # defaults until then).
    lake_columns: LakeColumns = attrs.field(factory=LakeColumns)

    def choosing_lake_columns(self, lake_names: Iterable[str]) -> TableSchema:
        """This shape with metadata names that collide with none of ``lake_names`` (the lake
        names of its columns), for a load of the table from scratch."""
        chosen = LakeColumns.avoiding(lake_names, len(self.primary_key))
        return attrs.evolve(self, lake_columns=chosen)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSchema:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.table_id} has no column {name!r}")

    @property
    def can_replicate_updates(self) -> bool:
        """Updates and deletes can be matched to exactly one lake row: the table has a primary
        key (or a REPLICA IDENTITY USING INDEX, which the catalog reports as its key)."""
        return bool(self.primary_key)

    @property
    def keyless_full(self) -> bool:
        """No key, but REPLICA IDENTITY FULL: every change carries the whole old row, so rows
        are matched on all their columns (identical rows are counted, not merged)."""
        return not self.primary_key and self.replica_identity is ReplicaIdentity.FULL

    @property
    def identity_problem(self) -> str | None:
        """Why publishing this table would break the application's own writes, with the fix;
        None when it can be published."""
        if self.deferrable_key and self.replica_identity is ReplicaIdentity.DEFAULT:
            return (
                f"{self.table_id}: a DEFERRABLE primary key cannot identify rows in the WAL, so "
                "once published, the table's UPDATEs and DELETEs would fail; run ALTER TABLE "
                f"{self.quoted_name()} REPLICA IDENTITY FULL (or exclude the table)"
            )
        virtual = [c.name for c in self.columns if c.virtual]
        if virtual and self.replica_identity is ReplicaIdentity.FULL:
            return (
                f"{self.table_id}: its REPLICA IDENTITY FULL includes the virtual generated "
                f"column(s) {', '.join(virtual)}, which PostgreSQL cannot publish, so once "
                "published, the table's UPDATEs and DELETEs would fail; give it a primary key "
                f"(or ALTER TABLE {self.quoted_name()} REPLICA IDENTITY USING INDEX <a unique "
                "index>), make the column(s) STORED, or exclude the table"
            )
        if self.generated_key:
            return (
                f"{self.table_id}: its key includes the stored generated column(s) "
                f"{', '.join(self.generated_key)}, whose values the WAL does not carry, so no "
                "change could be matched to its row; give the table a replica identity of "
                f"ordinary columns (ALTER TABLE {self.quoted_name()} REPLICA IDENTITY USING "
                "INDEX <a unique index on them>) or exclude the table"
            )
        return None

    def reprinted(self, now: TableSchema) -> list[str]:
        """Columns whose values, as this shape wrote them, read differently under ``now``
        (see ``ColumnSchema.prints_differently``): the lake's rows of them are stale."""
        by_attnum = {c.attnum: c for c in self.columns if c.attnum}
        by_name = {c.name: c for c in self.columns}
        stale = []
        for column in now.columns:
            before = by_attnum.get(column.attnum) if column.attnum else by_name.get(column.name)
            if before is not None and before.prints_differently(column):
                stale.append(column.name)
        return stale

    def retyped_since(self, stored: TableSchema | None) -> bool:
        """Whether a column has another type (or is replicated as text, or no longer) than in
        ``stored``, the shape the lake's table was written with."""
        if stored is None:
            return False
        old = {c.name: (c.type_oid, c.typmod, c.as_text) for c in stored.columns}
        return any(
            c.name in old and old[c.name] != (c.type_oid, c.typmod, c.as_text) for c in self.columns
        )

    def keeping_signatures(self, after: TableSchema) -> TableSchema:
        """``after`` with the type signatures this shape's rows were written with, for the
        columns it keeps with their type: a later ALTER TABLE does not make rows written before
        a rename of an enum value look current. The lake's metadata names stay this shape's."""
        by_attnum = {c.attnum: c for c in self.columns if c.attnum}
        columns = []
        for column in after.columns:
            before = by_attnum.get(column.attnum) if column.attnum else None
            if before is not None and before.type_oid == column.type_oid:
                column = attrs.evolve(column, type_signature=before.type_signature)
            columns.append(column)
        return attrs.evolve(after, columns=tuple(columns), lake_columns=self.lake_columns)

    @property
    def generated_key(self) -> tuple[str, ...]:
        """Key columns that are stored generated columns (not published up to PostgreSQL 17)."""
        generated = {c.name for c in self.columns if c.generated}
        return tuple(k for k in self.primary_key if k in generated)

    def quoted_name(self) -> str:
        """``"schema"."table"``, as a statement names it."""
        schema, table = (p.replace('"', '""') for p in (self.table_id.schema, self.table_id.name))
        return f'"{schema}"."{table}"'

    def fix_sql(self) -> str:
        """The statement that makes this table's updates and deletes replicable."""
        name = self.quoted_name()
        return (
            f"ALTER TABLE {name} ADD PRIMARY KEY (...) or ALTER TABLE {name} REPLICA IDENTITY FULL"
        )


@runtime_checkable
class RowBatch(Protocol):
    """A columnar batch of rows (an Arrow record batch or table, for the real adapters).

    The domain never looks inside; it only counts rows, so it needs no columnar library.
    """

    @property
    def num_rows(self) -> int: ...


class ChangeKind(enum.Enum):
    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"


# Row images and keys are tuples of the source's values in column order. The domain never looks
# inside a value; it compares keys for equality and carries rows to the lake writer.
RowImage = tuple[Any, ...]
Key = tuple[Any, ...]


class Change(NamedTuple):
    """One row change decoded from the WAL.

    A named tuple rather than a frozen attrs class: millions are made on the hot path, and a
    tuple is created about three times faster (measured) while being just as immutable.

    ``row``: the new image for inserts and updates; for deletes the old image when the table
    has REPLICA IDENTITY FULL, else None. ``key``: the key (the replica identity) after the
    change (for deletes: the deleted key). ``old_key``: for updates that changed the key, the
    key before.
    ``unchanged``: positions in ``row`` whose value the server did not send (unchanged TOAST
    values): they must keep the value stored before. ``old_row``: for updates of tables with a
    deferrable key, the old row, which tells which of two rows of one key the update touched.
    ``lsn`` is the change's WAL position as an int (one ``Lsn`` object per change would cost
    more than it says).
    """

    table_id: TableId
    kind: ChangeKind
    lsn: int
    key: Key
    row: RowImage | None
    old_key: Key | None = None
    unchanged: frozenset[int] = frozenset()
    # For updates of a table with a deferrable key: the whole old row (REPLICA IDENTITY FULL).
    old_row: RowImage | None = None


@attrs.frozen(slots=True)
class Truncation:
    """``TRUNCATE`` of one or more tables, at its place among the transaction's changes."""

    table_ids: tuple[TableId, ...]
    lsn: int


@attrs.frozen
class TransactionStart:
    """A transaction's changes follow; they all commit at ``commit_ts``, with the commit record
    at ``commit_lsn`` (a snapshot exported at position P sees exactly the transactions whose
    commit record lies before P)."""

    xid: int
    commit_ts: datetime.datetime
    commit_lsn: Lsn | None = None


@attrs.frozen
class TransactionEnd:
    """The transaction committed. ``end_lsn`` is the position to confirm once it is in the
    lake: a restart from there skips this transaction and streams the next."""

    xid: int
    end_lsn: Lsn
    size_bytes: int = 0


@attrs.frozen
class Transaction:
    """A whole committed transaction, for scripting streams (fakes, tests)."""

    xid: int
    end_lsn: Lsn
    commit_ts: datetime.datetime
    changes: tuple[Change | Truncation | SchemaChange, ...]
    size_bytes: int = 0

    def events(self) -> Iterator[StreamEvent]:
        # The commit record starts just before the position after it, as in the WAL.
        commit = Lsn(max(0, int(self.end_lsn) - 1))
        yield TransactionStart(self.xid, self.commit_ts, commit)
        yield from self.changes
        yield TransactionEnd(self.xid, self.end_lsn, self.size_bytes)


@attrs.frozen
class SchemaChange:
    """A table's columns changed (ALTER TABLE), effective from ``lsn`` on: changes before it
    have the ``before`` shape, changes from it on the ``after`` shape.

    ``added``: new columns, each with the value rows that existed before hold for it (text as
    PostgreSQL prints it, None for NULL). ``renamed``: (old name, new name). ``dropped``: columns
    gone from the source; their lake columns stay (NULL in rows written from now on).
    """

    table_id: TableId
    before: TableSchema
    after: TableSchema
    lsn: int
    added: tuple[tuple[str, str | None], ...] = ()
    renamed: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()  # (column, old type, new type)
    # Why the lake cannot follow (a type it cannot hold, a new key, ...): CDC stops on these.
    problems: tuple[str, ...] = ()
    # Why the lake's table cannot be evolved at all (the change cannot be told exactly from the
    # stream): the table is reloaded from the source instead.
    reload: str | None = None
    # For the lake writer: one row with the added columns' values for older rows, in lake types.
    defaults: RowBatch | None = attrs.field(default=None, eq=False)

    def describe(self) -> str:
        if self.reload is not None:
            return f"{self.table_id}: {self.reload}"
        parts = [f"added {n}" + (f" (older rows: {v})" if v else "") for n, v in self.added]
        parts += [f"renamed {old} to {new}" for old, new in self.renamed]
        parts += [f"dropped {n} (its lake column stays)" for n in self.dropped]
        parts += [f"{n}: {old} -> {new}" for n, old, new in self.retyped]
        return f"{self.table_id}: " + ", ".join(parts or ["shape unchanged"])


@attrs.frozen
class Idle:
    """Nothing of ours is in flight; the server's WAL has reached ``position``."""

    position: Lsn


# What a change stream yields, in WAL order: a transaction is its start, its changes, its end.
StreamEvent = TransactionStart | Change | Truncation | TransactionEnd | SchemaChange | Idle


@attrs.frozen
class SlotState:
    """A replication slot as the server reports it."""

    name: str
    plugin: str
    confirmed_flush: Lsn | None
    restart_lsn: Lsn | None
    active: bool = False
    wal_status: str | None = None


@attrs.frozen
class PublicationFacts:
    all_tables: bool
    # Publishes the kinds of change it must: the main publication every kind; the one of
    # insert-only tables inserts and TRUNCATEs only.
    publishes_everything: bool
    tables: frozenset[TableId]
    # The role owns it (or is a superuser): it may add tables to it.
    owned: bool = True


@attrs.frozen
class RolePrivileges:
    """What the role may do on the source, as far as the snapshot and CDC need it."""

    database: str
    superuser: bool = False
    # CREATE on the database: CREATE PUBLICATION needs it.
    create_on_database: bool = True
    # Replicated tables the role may not SELECT, and the schemas of those it may not even reach.
    unreadable: frozenset[TableId] = frozenset()
    schemas_without_usage: frozenset[str] = frozenset()
    # Replicated tables another role owns: publishing them takes their owner or a superuser.
    not_owned: frozenset[TableId] = frozenset()


@attrs.frozen
class SourceFacts:
    """What preflight needs to know about the source server and its replication set-up."""

    server_version: int
    wal_level: str
    max_replication_slots: int
    used_replication_slots: int
    max_wal_senders: int
    used_wal_senders: int
    role: str
    can_replicate: bool
    managed_rds: bool
    max_slot_wal_keep_size: str | None
    slot: SlotState | None
    slot_plugin: str | None
    publication: PublicationFacts | None
    inserts_publication: PublicationFacts | None = None
    # None when unknown (then preflight assumes the role may do what the next command needs).
    privileges: RolePrivileges | None = None


@attrs.frozen(order=True)
class Frontier:
    """A point in the change stream: a lake table holds every change before it.

    Changes are ordered by their transaction's commit position (the stream's order), then,
    within a transaction, by their own WAL position and their number among the changes at that
    position (a multi-row insert writes one WAL record for many rows; 1 for the first). Neither
    depends on which tables a run replicates. A change at (``commit``, ``lsn``, ``n``) is held
    when its commit lies before ``commit``, or when it belongs to the transaction committing at
    ``commit`` (one written in parts) and comes at or before (``change``, ``same``).
    ``Frontier(p)`` holds exactly the transactions committed before ``p``.
    """

    commit: int
    change: int = 0
    same: int = 0

    @property
    def within(self) -> tuple[int, int]:
        """How far into the transaction committing at ``commit``: (WAL position, number)."""
        return (self.change, self.same)

    def holds(self, commit: int, lsn: int, n: int) -> bool:
        return commit < self.commit or (commit == self.commit and (lsn, n) <= self.within)

    def __str__(self) -> str:
        at = str(Lsn(self.commit))
        if not self.change:
            return at
        return f"{at} (its changes up to {Lsn(self.change)} #{self.same})"


@attrs.frozen
class SourceIdentity:
    """Which PostgreSQL database a lake mirrors: the server's system identifier (the same on its
    physical replicas, so a failover keeps it) and the database's name. ``embedded``: the
    sample database of the embedded default (the demo's lake)."""

    system_identifier: str
    database: str
    embedded: bool = False

    def __str__(self) -> str:
        where = f"database {self.database!r} of server {self.system_identifier or '(unknown)'}"
        return f"{where} (the embedded sample database)" if self.embedded else where


@attrs.frozen
class Checkpoint:
    """What the lake holds: changes up to ``position``, for the snapshotted ``tables``."""

    position: Lsn
    tables: frozenset[TableId] = frozenset()
    # When the load that wrote this checkpoint ran (None for checkpoints of older versions).
    written_at: datetime.datetime | None = None
    # Each table's source shape as of ``position`` (what the lake's columns follow); empty for
    # checkpoints of older versions.
    schemas: Mapping[TableId, TableSchema] = attrs.field(factory=dict, eq=False)
    # Tables snapshotted on their own after the others (created later): each one's changes
    # apply only from the transactions committed at or after its position here.
    starts: Mapping[TableId, Lsn] = attrs.field(factory=dict, eq=False)
    # A transaction written in parts and not committed to the lake yet: its commit position, and
    # the WAL position and number (among changes at that position) of the last of its changes
    # the lake holds (a replay skips those; re-applying them over later parts could read
    # values, such as unchanged TOAST, from rows already moved on).
    in_flight: tuple[Lsn, Lsn, int] | None = None
    # The replication slot CDC continues from (each snapshot makes a new one; None: a
    # checkpoint of an older version, whose slot has the configured name).
    slot: str | None = None
    # Written while nothing of ours was in flight, at the server's position: the slot may
    # since have moved on over WAL without changes of ours (see LsnCheckpoint.resolve).
    idle: bool = False
    # The source the lake mirrors (None: a checkpoint of an older version).
    source: SourceIdentity | None = None
    # When the last transaction the lake holds was committed at the source (None: unknown).
    commit_ts: datetime.datetime | None = None

    def lake_columns(self, table: TableId) -> LakeColumns:
        """The names of ``table``'s metadata columns in the lake (a checkpoint of an older
        version, without its shape: the defaults, the names it was written with)."""
        shape = self.schemas.get(table)
        return LakeColumns() if shape is None else shape.lake_columns

    @property
    def frontier(self) -> Frontier:
        """The changes this checkpoint says the lake holds, as a point in the stream."""
        if self.in_flight is not None:
            commit, change, same = self.in_flight
            return Frontier(int(commit), int(change), same)
        return Frontier(int(self.position))


@attrs.frozen
class TableApplied:
    """What one batch applied to one table: its changes, and the transactions that had one."""

    table_id: TableId
    changes: int
    transactions: int


@attrs.frozen
class AppliedBatch:
    """A batch the lake committed, as observers (metrics) see it."""

    tables: tuple[TableApplied, ...]
    transactions: int
    changes: int
    # How long writing it to the lake took.
    seconds: float
    # The position the lake now holds, and the commit time of its last transaction (None for a
    # part of a transaction in flight).
    position: Lsn
    last_commit: datetime.datetime | None


@attrs.frozen
class TableMaintained:
    """One lake table after maintenance: its data files before and after compaction, and the
    files no longer referenced that were removed (None where the destination does not say)."""

    table_id: TableId
    lake_name: str
    files_before: int | None = None
    files_after: int | None = None
    removed: int | None = None


@attrs.frozen
class LakeTableInfo:
    """What a lake table looks like after a load: for reports and the demo."""

    table_id: TableId
    lake_name: str
    rows: int
    version: int | None
    location: str
    # The highest ``_pg_lsn`` in the table: the last change it received (None if unknown).
    last_lsn: int | None = None


@attrs.frozen
class LakeCensus:
    """A lake table's rows by what they stand for, for ``verify``."""

    # Rows a reader of the lake takes for the source's (a counted row: as many as it counts).
    live: int = 0
    # Marked deleted (``_pg_deleted_ts`` set) and still holding their values: soft deletes.
    soft_deleted: int = 0
    # Marked deleted with every value but the key NULL: a delete of a row the lake never held,
    # stored as a row. Never right.
    ghosts: int = 0
    # A counted row (no key, REPLICA IDENTITY FULL) whose count is 0 or less: a row image the
    # source no longer holds, still stored. Never right.
    tombstones: int = 0


@attrs.frozen
class LakeBatch:
    """Live lake rows, column by column in source column order; for counted tables, how many
    source rows each stands for. ``rendered``: the columns whose values the reader has already
    rendered as ``verify``'s canonical text (PostgreSQL's text output), in bulk."""

    num_rows: int
    columns: Sequence[Sequence[Any]]
    counts: Sequence[int] | None = None
    rendered: frozenset[int] = frozenset()


@attrs.frozen
class TableLoad:
    """One table's rows on their way from the source to the lake, streamed batch by batch."""

    schema: TableSchema
    batches: Any  # Iterable[RowBatch]; Any because dlt needs the original iterator type
    # A column's type differs from the one the lake's table was written with: the writer must
    # then check whether the lake column can take the new values, or give it the new type.
    retyped: bool = False


@attrs.frozen
class SnapshotReport:
    tables: tuple[LakeTableInfo, ...]
    position: Lsn | None
    rows: int


@attrs.frozen
class TableChanges:
    """One table's share of a CDC batch, compacted and ready for the lake.

    ``batch`` holds one row per surviving key: upserts, and deletes (marked by the change
    source in the batch itself). ``truncated``: the table was emptied inside the batch, so the
    lake table is replaced by ``batch`` instead of merged with it.
    """

    schema: TableSchema
    batch: RowBatch
    truncated: bool = False
    # Deletes keep the row (with ``_pg_deleted_ts`` set) instead of removing it.
    soft_delete: bool = False


@attrs.frozen
class CdcReport:
    transactions: int
    changes: int
    batches: int
    start: Lsn
    position: Lsn
    tables: tuple[TableId, ...] = ()
    # --follow ended because tables were added to the source: run again to snapshot them.
    rescan: bool = False
