"""CDC against a real PostgreSQL into real local Delta tables: every test compares the whole
lake table with the source, value by value."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg2
import psycopg2.extras
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import read_slot
from replicator.domain.errors import CheckpointError, ConfigurationError
from replicator.domain.lsn import Lsn
from replicator.domain.model import CdcReport
from tests.integration.helpers import (
    SHOP,
    assert_lake_equals_source,
    cdc,
    container,
    snapshot,
)
from tests.integration.processes import replicator_env, start_follow, terminate
from tests.integration.test_snapshot_delta import (
    ALL_TYPES_DDL,
    EXPECTED_ALL_TYPES,
    normalise_lake_row,
)
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration


class TestChangesLandExactly:
    def test_mixed_changes_across_tables_and_transactions(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute("INSERT INTO customers VALUES (21, 'new one', 7.25, NULL)")
        execute(
            "BEGIN; UPDATE orders SET status = 'paid', total = total + 1 WHERE id % 3 = 0;"
            "DELETE FROM orders WHERE id % 7 = 0; UPDATE customers SET seen = NULL WHERE id = 3;"
            "COMMIT"
        )
        execute(
            "DELETE FROM customers WHERE id = 5; INSERT INTO orders VALUES (100, 21, 0.01, 'x')"
        )

        report = cdc(pg_settings, delta_settings)

        assert report.transactions == 3  # one execute() is one transaction
        assert_lake_equals_source(execute, delta_settings, "customers")
        assert_lake_equals_source(execute, delta_settings, "orders")

    def test_many_changes_to_one_key_delete_reinsert_and_key_moves(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        for i in range(30):
            execute(f"UPDATE customers SET score = {i} WHERE id = 1")
        execute(
            "DELETE FROM customers WHERE id = 2; INSERT INTO customers VALUES (2, 'back', 1, NULL)"
        )
        execute("UPDATE customers SET id = 99 WHERE id = 3")  # primary-key update moves the row
        execute("UPDATE customers SET id = 3 WHERE id = 4")  # ...and a key reused right away
        execute(
            "INSERT INTO customers VALUES (50, 'short-lived', 0, NULL); DELETE FROM customers WHERE id = 50"
        )

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "customers")
        ids = [r["id"] for r in delta_rows(delta_settings, "customers")]
        assert len(ids) == len(set(ids)), "no duplicate keys"

    def test_truncate_is_replicated_in_order(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute("INSERT INTO orders VALUES (200, 1, 1, 'before')")
        execute("TRUNCATE orders")
        execute("INSERT INTO orders VALUES (201, 1, 2, 'after')")

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "orders")
        assert_lake_equals_source(execute, delta_settings, "customers")

    def test_every_type_reads_the_same_by_cdc_as_by_snapshot(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ALL_TYPES_DDL)
        execute("CREATE TABLE staging AS SELECT * FROM all_types; DELETE FROM all_types")
        snapshot(pg_settings, delta_settings)
        execute("INSERT INTO all_types SELECT * FROM staging; DROP TABLE staging")

        cdc(pg_settings, delta_settings)

        rows = [normalise_lake_row(r) for r in delta_rows(delta_settings, "all_types", meta=True)]
        assert all(r["_pg_commit_ts"] is not None and r["_pg_lsn"] > 0 for r in rows)
        for actual, expected in zip(rows, EXPECTED_ALL_TYPES, strict=True):
            for column, value in expected.items():
                assert actual[column] == value, f"row {expected['id']} column {column}"

    def test_unchanged_toast_values_keep_their_stored_value(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        big = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)"
        execute(
            f"CREATE TABLE docs (id int PRIMARY KEY, title text, body text); INSERT INTO docs VALUES (1, 'a', {big})"
        )
        snapshot(pg_settings, delta_settings)
        execute("UPDATE docs SET title = 'b' WHERE id = 1")  # body unchanged: sent as 'u'
        execute(
            f"INSERT INTO docs VALUES (2, 'x', {big}); UPDATE docs SET title = 'y' WHERE id = 2"
        )
        execute("UPDATE docs SET id = 3, title = 'moved' WHERE id = 1")

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "docs")

    def test_soft_delete_keeps_rows_with_their_values(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute("DELETE FROM customers WHERE id IN (4, 6)")

        cdc(pg_settings, delta_settings, soft_delete=True)

        rows = {r["id"]: r for r in delta_rows(delta_settings, "customers", meta=True)}
        assert len(rows) == 20
        assert rows[4]["name"] == "c4" and rows[4]["_pg_deleted_ts"] is not None
        assert rows[5]["_pg_deleted_ts"] is None
        assert sum(r["_pg_deleted_ts"] is None for r in rows.values()) == 18
        assert rows[6]["score"] == Decimal("9.00")  # the deleted row keeps every value

    def test_an_empty_run_changes_nothing(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        from deltalake import DeltaTable

        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        versions = {
            t: DeltaTable(f"{delta_settings.bucket_url}/bronze/{t}").version()
            for t in ("customers", "orders")
        }

        report = cdc(pg_settings, delta_settings)

        assert (report.transactions, report.batches) == (0, 0)
        assert {
            t: DeltaTable(f"{delta_settings.bucket_url}/bronze/{t}").version() for t in versions
        } == versions
        assert_lake_equals_source(execute, delta_settings, "customers")


class _Crash(Exception):
    pass


class _CrashingStream:
    """A change stream that dies when asked to acknowledge: killed between the lake commit and
    the feedback to the server."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def acknowledge(self, position: Any) -> None:
        raise _Crash("killed between the lake commit and the feedback")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _CrashAtAcknowledge:
    """The change source, its streams dying at their first acknowledgement, installed by a
    container override."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @contextmanager
    def open(self, tables: Any, start: Any, slot: str) -> Iterator[_CrashingStream]:
        with self.inner.open(tables, start, slot) as stream:
            yield _CrashingStream(stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TestHandOffAndRecovery:
    def test_changes_committed_during_the_snapshot_are_applied_once(
        self, execute: Any, pg_dsn: str, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(
            SHOP + "INSERT INTO orders SELECT g, 1, g, 'bulk' FROM generate_series(1000, 30000) g;"
        )
        stop = threading.Event()
        written = 0

        def writer() -> None:
            nonlocal written
            conn = psycopg2.connect(pg_dsn)
            try:
                while not stop.is_set():
                    with conn, conn.cursor() as cur:
                        n = 100_000 + written
                        cur.execute("INSERT INTO orders VALUES (%s, 2, 1, 'during')", (n,))
                        cur.execute(
                            "UPDATE orders SET total = total + 1 WHERE id = %s",
                            (1000 + written % 500,),
                        )
                        cur.execute("DELETE FROM orders WHERE id = %s", (5000 + written,))
                        written += 1
            finally:
                conn.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while written < 20:
                time.sleep(0.01)
            snapshot(pg_settings, delta_settings)
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        assert written > 20

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "orders")

    def test_the_slot_is_never_left_ahead_of_the_lake_by_other_wal(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        """WAL nobody replicates after our last change: psycopg2 confirms keepalive positions
        by itself; the run records them in the lake first, so the next run starts cleanly."""
        execute(SHOP + "CREATE TABLE scratch (v text)")
        snapshot(pg_settings, delta_settings)
        execute("UPDATE orders SET status = 'changed' WHERE id = 1")
        stop = threading.Event()

        def other_wal() -> None:  # a busy neighbour while CDC follows, then a stop
            for _ in range(6):
                execute("INSERT INTO scratch SELECT repeat('x', 100) FROM generate_series(1, 50)")
                time.sleep(0.5)
            stop.set()

        writer = threading.Thread(target=other_wal)
        writer.start()
        container(pg_settings, delta_settings).cdc_service().run(follow=True, stop=stop)
        writer.join()

        slot = read_slot(pg_settings)
        checkpoint = container(pg_settings, delta_settings).checkpoint_store().load()
        assert slot is not None and checkpoint is not None and slot.confirmed_flush is not None
        assert slot.confirmed_flush <= checkpoint.position
        cdc(pg_settings, delta_settings)  # raised "slot ... is at ... but the lake" before
        assert_lake_equals_source(execute, delta_settings, "orders")

    def test_wiped_local_state_continues_from_the_lake(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute("UPDATE orders SET status = 'one' WHERE id = 1")
        cdc(pg_settings, delta_settings)
        assert delta_settings.pipelines_dir is not None
        shutil.rmtree(delta_settings.pipelines_dir)  # an ephemeral job cluster's empty disk
        execute("UPDATE orders SET status = 'two' WHERE id = 2; DELETE FROM orders WHERE id = 3")

        report = cdc(pg_settings, delta_settings)

        assert report.transactions == 1
        assert_lake_equals_source(execute, delta_settings, "orders")

    def test_crash_after_load_before_feedback_then_rerun_is_exact(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute(
            "INSERT INTO orders VALUES (300, 1, 3, 'c'); UPDATE orders SET total = 0 WHERE id = 4"
        )
        execute("DELETE FROM orders WHERE id = 5")

        failing = container(pg_settings, delta_settings)
        failing.change_source.override(_CrashAtAcknowledge(failing.change_source()))
        with pytest.raises(_Crash):
            failing.cdc_service().run()
        assert_lake_equals_source(execute, delta_settings, "orders")  # the load had committed
        execute("UPDATE orders SET status = 'later' WHERE id = 300")

        report = cdc(pg_settings, delta_settings)

        assert report.transactions == 1  # only the new one: the lake's checkpoint was ahead
        assert_lake_equals_source(execute, delta_settings, "orders")

    def test_slot_ahead_of_the_lake_is_refused(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        execute("INSERT INTO orders VALUES (400, 1, 1, 'x')")
        execute("SELECT pg_replication_slot_advance('dlt_cdc_slot', pg_current_wal_lsn())")

        with pytest.raises(CheckpointError, match="re-run `replicator --mode snapshot`"):
            cdc(pg_settings, delta_settings)


class TestSlotAndPublication:
    def test_a_slot_with_another_plugin_is_left_alone_and_named_when_cdc_meets_it(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        execute(SHOP)
        execute("SELECT pg_create_logical_replication_slot('dlt_cdc_slot', 'test_decoding')")
        try:
            snapshot(pg_settings, delta_settings)  # takes a slot of its own beside it

            slots = execute(
                "SELECT slot_name, plugin FROM pg_replication_slots "
                "WHERE database = current_database() ORDER BY 1"
            )
            assert [tuple(r) for r in slots] == [
                ("dlt_cdc_slot", "test_decoding"),
                ("dlt_cdc_slot_2", "pgoutput"),
            ]
            assert "replication slot dlt_cdc_slot exists and this lake does not use it" in (
                caplog.text
            )
            execute("INSERT INTO orders VALUES (500, 1, 1, 'x')")
            cdc(pg_settings, delta_settings)
            assert_lake_equals_source(execute, delta_settings, "orders")

            # The lake's own slot replaced by hand with one of another plugin: CDC names it.
            execute("SELECT pg_drop_replication_slot('dlt_cdc_slot_2')")
            execute("SELECT pg_create_logical_replication_slot('dlt_cdc_slot_2', 'test_decoding')")
            with pytest.raises(ConfigurationError, match="plugin 'test_decoding', not pgoutput"):
                cdc(pg_settings, delta_settings)
        finally:
            execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = current_database()"
            )

    def test_a_publication_missing_a_table_gets_it_added(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP + "CREATE PUBLICATION dlt_cdc_pub FOR TABLE customers;")

        snapshot(pg_settings, delta_settings)

        published = execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'dlt_cdc_pub' ORDER BY 1"
        )
        assert [r[0] for r in published] == ["customers", "orders"]

    def test_odd_names_are_quoted_everywhere(
        self, execute: Any, pg_dsn: str, delta_settings: LakeSettings
    ) -> None:
        execute(
            'CREATE TABLE "we""ird; name" (id int PRIMARY KEY, "Välue" text); INSERT INTO "we""ird; name" VALUES (1, \'a\')'
        )
        settings = PostgresSettings(dsn=pg_dsn, slot_name="slot_odd_1", pub_name='pub "x"; --')
        snapshot(settings, delta_settings)
        execute('INSERT INTO "we""ird; name" VALUES (2, \'b\')')

        cdc(settings, delta_settings)

        assert [(r["id"], r["value"]) for r in delta_rows(delta_settings, "we_ird_name")] == [
            (1, "a"),
            (2, "b"),
        ]
        execute("SELECT pg_drop_replication_slot('slot_odd_1')")


class TestFollowMode:
    def test_follow_applies_changes_then_exits_0_on_sigterm(
        self,
        execute: Any,
        pg_dsn: str,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        tmp_path: Path,
    ) -> None:
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        env = replicator_env(
            pg_dsn, delta_settings.bucket_url, tmp_path / "follow-dlt", batch_max_seconds="0.5"
        )
        process = start_follow(tmp_path, env)
        try:
            execute("UPDATE orders SET status = 'followed' WHERE id = 1")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = {r["id"]: r for r in delta_rows(delta_settings, "orders")}
                if rows[1]["status"] == "followed":
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the change never reached the lake")
            execute("DELETE FROM orders WHERE id = 2")
        finally:
            stderr = terminate(process)
        assert process.returncode == 0, stderr
        cdc(pg_settings, delta_settings)  # whatever the last batch did not take, a drain takes
        assert_lake_equals_source(execute, delta_settings, "orders")


class TestSignals:
    def test_sigterm_during_a_load_finishes_the_batch_then_stops(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        from dlt.destinations.impl.filesystem.filesystem import DeltaLoadFilesystemJob

        from replicator.entrypoints.signals import stop_on_signals

        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        ((before,),) = execute("SELECT pg_current_wal_lsn()::text")
        execute(
            "UPDATE orders SET status = 'signalled' WHERE id < 10; DELETE FROM orders WHERE id = 20"
        )
        write_delta = DeltaLoadFilesystemJob.run

        def signalled_write(job: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of dlt's load step
            write_delta(job)

        monkeypatch.setattr(DeltaLoadFilesystemJob, "run", signalled_write)
        stop = threading.Event()
        with stop_on_signals(stop, True):
            report = (
                container(pg_settings, delta_settings).cdc_service().run(follow=True, stop=stop)
            )

        assert stop.is_set()
        assert report.transactions == 1
        assert_lake_equals_source(execute, delta_settings, "orders")
        slot = execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
            "WHERE database = current_database()"
        )
        # The batch was acknowledged, and never past the lake (one byte before its checkpoint:
        # see ChangeStream.acknowledge).
        assert Lsn.parse(str(before)) < Lsn.parse(slot[0][0]) < report.position


class TestWalSafety:
    def test_follow_confirms_the_server_position_when_our_tables_are_quiet(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(SHOP + "CREATE TABLE busy_elsewhere (id serial PRIMARY KEY, pad text);")
        snapshot(PostgresSettings(dsn=pg_settings.dsn, exclude=("busy_elsewhere",)), delta_settings)
        (start,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
        stop = threading.Event()
        moved: list[str] = []

        def busy_unpublished_table() -> None:
            deadline = time.monotonic() + 30  # then stop the follow run, moved or not
            while not stop.is_set() and time.monotonic() < deadline:
                execute(
                    "INSERT INTO busy_elsewhere (pad) SELECT repeat('x', 500) FROM generate_series(1, 200)"
                )
                (now,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
                if now != start:
                    moved.append(now)
                    break
            stop.set()

        writer = threading.Thread(target=busy_unpublished_table)
        writer.start()
        try:
            settings = PostgresSettings(dsn=pg_settings.dsn, exclude=("busy_elsewhere",))
            c = container(settings, delta_settings, idle_advance_bytes=64 * 1024)
            report = c.cdc_service().run(follow=True, stop=stop)
        finally:
            stop.set()
            writer.join()

        assert moved, "the slot never moved while only unpublished tables changed"
        assert report.transactions == 0
        # The lake's checkpoint moved first, then the slot: never the other way round.
        checkpoint = c.checkpoint_store().load()
        assert checkpoint is not None
        (slot_now,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
        from replicator.domain.lsn import Lsn

        assert Lsn.parse(slot_now) <= checkpoint.position
        assert checkpoint.position > Lsn.parse(start)

    def test_heartbeat_lets_the_slot_advance_on_a_completely_idle_database(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        # Without the heartbeat the slot stays put here (no WAL is written at all); observed,
        # not asserted: background WAL (checkpoints) could move it now and then.
        heartbeat = 0.3
        execute(SHOP)
        snapshot(pg_settings, delta_settings)
        (start,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
        settings = attrs.evolve(pg_settings, heartbeat_s=heartbeat)
        stop = threading.Event()
        threading.Timer(6.0, stop.set).start()  # a bounded follow run with no writes at all

        container(settings, delta_settings, idle_advance_bytes=1).cdc_service().run(
            follow=True, stop=stop
        )

        (now,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
        assert now != start, "with a heartbeat the slot must move on an idle database"


class TestTruncate:
    @pytest.mark.parametrize("policy", ["replicate", "ignore"])
    def test_truncate_of_two_tables_with_cascade(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        policy: str,
    ) -> None:
        execute(SHOP + "ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers(id);")
        snapshot(pg_settings, delta_settings)
        before = {t: delta_rows(delta_settings, t) for t in ("customers", "orders")}
        execute("TRUNCATE customers CASCADE")  # takes orders along
        execute("INSERT INTO customers VALUES (500, 'fresh', 1, NULL)")

        report: CdcReport = (
            container(pg_settings, delta_settings).cdc_service(truncate=policy).run()
        )

        assert report.transactions == 2
        if policy == "replicate":
            assert_lake_equals_source(execute, delta_settings, "customers")
            assert_lake_equals_source(execute, delta_settings, "orders")
        else:
            assert delta_rows(delta_settings, "orders") == before["orders"]
            customers = delta_rows(delta_settings, "customers")
            assert customers[:-1] == before["customers"] and customers[-1]["id"] == 500
