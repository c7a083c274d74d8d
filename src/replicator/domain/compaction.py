"""Compaction of a CDC batch: one final image per table and key.

The lake applies a batch as one MERGE per table, and a MERGE must see each key once. Changes are
folded in WAL order, so the last change to a key wins: an update after an insert leaves the
updated row, a delete removes the key, a delete followed by a re-insert leaves the new row, an
update that changes the key removes the old key and writes the new one, and a TRUNCATE empties
the table at its place in the stream (the table is then replaced rather than merged).
"""

from __future__ import annotations

import datetime as dt

import attrs

from replicator.domain.model import (
    Change,
    ChangeKind,
    Key,
    RowImage,
    TableId,
    Transaction,
    Truncation,
)


@attrs.frozen(slots=True)
class Upsert:
    """A key's final row. ``unchanged``: positions still to be taken from the stored row."""

    row: RowImage
    lsn: int
    commit_ts: dt.datetime
    unchanged: frozenset[int] = frozenset()


@attrs.frozen(slots=True)
class Removal:
    """A key's deletion. ``row``: the old image when the source sent it (REPLICA IDENTITY FULL)."""

    key: Key
    row: RowImage | None
    lsn: int
    commit_ts: dt.datetime


@attrs.define
class CompactedTable:
    table_id: TableId
    truncated: bool = False
    upserts: dict[Key, Upsert] = attrs.field(factory=dict)
    removals: dict[Key, Removal] = attrs.field(factory=dict)

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.removals)


def _fill_unchanged(row: RowImage, unchanged: frozenset[int], prior: Upsert | None) -> Upsert:
    """Take values the server did not send from an earlier image of the same row in the batch."""
    if not unchanged or prior is None:
        return Upsert(row, 0, dt.datetime.min, unchanged)
    filled = tuple(prior.row[i] if i in unchanged else v for i, v in enumerate(row))
    return Upsert(filled, 0, dt.datetime.min, unchanged & prior.unchanged)


class BatchCompactor:
    """Folds transactions into per-table final images, in the order they are added."""

    def __init__(self) -> None:
        self.tables: dict[TableId, CompactedTable] = {}

    def table(self, table_id: TableId) -> CompactedTable:
        table = self.tables.get(table_id)
        if table is None:
            table = self.tables[table_id] = CompactedTable(table_id)
        return table

    def add(self, transaction: Transaction) -> None:
        ts = transaction.commit_ts
        for change in transaction.changes:
            if isinstance(change, Truncation):
                for table_id in change.table_ids:
                    table = self.table(table_id)
                    table.truncated = True
                    table.upserts.clear()
                    table.removals.clear()
            else:
                self._apply(self.table(change.table_id), change, ts)

    @staticmethod
    def _apply(table: CompactedTable, change: Change, ts: dt.datetime) -> None:
        if change.kind is ChangeKind.DELETE:
            table.upserts.pop(change.key, None)
            if not table.truncated:
                table.removals[change.key] = Removal(change.key, change.row, change.lsn, ts)
            return
        assert change.row is not None
        prior = table.upserts.get(change.key)
        if change.old_key is not None and change.old_key != change.key:
            # The key moved: the old key is gone, its earlier image (if any) feeds the new row.
            prior = table.upserts.pop(change.old_key, None)
            if not table.truncated:
                table.removals[change.old_key] = Removal(change.old_key, None, change.lsn, ts)
        image = _fill_unchanged(change.row, change.unchanged, prior)
        table.removals.pop(change.key, None)
        table.upserts[change.key] = Upsert(image.row, change.lsn, ts, image.unchanged)
