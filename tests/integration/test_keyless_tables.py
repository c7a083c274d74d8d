"""Tables without a primary key: matched on all columns under REPLICA IDENTITY FULL (identical
rows counted), otherwise left out or replicated by their inserts only, never breaking the
source's own updates and deletes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.entrypoints.containers import Container
from tests.integration.helpers import cdc, snapshot
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

BIG = "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 300) g)"


def source_multiset(execute: Any, table: str, columns: str) -> Counter[tuple[Any, ...]]:
    return Counter(execute(f"SELECT {columns} FROM {table}"))


def lake_multiset(lake: LakeSettings, table: str, columns: list[str]) -> Counter[tuple[Any, ...]]:
    rows = delta_rows(lake, table, order_by="_pg_lsn", meta=True)
    found: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        if row["_pg_deleted_ts"] is not None:
            continue
        found[tuple(row[c] for c in columns)] += row.get("_pg_row_count") or 1
    return found


class TestReplicaIdentityFull:
    def test_identical_rows_are_counted_through_snapshot_and_cdc(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(f"""
            CREATE TABLE log (a int, b text, big text);
            ALTER TABLE log REPLICA IDENTITY FULL;
            ALTER TABLE log ALTER COLUMN big SET STORAGE EXTERNAL;
            INSERT INTO log VALUES (1, 'x', NULL), (1, 'x', NULL), (1, 'x', NULL), (2, 'y', 'v'),
                (NULL, 'z', NULL), (NULL, 'z', NULL);
            INSERT INTO log VALUES (3, 'toast', {BIG});
        """)
        snapshot(pg_settings, delta_settings)
        columns = ["a", "b", "big"]
        assert lake_multiset(delta_settings, "log", columns) == source_multiset(
            execute, "log", "a, b, big"
        )

        execute("INSERT INTO log VALUES (1, 'x', NULL)")  # a fourth identical row
        execute("DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE a = 1 LIMIT 1)")
        execute(
            "UPDATE log SET b = 'changed' WHERE ctid = (SELECT ctid FROM log WHERE a = 1 LIMIT 1)"
        )
        execute("UPDATE log SET a = 30 WHERE a = 3")  # the TOASTed value unchanged
        execute("DELETE FROM log WHERE a = 2")
        execute("UPDATE log SET a = 9 WHERE a IS NULL")  # both identical rows move together
        cdc(pg_settings, delta_settings)

        expected = source_multiset(execute, "log", "a, b, big")
        assert expected[(1, "x", None)] == 2 and expected[(9, "z", None)] == 2
        assert lake_multiset(delta_settings, "log", columns) == expected

        execute("TRUNCATE log; INSERT INTO log VALUES (5, 'after', NULL), (5, 'after', NULL)")
        cdc(pg_settings, delta_settings)
        assert lake_multiset(delta_settings, "log", columns) == Counter({(5, "after", None): 2})

        container = Container(postgres_settings=pg_settings, lake_settings=delta_settings)
        assert container.verify_service().run().equal


class TestWithoutReplicaIdentity:
    def test_left_out_by_default_with_the_fix_and_source_updates_keep_working(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE notes (v text);"
                "INSERT INTO t VALUES (1); INSERT INTO notes VALUES ('a')")  # fmt: skip
        with caplog.at_level("WARNING"):
            report = snapshot(pg_settings, delta_settings)
        assert [info.table_id.name for info in report.tables] == ["t"]
        assert 'ALTER TABLE "public"."notes" REPLICA IDENTITY FULL' in caplog.text
        # Not published with updates and deletes: PostgreSQL still accepts them.
        execute("UPDATE notes SET v = 'b'; DELETE FROM notes")
        execute("INSERT INTO t VALUES (2)")
        cdc(pg_settings, delta_settings)
        assert [r["id"] for r in delta_rows(delta_settings, "t")] == [1, 2]

    def test_insert_only_replicates_inserts_and_truncates_and_leaves_source_writes_alone(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
        execute("CREATE TABLE events (kind text, n int);"
                "INSERT INTO events VALUES ('a', 1), ('a', 1), ('b', NULL)")  # fmt: skip
        snapshot(pg, delta_settings)
        execute("INSERT INTO events VALUES ('a', 1), ('c', 3)")  # a third identical row
        execute("UPDATE events SET n = 100 WHERE kind = 'b'")  # accepted, not replicated
        execute("DELETE FROM events WHERE kind = 'c'")
        cdc(pg, delta_settings)

        columns = ["kind", "n"]
        assert lake_multiset(delta_settings, "events", columns) == Counter(
            {("a", 1): 3, ("b", None): 1, ("c", 3): 1}
        )

        execute("TRUNCATE events; INSERT INTO events VALUES ('z', 26)")
        cdc(pg, delta_settings)
        assert lake_multiset(delta_settings, "events", columns) == Counter({("z", 26): 1})


class TestSchemaChangesWithoutKey:
    def test_insert_only_tables_follow_an_added_column(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
        execute("CREATE TABLE events (kind text); INSERT INTO events VALUES ('a')")
        snapshot(pg, delta_settings)
        execute("ALTER TABLE events ADD COLUMN n int; INSERT INTO events VALUES ('b', 2), ('b', 2)")
        cdc(pg, delta_settings)
        execute("INSERT INTO events VALUES ('c', 3)")
        cdc(pg, delta_settings)

        assert lake_multiset(delta_settings, "events", ["kind", "n"]) == Counter(
            {("a", None): 1, ("b", 2): 2, ("c", 3): 1}
        )

    def test_full_identity_tables_stop_on_an_added_column_with_the_fix(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        from replicator.domain.errors import SourceSchemaError

        execute("CREATE TABLE log (a int); ALTER TABLE log REPLICA IDENTITY FULL;"
                "INSERT INTO log VALUES (1)")  # fmt: skip
        snapshot(pg_settings, delta_settings)
        execute("ALTER TABLE log ADD COLUMN c int DEFAULT 7; DELETE FROM log")

        with pytest.raises(SourceSchemaError, match="re-run `replicator --mode snapshot`"):
            cdc(pg_settings, delta_settings)
