"""ALTER TABLE while replicating: the lake follows in order, from the Relation messages, without
stopping; every test compares the lake with the source value by value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import read_slot
from replicator.domain.errors import SourceSchemaError
from tests.integration.helpers import cdc, snapshot, source_rows
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

ITEMS = """
CREATE TABLE items (id int PRIMARY KEY, name varchar(20), price numeric(10,2), qty int);
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, g FROM generate_series(1, 6) g;
"""


def assert_source_columns_equal(execute: Any, lake: LakeSettings, table: str) -> list[dict]:
    """The lake holds every source column with the source's values (it may hold more)."""
    expected = source_rows(execute, table)
    actual = delta_rows(lake, table)
    assert [r["id"] for r in actual] == [r["id"] for r in expected]
    for lake_row, source_row in zip(actual, expected, strict=True):
        assert {k: lake_row.get(k) for k in source_row} == source_row, f"id={source_row['id']}"
    return actual


class TestSchemaEvolution:
    def test_add_columns_with_and_without_default_fill_older_rows(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("UPDATE items SET qty = 100 WHERE id = 1")
        execute("""
            BEGIN;
            UPDATE items SET qty = 200 WHERE id = 2;
            ALTER TABLE items ADD COLUMN note text;
            ALTER TABLE items ADD COLUMN tier int NOT NULL DEFAULT 3;
            ALTER TABLE items ADD COLUMN label text DEFAULT 'it''s new';
            UPDATE items SET note = 'touched', tier = 9 WHERE id = 3;
            INSERT INTO items VALUES (7, 'seven', 7.00, 7, 'n7', 1, NULL);
            COMMIT;
        """)
        execute("UPDATE items SET qty = 300 WHERE id = 4")

        report = cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        assert [(r["id"], r["note"], r["tier"], r["label"]) for r in rows] == [
            (1, None, 3, "it's new"),
            (2, None, 3, "it's new"),
            (3, "touched", 9, "it's new"),
            (4, None, 3, "it's new"),
            (5, None, 3, "it's new"),
            (6, None, 3, "it's new"),
            (7, "n7", 1, None),
        ]
        assert report.position > report.start

    def test_drop_and_rename_keep_values_and_the_old_lake_columns(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE items RENAME COLUMN name TO title")
        execute("UPDATE items SET title = 'renamed' WHERE id = 2")
        execute("ALTER TABLE items DROP COLUMN qty")
        execute("UPDATE items SET price = 99.99 WHERE id = 3")
        execute("INSERT INTO items VALUES (8, 'eight', 8.00)")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        # Renamed: older rows copied into the new name; the old column stays, NULL once a row
        # is written again. Dropped: the lake column stays, NULL in rows written since.
        assert [(r["id"], r["name"], r["qty"]) for r in rows] == [
            (1, "item 1", 1),
            (2, None, 2),  # written after the rename, before the drop
            (3, None, None),
            (4, "item 4", 4),
            (5, "item 5", 5),
            (6, "item 6", 6),
            (8, None, None),
        ]

    def test_widening_changes_need_no_lake_change(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE items ALTER COLUMN name TYPE text")
        execute("ALTER TABLE items ALTER COLUMN price TYPE numeric(20,2)")
        execute("ALTER TABLE items ALTER COLUMN qty TYPE bigint")
        execute("INSERT INTO items VALUES (9, repeat('x', 50), 123456789012.34, 9000000000)")
        execute("UPDATE items SET qty = qty + 1 WHERE id = 1")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        assert rows[-1]["price"] == Decimal("123456789012.34")
        assert rows[-1]["qty"] == 9_000_000_000

    def test_a_change_the_lake_cannot_hold_stops_before_the_slot_moves(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("UPDATE items SET qty = 11 WHERE id = 1")
        before = read_slot(pg_settings)
        execute("ALTER TABLE items ALTER COLUMN qty TYPE text USING qty::text")
        execute("UPDATE items SET qty = 'many' WHERE id = 2")

        with pytest.raises(SourceSchemaError, match=r"public\.items\.qty: its type changed"):
            cdc(pg_settings, delta_settings)

        after = read_slot(pg_settings)
        assert before is not None and after is not None
        assert after.confirmed_flush == before.confirmed_flush
        # The batch in hand is dropped with the error: the lake stays at its checkpoint.
        assert [r["qty"] for r in delta_rows(delta_settings, "items")][:2] == [1, 2]

    def test_a_restart_after_ddl_that_cdc_has_not_read_yet_stays_exact(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        """The catalog is ahead of the stream: the lake's shape comes from the checkpoint."""
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("UPDATE items SET qty = 50 WHERE id = 5")
        cdc(pg_settings, delta_settings)
        execute("UPDATE items SET name = 'before rename' WHERE id = 1")
        execute("ALTER TABLE items RENAME COLUMN name TO title")
        execute("ALTER TABLE items ADD COLUMN extra int DEFAULT 42")
        execute("UPDATE items SET title = 'after rename' WHERE id = 2")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        assert [(r["id"], r["title"], r["extra"]) for r in rows][:3] == [
            (1, "before rename", 42),
            (2, "after rename", 42),
            (3, "item 3", 42),
        ]

    def test_a_column_dropped_then_added_again_holds_only_the_new_values(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE items DROP COLUMN name")
        execute("UPDATE items SET qty = 0 WHERE id = 1")
        execute("ALTER TABLE items ADD COLUMN name text")
        execute("UPDATE items SET name = 'new' WHERE id = 2")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        assert [r["name"] for r in rows] == [None, "new", None, None, None, None]

    def test_a_column_added_again_with_another_type_stops_with_the_fix(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE items DROP COLUMN name")
        execute("ALTER TABLE items ADD COLUMN name date")
        execute("UPDATE items SET name = '2024-01-01' WHERE id = 2")

        with pytest.raises(SourceSchemaError, match=r"items\.name: the lake column"):
            cdc(pg_settings, delta_settings)

    def test_a_column_changed_twice_before_cdc_reads_it_is_followed(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        """The catalog is two ALTERs ahead: the middle shape is described from the stream."""
        execute(ITEMS)
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE items ADD COLUMN c int")
        execute("INSERT INTO items VALUES (20, 'twenty', 2.00, 2, 2)")
        execute("ALTER TABLE items ALTER COLUMN c TYPE bigint")
        execute("INSERT INTO items VALUES (21, 'twenty-one', 3.00, 3, 3000000000)")
        execute("ALTER TABLE items RENAME COLUMN qty TO q2")
        execute("UPDATE items SET q2 = 77 WHERE id = 1")
        execute("ALTER TABLE items DROP COLUMN q2")
        execute("UPDATE items SET name = 'after drop' WHERE id = 2")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "items")
        assert [(r["id"], r["c"], r["q2"]) for r in rows] == [
            (1, None, 77),  # written while q2 existed
            (2, None, None),  # written after it was dropped
            (3, None, 3),  # older than the rename: copied into q2
            (4, None, 4),
            (5, None, 5),
            (6, None, 6),
            (20, 2, 20 - 18),
            (21, 3_000_000_000, 3),
        ]

    def test_two_tables_altered_then_truncated_together(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        """Both Relation messages come before the one TRUNCATE: both changes are applied."""
        execute("CREATE TABLE a (id int PRIMARY KEY, v int); CREATE TABLE b (id int PRIMARY KEY, v int);"
                "INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1)")  # fmt: skip
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE a ADD COLUMN x int; ALTER TABLE b ADD COLUMN y int")
        execute("TRUNCATE a, b; INSERT INTO a VALUES (1, 1, 10); INSERT INTO b VALUES (1, 1, 20)")

        cdc(pg_settings, delta_settings)

        assert assert_source_columns_equal(execute, delta_settings, "a")[0]["x"] == 10
        assert assert_source_columns_equal(execute, delta_settings, "b")[0]["y"] == 20

    def test_the_last_column_dropped_and_added_again_with_a_default(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        """Same name and type, new attnum: the lake must not keep the old column's values."""
        execute("CREATE TABLE t (id int PRIMARY KEY, c text); INSERT INTO t VALUES (1, 'old')")
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE t DROP COLUMN c; ALTER TABLE t ADD COLUMN c text DEFAULT 'new'")
        execute("INSERT INTO t VALUES (2, 'two')")

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "t")
        assert [r["c"] for r in rows] == ["new", "two"]

    def test_a_dropped_column_is_not_taken_for_renamed_into_a_later_one(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY, a int); INSERT INTO t VALUES (1, 11)")
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE t DROP COLUMN a; ALTER TABLE t ADD COLUMN x int")
        execute("INSERT INTO t VALUES (2, 5)")
        execute("ALTER TABLE t ALTER COLUMN x TYPE bigint")  # the catalog is ahead again

        cdc(pg_settings, delta_settings)

        rows = assert_source_columns_equal(execute, delta_settings, "t")
        assert [(r["id"], r["x"], r["a"]) for r in rows] == [(1, None, 11), (2, 5, None)]
