from __future__ import annotations

import os
import random

from replicator.domain.compaction import BatchCompactor
from replicator.domain.model import Change, ChangeKind, TableId, Transaction
from tests.unit.cdc_builders import ITEMS, T0, TAGS, dele, ins, trunc, txn, upd


def compact(*transactions):  # type: ignore[no-untyped-def]
    compactor = BatchCompactor()
    for t in transactions:
        compactor.add(t)
    return compactor.tables


def upserts(tables, table_id=ITEMS):  # type: ignore[no-untyped-def]
    return {k: u.row for k, u in tables[table_id].upserts.items()}


def removals(tables, table_id=ITEMS):  # type: ignore[no-untyped-def]
    return set(tables[table_id].removals)


class TestCompaction:
    def test_last_change_to_a_key_wins(self) -> None:
        tables = compact(txn(10, ins(1, "a", 1), upd(1, "b", 2)), txn(20, upd(1, "c", 3)))
        assert upserts(tables) == {(1,): (1, "c")}
        assert tables[ITEMS].upserts[(1,)].lsn == 3
        assert removals(tables) == set()

    def test_delete_removes_the_key(self) -> None:
        tables = compact(txn(10, ins(1, "a"), ins(2, "b")), txn(20, dele(1)))
        assert upserts(tables) == {(2,): (2, "b")}
        assert removals(tables) == {(1,)}

    def test_delete_then_reinsert_leaves_the_new_row(self) -> None:
        tables = compact(txn(10, dele(1), ins(1, "again")))
        assert upserts(tables) == {(1,): (1, "again")}
        assert removals(tables) == set()

    def test_primary_key_update_moves_the_row(self) -> None:
        tables = compact(txn(10, ins(1, "a")), txn(20, upd(2, "a", old_id=1)))
        assert upserts(tables) == {(2,): (2, "a")}
        assert removals(tables) == {(1,)}

    def test_key_swap_chain_ends_with_the_right_rows(self) -> None:
        tables = compact(txn(10, upd(3, "x", old_id=1), upd(1, "y", old_id=2)))
        assert upserts(tables) == {(3,): (3, "x"), (1,): (1, "y")}
        assert removals(tables) == {(2,)}

    def test_unchanged_values_come_from_an_earlier_image_in_the_batch(self) -> None:
        tables = compact(txn(10, ins(1, "big")), txn(20, upd(1, None, unchanged=frozenset({1}))))
        upsert = tables[ITEMS].upserts[(1,)]
        assert upsert.row == (1, "big")
        assert upsert.unchanged == frozenset()

    def test_unchanged_values_without_an_earlier_image_stay_marked(self) -> None:
        tables = compact(txn(10, upd(1, None, unchanged=frozenset({1}))))
        assert tables[ITEMS].upserts[(1,)].unchanged == frozenset({1})

    def test_truncate_drops_earlier_changes_and_marks_the_table(self) -> None:
        tables = compact(
            txn(10, ins(1, "a"), dele(5), ins(7, "t", table_id=TAGS)),
            txn(20, trunc(ITEMS, TAGS), ins(2, "after")),
        )
        assert tables[ITEMS].truncated and tables[TAGS].truncated
        assert upserts(tables) == {(2,): (2, "after")}
        assert removals(tables) == set()
        assert upserts(tables, TAGS) == {}

    def test_deletes_after_a_truncate_need_no_removal(self) -> None:
        tables = compact(txn(10, trunc(ITEMS), ins(1, "a"), dele(1)))
        assert upserts(tables) == {}
        assert removals(tables) == set()

    def test_tables_are_kept_apart(self) -> None:
        tables = compact(txn(10, ins(1, "a"), ins(1, "tag", table_id=TAGS)))
        assert upserts(tables) == {(1,): (1, "a")}
        assert upserts(tables, TAGS) == {(1,): (1, "tag")}


class TestUnchangedValuesAcrossKeyMoves:
    def test_moved_row_reads_missing_values_under_its_old_key(self) -> None:
        tables = compact(txn(10, upd(4, None, old_id=3, unchanged=frozenset({1}))))
        upsert = tables[ITEMS].upserts[(4,)]
        assert upsert.unchanged == frozenset({1})
        assert upsert.stored_key == (3,)

    def test_update_after_a_move_keeps_pointing_at_the_original_key(self) -> None:
        tables = compact(
            txn(10, upd(4, "x", old_id=3, unchanged=frozenset({1}))),
            txn(20, upd(4, None, unchanged=frozenset({1}))),
        )
        assert tables[ITEMS].upserts[(4,)].stored_key == (3,)

    def test_rows_not_moved_need_no_stored_key(self) -> None:
        tables = compact(txn(10, upd(1, None, unchanged=frozenset({1}))))
        assert tables[ITEMS].upserts[(1,)].stored_key is None


class TestDeferrableKeys:
    """A key with a DEFERRABLE constraint names two rows for a moment inside a transaction; the
    old rows (REPLICA IDENTITY FULL) say which one each change touches."""

    @staticmethod
    def moved(old: tuple[int, str], new: tuple[int, str], lsn: int) -> Change:
        old_key = (old[0],) if old[0] != new[0] else None
        return Change(ITEMS, ChangeKind.UPDATE, lsn, (new[0],), new, old_key, old_row=old)

    def apply(self, lake: dict[int, str], *transactions: Transaction) -> dict[int, str]:
        compactor = BatchCompactor(deferred=frozenset({ITEMS}))
        for t in transactions:
            compactor.add(t)
        result = dict(lake)
        table = compactor.tables[ITEMS]
        for (key,) in table.removals:
            result.pop(key, None)
        for (key,), upsert in table.upserts.items():
            result[key] = upsert.row[1]
        return result

    def test_a_swap_keeps_both_rows(self) -> None:
        lake = {1: "a", 2: "b"}
        swap = txn(10, self.moved((1, "a"), (2, "a"), 1), self.moved((2, "b"), (1, "b"), 2))
        assert self.apply(lake, swap) == {1: "b", 2: "a"}

    def test_random_permutations_land_as_applied_row_by_row(self) -> None:
        seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randrange(10**6)))
        print(f"deferrable-key compaction seed: {seed} (replay with REPLICATOR_TEST_SEED={seed})")
        rng = random.Random(seed)
        for _ in range(200):
            source = {k: f"v{k}" for k in rng.sample(range(1, 30), rng.randint(1, 12))}
            lake = dict(source)
            transactions = []
            rows = [[k, v] for k, v in source.items()]  # the table as a list: duplicates allowed
            for end in range(1, rng.randint(2, 4)):
                changes: list[Change] = []
                for _step in range(rng.randint(1, 15)):
                    lsn = end * 100 + len(changes)
                    choice = rng.random()
                    if choice < 0.6 and rows:  # move a row to any key, maybe a held one
                        row = rng.choice(rows)
                        old = (row[0], row[1])
                        row[0] = rng.randint(1, 30)
                        row[1] = rng.choice([row[1], f"w{lsn}"])
                        changes.append(self.moved(old, (row[0], row[1]), lsn))
                    elif choice < 0.8 and rows:
                        row = rows.pop(rng.randrange(len(rows)))
                        changes.append(
                            Change(ITEMS, ChangeKind.DELETE, lsn, (row[0],), (row[0], row[1]))
                        )
                    else:
                        row = [rng.randint(1, 30), f"i{lsn}"]
                        rows.append(row)
                        changes.append(Change(ITEMS, ChangeKind.INSERT, lsn, (row[0],), tuple(row)))
                # The constraint is checked at the commit: make the keys unique again.
                seen: set[int] = set()
                for row in list(rows):
                    if row[0] in seen:
                        rows.remove(row)
                        lsn = end * 100 + len(changes)
                        changes.append(
                            Change(ITEMS, ChangeKind.DELETE, lsn, (row[0],), (row[0], row[1]))
                        )
                    seen.add(row[0])
                transactions.append(txn(end * 100 + 99, *changes))
            expected = {k: v for k, v in rows}
            assert self.apply(lake, *transactions) == expected, f"seed {seed}"


LOG = TableId("public", "log")  # no key, REPLICA IDENTITY FULL: a row is its values


def row_in(
    kind: ChangeKind, new: tuple[str, int] | None, old: tuple[str, int] | None, lsn: int = 0
) -> Change:
    """A change to the keyless table as the decoder gives it: the key is the whole row (the old
    one for a delete, whose row is the old image), ``old_key`` the whole old row of an update."""
    if kind is ChangeKind.DELETE:
        assert old is not None
        return Change(LOG, kind, lsn, old, old)
    assert new is not None
    return Change(LOG, kind, lsn, new, new, old if kind is ChangeKind.UPDATE else None)


def counts(*transactions: Transaction) -> dict[tuple[object, ...], tuple[int, int, int]]:
    """Per row image: the change in its count, and the last change's position and commit
    second (``txn(end)`` commits at T0 + end seconds)."""
    compactor = BatchCompactor(counted=frozenset({LOG}))
    for t in transactions:
        compactor.add(t)
    assert not compactor.tables[LOG].upserts and not compactor.tables[LOG].removals
    return {
        row: (c.delta, c.lsn, int((c.committed - T0).total_seconds()))
        for row, c in compactor.tables[LOG].counts.items()
    }


class TestKeylessTablesAreCounted:
    """Tables without a key (REPLICA IDENTITY FULL): identical rows are told apart only by how
    many there are, so the batch keeps a count per row image."""

    def test_identical_inserts_add_up(self) -> None:
        a = row_in(ChangeKind.INSERT, ("a", 1), None)
        assert counts(
            txn(10, a._replace(lsn=1), a._replace(lsn=2)), txn(20, a._replace(lsn=3))
        ) == {("a", 1): (3, 3, 20)}

    def test_a_delete_takes_one_copy_away(self) -> None:
        a = row_in(ChangeKind.INSERT, ("a", 1), None)
        gone = row_in(ChangeKind.DELETE, None, ("a", 1))
        assert counts(txn(10, a, a), txn(20, gone._replace(lsn=5))) == {("a", 1): (1, 5, 20)}

    def test_a_delete_of_a_row_from_before_the_batch_counts_below_zero(self) -> None:
        gone = row_in(ChangeKind.DELETE, None, ("old", 7))
        assert counts(txn(10, gone._replace(lsn=4), gone._replace(lsn=6))) == {
            ("old", 7): (-2, 6, 10)
        }

    def test_an_update_moves_one_copy_to_its_new_values(self) -> None:
        a = row_in(ChangeKind.INSERT, ("a", 1), None)
        moved = row_in(ChangeKind.UPDATE, ("b", 1), ("a", 1))
        assert counts(txn(10, a, a), txn(20, moved._replace(lsn=8))) == {
            ("a", 1): (1, 8, 20),
            ("b", 1): (1, 8, 20),
        }

    def test_an_insert_deleted_in_the_same_batch_nets_to_zero(self) -> None:
        a = row_in(ChangeKind.INSERT, ("a", 1), None)
        gone = row_in(ChangeKind.DELETE, None, ("a", 1))
        assert counts(txn(10, a), txn(20, gone._replace(lsn=9))) == {("a", 1): (0, 9, 20)}

    def test_an_update_that_changed_no_value_counts_nothing_but_is_applied(self) -> None:
        same = Change(LOG, ChangeKind.UPDATE, 3, ("a", 1), ("a", 1), None)
        compactor = BatchCompactor(counted=frozenset({LOG}))
        compactor.add(txn(10, same))
        table = compactor.tables[LOG]
        assert table.counts == {}
        assert (table.changes, table.transactions, table.size) == (1, 1, 0)

    def test_a_truncate_drops_the_counts_and_marks_the_table(self) -> None:
        a = row_in(ChangeKind.INSERT, ("a", 1), None)
        b = row_in(ChangeKind.INSERT, ("b", 2), None)
        compactor = BatchCompactor(counted=frozenset({LOG}))
        compactor.add(txn(10, a, a))
        compactor.add(txn(20, trunc(LOG), b._replace(lsn=21)))
        table = compactor.tables[LOG]
        assert table.truncated
        assert {row: c.delta for row, c in table.counts.items()} == {("b", 2): 1}
        assert (table.changes, table.transactions) == (4, 2)

    def test_only_the_counted_tables_are_counted(self) -> None:
        compactor = BatchCompactor(counted=frozenset({LOG}))
        compactor.add(txn(10, row_in(ChangeKind.INSERT, ("a", 1), None), ins(1, "x")))
        assert {row: c.delta for row, c in compactor.tables[LOG].counts.items()} == {("a", 1): 1}
        assert compactor.tables[ITEMS].counts == {}
        assert upserts(compactor.tables) == {(1,): (1, "x")}
