"""The lake contract: every lake behaviour, on every destination we can run.

One body of tests, parametrized over local Delta and DuckDB (DuckDB runs the same SQL merge path
as Databricks, which joins when a workspace is configured). Each test drives a real PostgreSQL
and asserts on the tables as stored, read with the destination's own reader (``StoredLake``),
row by row against the source. Rows marked deleted count as rows: a ghost row fails a test.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.entrypoints.containers import Container
from tests.integration.helpers import cdc, comparable, snapshot, source_rows
from tests.stored_lake import StoredLake, databricks_configured, without_meta

pytestmark = pytest.mark.integration

DESTINATIONS = [
    "delta",
    "duckdb",
    pytest.param(
        "databricks",
        marks=pytest.mark.skipif(
            not databricks_configured(),
            reason="no Databricks workspace configured (DATABRICKS_SERVER_HOSTNAME, "
            "DATABRICKS_HTTP_PATH, DATABRICKS_CATALOG, DATABRICKS_TOKEN)",
        ),
    ),
]


@pytest.fixture(params=DESTINATIONS)
def lake(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoredLake]:
    destination = request.param
    dlt_dir = str(tmp_path / "dlt")
    if destination == "delta":
        yield StoredLake(LakeSettings(bucket_url=str(tmp_path / "lake"), pipelines_dir=dlt_dir))
    elif destination == "duckdb":
        database = str(tmp_path / "lake.duckdb")
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", database)
        yield StoredLake(LakeSettings(destination="duckdb", pipelines_dir=dlt_dir), database)
    else:
        import os

        for key, env in (("SERVER_HOSTNAME", "DATABRICKS_SERVER_HOSTNAME"),
                         ("HTTP_PATH", "DATABRICKS_HTTP_PATH"), ("CATALOG", "DATABRICKS_CATALOG"),
                         ("ACCESS_TOKEN", "DATABRICKS_TOKEN")):  # fmt: skip
            monkeypatch.setenv(f"DESTINATION__DATABRICKS__CREDENTIALS__{key}", os.environ[env])
        settings = LakeSettings(
            destination="databricks",
            dataset=f"bronze_{uuid.uuid4().hex[:10]}",
            pipelines_dir=dlt_dir,
        )
        yield StoredLake(settings)
        from replicator.adapters.lake.admin import LakeAdmin

        LakeAdmin(settings).cleanup()


def assert_stored_equals_source(
    execute: Any, lake: StoredLake, table: str, key: str = "id", lake_table: str | None = None
) -> None:
    """Row by row, every column, the stored rows (deleted-marked ones included) = the source."""
    expected = source_rows(execute, table, key)
    names = [k.strip() for k in key.split(",")]
    meta = lake.meta_columns(lake_table or table)  # the table's own, not a source column
    stored = sorted(
        (without_meta(r, meta) for r in lake.rows(lake_table or table)),
        key=lambda r: tuple(r[n] for n in names),
    )
    assert [tuple(r[n] for n in names) for r in stored] == [
        tuple(r[n] for n in names) for r in expected
    ], f"{table}: the stored keys differ from the source's"
    for stored_row, source_row in zip(stored, expected, strict=True):
        assert set(stored_row) == set(source_row), f"{table}: columns differ"
        as_source = {k: comparable(stored_row[k], v) for k, v in source_row.items()}
        assert as_source == source_row, f"{table} differs at {source_row}"


def stored_multiset(lake: StoredLake, table: str, columns: list[str]) -> Counter[tuple[Any, ...]]:
    """A keyless table's rows as stored: counted rows stand for as many rows as their count
    column (``_pg_row_count`` by default) says."""
    found: Counter[tuple[Any, ...]] = Counter()
    count = lake.lake_columns(table).row_count
    for row in lake.rows(table):
        found[tuple(row[c] for c in columns)] += int(row.get(count) or 1)
    return +found


def source_multiset(execute: Any, table: str, columns: str) -> Counter[tuple[Any, ...]]:
    return Counter(execute(f"SELECT {columns} FROM {table}"))


def container(pg: PostgresSettings, lake: StoredLake) -> Container:
    return Container(postgres_settings=pg, lake_settings=lake.settings)


SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, score numeric(8,2), tags text[],
                        doc jsonb, seen date);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, total numeric(12,2), status text);
INSERT INTO customers SELECT g, 'c' || g, g * 1.5, ARRAY['t' || g, NULL], '{"n": 1}', DATE '2024-01-01' + g
    FROM generate_series(1, 20) g;
INSERT INTO orders SELECT g, 1 + g % 20, g * 10.25, 'new' FROM generate_series(1, 50) g;
"""
BIG = "(SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 300) g)"


class TestSnapshot:
    def test_every_type_lands_with_its_exact_value(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        from tests.integration.test_snapshot_delta import (
            ALL_TYPES_DDL,
            EXPECTED_ALL_TYPES,
            normalise_lake_row,
        )
        from tests.integration.test_snapshot_duckdb import expected as duckdb_expected
        from tests.integration.test_snapshot_duckdb import normalise as duckdb_normalise

        execute(ALL_TYPES_DDL)
        report = snapshot(pg_settings, lake.settings)

        assert [(i.lake_name, i.rows) for i in report.tables] == [("all_types", 3)]
        assert report.position is not None
        rows = lake.rows("all_types")
        assert {r["_pg_lsn"] for r in rows} == {int(report.position)}
        assert {(r["_pg_commit_ts"], r["_pg_deleted_ts"]) for r in rows} == {(None, None)}
        stored = sorted((without_meta(r) for r in rows), key=lambda r: r["id"])
        if lake.destination == "delta":
            assert [normalise_lake_row(r) for r in stored] == EXPECTED_ALL_TYPES
        else:  # arrays are JSON there (dlt's json type)
            assert [duckdb_normalise(r) for r in stored] == [
                duckdb_expected(r) for r in EXPECTED_ALL_TYPES
            ]

    def test_a_second_snapshot_replaces_the_first(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1,'a'),(2,'b')")
        snapshot(pg_settings, lake.settings)
        execute("DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (3, 'c')")

        snapshot(pg_settings, lake.settings)
        cdc(pg_settings, lake.settings)  # CDC continues from the new snapshot

        assert_stored_equals_source(execute, lake, "t")


class TestKeyedTables:
    def test_inserts_updates_and_deletes_across_tables_and_transactions(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("INSERT INTO customers VALUES (21, 'new one', 7.25, '{}', 'null', NULL)")
        execute("BEGIN; UPDATE orders SET status = 'paid', total = total + 1 WHERE id % 3 = 0;"
                "DELETE FROM orders WHERE id % 7 = 0; UPDATE customers SET seen = NULL, "
                "tags = ARRAY[NULL, 'x'] WHERE id = 3; COMMIT")  # fmt: skip
        execute(
            "DELETE FROM customers WHERE id = 5; INSERT INTO orders VALUES (100, 21, 0.01, 'x')"
        )

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "customers")
        assert_stored_equals_source(execute, lake, "orders")

    def test_an_insert_and_a_delete_of_one_key_in_a_batch_leave_no_row(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE g (id int PRIMARY KEY, v text);"
                "INSERT INTO g SELECT i, 'v' || i FROM generate_series(1, 10) i")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        execute("BEGIN; INSERT INTO g VALUES (100, 'x'); DELETE FROM g WHERE id = 100; COMMIT")
        execute("INSERT INTO g VALUES (101, 'y')")
        execute("DELETE FROM g WHERE id = 101")  # another transaction of the same batch
        execute("DELETE FROM g WHERE id = 1; INSERT INTO g VALUES (1, 'back')")

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "g")
        assert all(r["_pg_deleted_ts"] is None for r in lake.rows("g"))

    def test_a_delete_of_a_key_the_lake_lacks_changes_nothing(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake, tmp_path: Path
    ) -> None:
        execute("CREATE TABLE g (id int PRIMARY KEY, v text);"
                "INSERT INTO g SELECT i, 'v' || i FROM generate_series(1, 5) i")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        _remove_stored_row(lake, "g", 3)
        execute("DELETE FROM g WHERE id = 3")

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "g")

    def test_key_moves_and_reinserts(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("UPDATE customers SET id = id + 100 WHERE id <= 3")
        execute("BEGIN; UPDATE customers SET id = 1 WHERE id = 101; "
                "UPDATE customers SET id = 30, name = 'moved twice' WHERE id = 102; COMMIT")  # fmt: skip
        execute(
            "DELETE FROM customers WHERE id = 4; INSERT INTO customers (id, name) VALUES (4, 'again')"
        )

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "customers")

    def test_unchanged_toast_values_keep_their_stored_value(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(f"CREATE TABLE docs (id int PRIMARY KEY, body text, n int);"
                f"ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;"
                f"INSERT INTO docs SELECT g, {BIG}, g FROM generate_series(1, 4) g")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        execute("UPDATE docs SET n = n * 10 WHERE id IN (1, 3)")  # body: not sent
        execute("UPDATE docs SET id = 40 WHERE id = 4")  # a key move, body not sent

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "docs")

    def test_soft_delete_keeps_the_deleted_row_marked(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE s (id int PRIMARY KEY, v text); INSERT INTO s VALUES (1,'a'),(2,'b')")
        snapshot(pg_settings, lake.settings)
        execute("DELETE FROM s WHERE id = 1; UPDATE s SET v = 'B' WHERE id = 2")

        cdc(pg_settings, lake.settings, soft_delete=True)

        stored = {r["id"]: r for r in lake.rows("s")}
        assert stored[1]["v"] == "a" and stored[1]["_pg_deleted_ts"] is not None
        assert stored[2]["v"] == "B" and stored[2]["_pg_deleted_ts"] is None
        assert container(pg_settings, lake).verify_service().run().equal


class TestTruncate:
    def test_truncate_then_inserts_in_one_batch(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("INSERT INTO orders VALUES (500, 1, 1, 'before')")
        execute("TRUNCATE orders; INSERT INTO orders VALUES (1, 2, 3.5, 'after')")
        execute("UPDATE customers SET name = 'still here' WHERE id = 1")
        before = lake.delta_version("orders") if lake.destination == "delta" else None

        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "orders")
        assert_stored_equals_source(execute, lake, "customers")
        if before is not None:  # one commit: readers never see the table empty
            assert lake.delta_version("orders") == before + 1

    def test_readers_never_see_a_truncated_table_empty(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        if lake.destination != "delta":
            pytest.skip("Delta readers poll table versions from outside; DuckDB's and "
                        "Databricks' replace is one transaction or statement (tests/unit/test_sql_merge.py)")  # fmt: skip
        execute("CREATE TABLE big (id int PRIMARY KEY, v text);"
                "INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 100000) g")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        execute("BEGIN; TRUNCATE big; INSERT INTO big SELECT g, 'w' || g FROM "
                "generate_series(1, 100000) g; COMMIT")  # fmt: skip
        seen: list[int] = []
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                seen.append(_stored_count(lake, "big"))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            cdc(pg_settings, lake.settings)
        finally:
            done.set()
            reader.join()

        assert seen and min(seen) == 100000, f"a reader saw {min(seen)} rows"
        assert_stored_equals_source(execute, lake, "big")

    def test_truncate_of_several_tables_and_nothing_after(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("TRUNCATE orders, customers")

        cdc(pg_settings, lake.settings)

        assert lake.rows("orders") == [] and lake.rows("customers") == []


class TestTablesWithoutKey:
    def test_insert_only_tables_append_and_truncate(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
        execute("CREATE TABLE h (n int, at text); INSERT INTO h VALUES (1, 'a'), (1, 'a')")
        snapshot(pg, lake.settings)
        execute("INSERT INTO h VALUES (1, 'a'), (2, 'b')")
        execute("INSERT INTO h SELECT g, 'bulk' FROM generate_series(1, 500) g")  # one multi-insert

        cdc(pg, lake.settings)
        assert stored_multiset(lake, "h", ["n", "at"]) == source_multiset(execute, "h", "n, at")

        execute("TRUNCATE h; INSERT INTO h VALUES (9, 'z')")
        cdc(pg, lake.settings)
        assert stored_multiset(lake, "h", ["n", "at"]) == Counter({(9, "z"): 1})

    @pytest.mark.parametrize(
        "invalidation",
        ["ANALYZE h", "ALTER TABLE h SET (fillfactor = 90)", "COMMENT ON TABLE h IS 'x'"],
    )
    def test_a_relation_sent_again_mid_batch_loses_no_insert_only_row(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake, invalidation: str
    ) -> None:
        # The server sends a table's Relation message again after any cache invalidation of it
        # (an autovacuum ANALYZE is enough); rows before and after it share one batch.
        pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
        execute("CREATE TABLE h (n int, at text); INSERT INTO h VALUES (0, 'snap')")
        snapshot(pg, lake.settings)
        execute("INSERT INTO h SELECT g, 'before' FROM generate_series(1, 30) g")
        execute(invalidation)
        execute("INSERT INTO h SELECT g, 'after' FROM generate_series(1, 30) g")

        cdc(pg, lake.settings)
        assert stored_multiset(lake, "h", ["n", "at"]) == source_multiset(execute, "h", "n, at")

    def test_full_identity_tables_count_identical_rows_run_after_run(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE kf (n int, body text); ALTER TABLE kf REPLICA IDENTITY FULL;"
                "INSERT INTO kf SELECT g % 10, 'b' || (g % 3) FROM generate_series(1, 20) g")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        for _ in range(3):  # the stored counts are read back every run
            execute("UPDATE kf SET n = n + 100 WHERE n % 2 = 0")
            execute("DELETE FROM kf WHERE ctid = (SELECT ctid FROM kf LIMIT 1)")
            cdc(pg_settings, lake.settings)
            expected = source_multiset(execute, "kf", "n, body")
            assert stored_multiset(lake, "kf", ["n", "body"]) == expected
        # Changes that cancel out in one batch: the table's share of it has no rows at all.
        execute("INSERT INTO kf VALUES (77, 'gone')")
        execute("DELETE FROM kf WHERE n = 77")
        cdc(pg_settings, lake.settings)
        assert stored_multiset(lake, "kf", ["n", "body"]) == source_multiset(
            execute, "kf", "n, body"
        )
        assert all(r["_pg_deleted_ts"] is None for r in lake.rows("kf"))
        assert container(pg_settings, lake).verify_service().run().equal


class TestSchemaAndTables:
    def test_added_dropped_and_renamed_columns(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE e (id int PRIMARY KEY, a text, b int);"
                "INSERT INTO e SELECT g, 'a' || g, g FROM generate_series(1, 5) g")  # fmt: skip
        snapshot(pg_settings, lake.settings)
        execute("ALTER TABLE e ADD COLUMN c int DEFAULT 7; INSERT INTO e VALUES (6, 'f', 6, 8)")
        execute("ALTER TABLE e RENAME COLUMN a TO a2; UPDATE e SET a2 = 'x' WHERE id = 1")

        cdc(pg_settings, lake.settings)

        stored = {r["id"]: r for r in lake.rows("e")}
        for id_, a2, b, c in execute("SELECT id, a2, b, c FROM e ORDER BY id"):
            assert (stored[id_]["a2"], stored[id_]["b"], stored[id_]["c"]) == (a2, b, c)

    def test_a_table_created_after_the_snapshot_joins(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1)")
        snapshot(pg_settings, lake.settings)
        execute(
            "CREATE TABLE later (id int PRIMARY KEY, v text); INSERT INTO later VALUES (1, 'x')"
        )

        cdc(pg_settings, lake.settings)
        execute(
            "UPDATE later SET v = 'y'; INSERT INTO later VALUES (2, 'z'); INSERT INTO a VALUES (2)"
        )
        cdc(pg_settings, lake.settings)

        assert_stored_equals_source(execute, lake, "later")
        assert_stored_equals_source(execute, lake, "a")


class TestCheckpointAndReplay:
    def test_the_checkpoint_is_restored_from_the_lake_with_an_empty_working_dir(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("UPDATE orders SET status = 'a' WHERE id < 10")
        cdc(pg_settings, lake.settings)
        assert lake.settings.pipelines_dir is not None
        shutil.rmtree(lake.settings.pipelines_dir)  # an ephemeral job cluster
        execute("UPDATE orders SET status = 'b' WHERE id < 5; DELETE FROM orders WHERE id = 9")

        report = cdc(pg_settings, lake.settings)

        assert report.transactions == 1
        assert_stored_equals_source(execute, lake, "orders")

    def test_a_replay_of_batches_the_tables_already_hold_changes_nothing(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        """What a crash between the tables' commits and the checkpoint's leaves behind: tables
        holding a batch the checkpoint (and the slot) do not. Every table kind, replayed."""
        pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
        execute("CREATE TABLE k (id int PRIMARY KEY, v int); INSERT INTO k VALUES (1, 0), (2, 0);"
                "CREATE TABLE h (n int, at text);"
                "CREATE TABLE kf (n int); ALTER TABLE kf REPLICA IDENTITY FULL;"
                "INSERT INTO kf VALUES (1), (1)")  # fmt: skip
        snapshot(pg, lake.settings)
        with CrashBeforeTheCheckpoint(execute, lake, pg):
            execute("INSERT INTO h VALUES (1, 'x'), (2, 'y'); UPDATE k SET v = v + 1;"
                    "DELETE FROM k WHERE id = 2; INSERT INTO kf VALUES (1); "
                    "UPDATE kf SET n = 2 WHERE ctid = (SELECT ctid FROM kf LIMIT 1)")  # fmt: skip
            cdc(pg, lake.settings)
        execute("INSERT INTO h VALUES (3, 'z'); INSERT INTO kf VALUES (3)")

        cdc(pg, lake.settings)  # re-reads the batch from the checkpoint, then the new one

        assert_stored_equals_source(execute, lake, "k")
        assert stored_multiset(lake, "h", ["n", "at"]) == source_multiset(execute, "h", "n, at")
        assert stored_multiset(lake, "kf", ["n"]) == source_multiset(execute, "kf", "n")


class TestReports:
    def test_status_counts_the_stored_rows_and_verify_proves_equality(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, lake.settings)
        execute("DELETE FROM orders WHERE id > 40; UPDATE customers SET name = 'n' WHERE id = 2")
        cdc(pg_settings, lake.settings)

        status = container(pg_settings, lake).status_service().run().as_dict()
        rows = {t["lake_table"]: t["rows"] for t in status["tables"]}
        assert rows == {"customers": 20, "orders": 40}
        assert container(pg_settings, lake).verify_service().run().equal

        _remove_stored_row(lake, "orders", 7)  # tampered behind the replicator's back
        report = container(pg_settings, lake).verify_service().run()
        assert not report.equal
        (orders,) = [v for v in report.tables if v.table_id.name == "orders"]
        assert orders.differing_keys == (("7",),)


def _stored_count(lake: StoredLake, table: str) -> int:
    from deltalake import DeltaTable

    path = Path(lake.settings.bucket_url) / lake.settings.dataset / table
    return int(DeltaTable(str(path)).to_pyarrow_dataset().count_rows())


def _remove_stored_row(lake: StoredLake, table: str, id_: int) -> None:
    if lake.destination == "delta":
        from deltalake import DeltaTable

        DeltaTable(str(Path(lake.settings.bucket_url) / lake.settings.dataset / table)).delete(
            f"id = {id_}"
        )
    else:
        lake.execute(f'DELETE FROM "{lake.settings.dataset}"."{table}" WHERE id = {id_}')


class CrashBeforeTheCheckpoint:
    """Inside: a CDC run commits its tables. On exit the lake's checkpoint and the slot are put
    back where they were before it, as if it had been killed after the tables' commits and
    before the checkpoint's (and so before the slot was confirmed)."""

    def __init__(self, execute: Any, lake: StoredLake, pg: PostgresSettings) -> None:
        self.execute, self.lake, self.slot = execute, lake, pg.slot_name

    def __enter__(self) -> None:
        self.execute(f"SELECT pg_copy_logical_replication_slot('{self.slot}', 'crash_copy')")
        self.state = self._state_marker()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        self._restore_state()
        self.execute(f"SELECT pg_drop_replication_slot('{self.slot}')")
        self.execute(f"SELECT pg_copy_logical_replication_slot('crash_copy', '{self.slot}')")
        self.execute("SELECT pg_drop_replication_slot('crash_copy')")

    def _state_folder(self) -> Path:
        # The filesystem destination keeps dlt's own tables as files, one or more per load.
        return (
            Path(self.lake.settings.bucket_url) / self.lake.settings.dataset / "_dlt_pipeline_state"
        )

    def _state_marker(self) -> Any:
        if self.lake.destination == "delta":
            return set(self._state_folder().iterdir())
        return max(r["_dlt_load_id"] for r in self.lake.rows("_dlt_pipeline_state"))

    def _restore_state(self) -> None:
        if self.lake.destination == "delta":
            newer = set(self._state_folder().iterdir()) - self.state
            assert newer, "the run wrote no checkpoint"
            for path in newer:
                path.unlink()
        else:
            dataset = self.lake.settings.dataset
            self.lake.execute(
                f'DELETE FROM "{dataset}"."_dlt_pipeline_state" WHERE _dlt_load_id > \'{self.state}\''
            )
        assert self.lake.settings.pipelines_dir is not None
        shutil.rmtree(self.lake.settings.pipelines_dir)  # the killed run's local state is gone


class TestHistory:
    def test_the_checkpoint_history_is_pruned_and_the_checkpoint_kept(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake, monkeypatch: Any
    ) -> None:
        from replicator.adapters.lake import writer as writer_module

        monkeypatch.setattr(writer_module, "STATE_HISTORY", 2)
        execute("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
        snapshot(pg_settings, lake.settings)
        seen: list[Any] = []
        for i in range(5):  # six loads in all, each adding a version
            execute(f"UPDATE t SET v = {i + 1}")
            cdc(pg_settings, lake.settings)  # prunes at its start, then adds its own
            seen.extend(_state_versions(lake))

        kept = _state_versions(lake)
        assert len(kept) == 3 and kept == sorted(set(seen))[-3:]  # the newest, and no more
        assert_stored_equals_source(execute, lake, "t")
        execute("UPDATE t SET v = 11")
        cdc(pg_settings, lake.settings)  # the checkpoint still reads back
        assert_stored_equals_source(execute, lake, "t")


def _state_versions(lake: StoredLake) -> list[Any]:
    if lake.destination == "delta":
        folder = Path(lake.settings.bucket_url) / lake.settings.dataset / "_dlt_pipeline_state"
        return sorted(p.name for p in folder.iterdir())
    return sorted(r["version"] for r in lake.rows("_dlt_pipeline_state"))
