"""Small builders for CDC unit tests: transactions of changes to a two-column table."""

from __future__ import annotations

import datetime as dt

from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    ChangeKind,
    ColumnSchema,
    ReplicaIdentity,
    SchemaChange,
    TableId,
    TableSchema,
    Transaction,
    Truncation,
)

ITEMS = TableId("public", "items")
TAGS = TableId("public", "tags")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def table(
    table_id: TableId = ITEMS, identity: ReplicaIdentity = ReplicaIdentity.DEFAULT
) -> TableSchema:
    return TableSchema(
        table_id,
        (ColumnSchema("id", "integer", 23), ColumnSchema("v", "text", 25)),
        primary_key=("id",),
        replica_identity=identity,
    )


def ins(id_: int, v: str | None, lsn: int = 0, table_id: TableId = ITEMS) -> Change:
    return Change(table_id, ChangeKind.INSERT, lsn, (id_,), (id_, v))


def upd(
    id_: int,
    v: str | None,
    lsn: int = 0,
    *,
    old_id: int | None = None,
    unchanged: frozenset[int] = frozenset(),
    table_id: TableId = ITEMS,
) -> Change:
    old = (old_id,) if old_id is not None else None
    return Change(table_id, ChangeKind.UPDATE, lsn, (id_,), (id_, v), old, unchanged)


def dele(id_: int, lsn: int = 0, table_id: TableId = ITEMS) -> Change:
    return Change(table_id, ChangeKind.DELETE, lsn, (id_,), None)


def trunc(*tables: TableId, lsn: int = 0) -> Truncation:
    return Truncation(tables, lsn)


def txn(end: int, *changes: Change | Truncation | SchemaChange) -> Transaction:
    return Transaction(
        xid=end, end_lsn=Lsn(end), commit_ts=T0 + dt.timedelta(seconds=end), changes=changes
    )
