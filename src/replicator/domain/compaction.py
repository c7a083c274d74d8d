"""Compaction of a CDC batch: one final image per table and key.

The lake applies a batch as one MERGE per table, and a MERGE must see each key once. Changes are
folded in WAL order, so the last change to a key wins: an update after an insert leaves the
updated row, a delete removes the key, a delete followed by a re-insert leaves the new row, an
update that changes the key removes the old key and writes the new one, and a TRUNCATE empties
the table at its place in the stream (the table is then replaced rather than merged).

A key with a DEFERRABLE constraint can name two rows for a moment inside a transaction
(``UPDATE t SET id = id + 1``: key 2 is the moved row 1 and the old row 2 until the next row
moves). Such tables have REPLICA IDENTITY FULL, so every change carries the old row: their
changes are held until the transaction ends and resolved by matching each old row against the
rows the transaction wrote, which tells which of the two rows a change touches. At the commit
the key names one row again, and that row (or its deletion) is folded in as above.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import attrs

from replicator.domain.model import (
    Change,
    ChangeKind,
    Key,
    RowImage,
    SchemaChange,
    TableId,
    Transaction,
    Truncation,
)


class Upsert(NamedTuple):
    """A key's final row (a named tuple: one per change on the hot path). ``unchanged``:
    positions still to be taken from the stored row, which is stored under ``stored_key`` when
    the key moved within the batch, else under the row's own key."""

    row: RowImage
    lsn: int
    commit_ts: dt.datetime
    unchanged: frozenset[int] = frozenset()
    stored_key: Key | None = None


class Removal(NamedTuple):
    """A key's deletion. ``row``: the old image when the source sent it (REPLICA IDENTITY FULL)."""

    key: Key
    row: RowImage | None
    lsn: int
    commit_ts: dt.datetime


@attrs.define(slots=True)
class RowCount:
    """A keyless table's row image in the batch: the change in how many rows hold it, and its
    last change's WAL position and commit time."""

    delta: int
    lsn: int
    committed: dt.datetime


@attrs.define
class CompactedTable:
    table_id: TableId
    truncated: bool = False
    upserts: dict[Key, Upsert] = attrs.field(factory=dict)
    removals: dict[Key, Removal] = attrs.field(factory=dict)
    # Tables without a key (REPLICA IDENTITY FULL): a row is its values, and identical rows are
    # counted; per row image, the change in its count and the last change's position and time.
    counted: bool = False
    counts: dict[Key, RowCount] = attrs.field(factory=dict)
    # What the batch applied to the table (for metrics): changes, and transactions with one,
    # ``seen`` the last transaction counted.
    changes: int = 0
    transactions: int = 0
    seen: int = -1

    @property
    def size(self) -> int:
        return len(self.upserts) + len(self.removals) + len(self.counts)


def _fill_unchanged(
    row: RowImage, unchanged: frozenset[int], prior: Upsert | None
) -> tuple[RowImage, frozenset[int]]:
    """Take values the server did not send from an earlier image of the same row in the batch;
    returns the row and the positions still missing."""
    if not unchanged or prior is None:
        return row, unchanged
    filled = tuple(prior.row[i] if i in unchanged else v for i, v in enumerate(row))
    return filled, unchanged & prior.unchanged


class BatchCompactor:
    """Folds transactions into per-table final images, in the order they are added.

    ``counted``: tables without a key, whose rows are matched on all their columns.
    """

    def __init__(
        self, counted: frozenset[TableId] = frozenset(), deferred: frozenset[TableId] = frozenset()
    ) -> None:
        self.tables: dict[TableId, CompactedTable] = {}
        self._counted = counted
        # Tables with a deferrable key, and their changes in the transaction in flight.
        self._deferred = deferred
        self._held: dict[TableId, list[tuple[Change, dt.datetime]]] = {}
        self._transaction = 0  # how many transactions ended: the one in flight's number

    @property
    def holding(self) -> bool:
        """Changes of the transaction in flight wait for its end (a deferrable key): the batch
        cannot be cut before it."""
        return bool(self._held)

    def end_transaction(self) -> None:
        """The transaction in flight committed: fold in what it did to deferrable-key tables."""
        self._transaction += 1
        if self._held:
            held, self._held = self._held, {}
            for table_id, changes in held.items():
                self._resolve(self.table(table_id), changes)

    def table(self, table_id: TableId) -> CompactedTable:
        table = self.tables.get(table_id)
        if table is None:
            table = self.tables[table_id] = CompactedTable(
                table_id, counted=table_id in self._counted
            )
        return table

    def add(self, transaction: Transaction) -> None:
        for change in transaction.changes:
            if not isinstance(change, SchemaChange):  # the stream's business, not the batch's
                self.apply(change, transaction.commit_ts)
        self.end_transaction()

    def apply(self, change: Change | Truncation, ts: dt.datetime) -> None:
        """Fold one change (committed at ``ts``) into the batch."""
        if isinstance(change, Truncation):
            for table_id in change.table_ids:
                self._held.pop(table_id, None)
                table = self.table(table_id)
                self._counted_in(table)
                table.truncated = True
                table.upserts.clear()
                table.removals.clear()
                table.counts.clear()
            return
        found = self.tables.get(change.table_id)
        if found is None:
            found = self.table(change.table_id)
        found.changes += 1
        if found.seen != self._transaction:
            found.seen = self._transaction
            found.transactions += 1
        if self._deferred and change.table_id in self._deferred:
            self._held.setdefault(change.table_id, []).append((change, ts))
            return
        if found.counted:
            self._count(found, change, ts)
        else:
            self._apply(found, change, ts)

    def _counted_in(self, table: CompactedTable) -> None:
        table.changes += 1
        if table.seen != self._transaction:
            table.seen = self._transaction
            table.transactions += 1

    @staticmethod
    def _count(table: CompactedTable, change: Change, ts: dt.datetime) -> None:
        """A keyless row: an insert adds one row with these values, a delete takes one away,
        an update does both (its key is the whole row, ``old_key`` the whole old row)."""
        counts = table.counts
        moves: tuple[tuple[Key, int], ...]
        if change.kind is ChangeKind.DELETE:
            moves = ((change.key, -1),)
        elif change.kind is ChangeKind.INSERT:
            moves = ((change.key, 1),)
        elif change.old_key is None:
            return  # every value as it was
        else:
            moves = ((change.old_key, -1), (change.key, 1))
        for row, step in moves:
            entry = counts.get(row)
            if entry is None:
                counts[row] = RowCount(step, change.lsn, ts)
            else:
                entry.delta += step
                entry.lsn = change.lsn
                entry.committed = ts

    def _resolve(self, table: CompactedTable, changes: list[tuple[Change, dt.datetime]]) -> None:
        """One transaction's changes to a deferrable-key table, as what each key names at its
        end. A change's old row is either one the transaction wrote (matched by its values) or
        the row the key held before the transaction."""
        written: dict[Key, list[RowImage]] = {}  # rows the transaction wrote, per key
        before: dict[Key, RowImage | None] = {}  # keys whose earlier row it removed: that row
        last: dict[Key, tuple[int, dt.datetime]] = {}  # per key touched: its last change

        def remove(key: Key, old: RowImage | None) -> None:
            rows = written.get(key)
            if rows:
                for i in range(len(rows) - 1, -1, -1):
                    if old is None or rows[i] == old:
                        del rows[i]
                        return
            before.setdefault(key, old)

        for change, ts in changes:
            if change.kind is ChangeKind.DELETE:
                remove(change.key, change.row)
            else:
                if change.kind is ChangeKind.UPDATE:
                    old_key = change.old_key if change.old_key is not None else change.key
                    remove(old_key, change.old_row)
                    last[old_key] = (change.lsn, ts)
                assert change.row is not None
                written.setdefault(change.key, []).append(change.row)
            last[change.key] = (change.lsn, ts)
        for key, (lsn, ts) in last.items():
            rows = written.get(key)
            if rows:  # at the commit the key names one row again: the last one written
                self._apply(
                    table, Change(table.table_id, ChangeKind.INSERT, lsn, key, rows[-1]), ts
                )
            elif key in before:
                gone = Change(table.table_id, ChangeKind.DELETE, lsn, key, before[key])
                self._apply(table, gone, ts)

    @staticmethod
    def _apply(table: CompactedTable, change: Change, ts: dt.datetime) -> None:
        if change.kind is ChangeKind.DELETE:
            table.upserts.pop(change.key, None)
            if not table.truncated:
                table.removals[change.key] = Removal(change.key, change.row, change.lsn, ts)
            return
        assert change.row is not None
        upserts = table.upserts
        key = change.key
        old_key = change.old_key
        moved = old_key is not None and old_key != key
        if not moved and not change.unchanged:
            # The common case (insert, or update of a complete row in place): last one wins.
            if table.removals:
                table.removals.pop(key, None)
            upserts[key] = Upsert(change.row, change.lsn, ts)
            return
        # The row as it was before this change, under the key it had then.
        own_key: Key = old_key if old_key is not None and moved else key
        prior = upserts.pop(own_key, None) if moved else upserts.get(key)
        if moved and not table.truncated:
            table.removals[own_key] = Removal(own_key, None, change.lsn, ts)
        row, unchanged = _fill_unchanged(change.row, change.unchanged, prior)
        # Values still missing are in the lake, under the key the row had when the batch began.
        stored_key = own_key if prior is None else (prior.stored_key or own_key)
        table.removals.pop(key, None)
        upserts[key] = Upsert(
            row,
            change.lsn,
            ts,
            unchanged,
            stored_key if unchanged and stored_key != key else None,
        )
