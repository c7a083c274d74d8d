"""Tables created after the snapshot join the lake on their own, while CDC goes on for the
others: the new table is snapshotted at its own point, its changes apply from there."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import SHOP, assert_lake_equals_source, cdc, snapshot
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration


def test_a_table_created_later_is_snapshotted_on_its_own_and_then_followed(
    execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
) -> None:
    execute(SHOP)
    snapshot(pg_settings, delta_settings)
    before = {r["id"]: r["_pg_lsn"] for r in delta_rows(delta_settings, "customers", meta=True)}
    execute("UPDATE customers SET name = 'changed before' WHERE id = 1")
    execute(
        "CREATE TABLE shipments (id int PRIMARY KEY, order_id bigint, carrier text);"
        "INSERT INTO shipments SELECT g, g, 'ups' FROM generate_series(1, 30) g;"
    )
    execute("UPDATE shipments SET carrier = 'dhl' WHERE id <= 5")
    execute("DELETE FROM shipments WHERE id = 30")

    # Writers keep changing the new table while it is snapshotted on its own.
    stop = threading.Event()

    def writer() -> None:
        n = 100
        while not stop.is_set():
            execute(f"INSERT INTO shipments VALUES ({n}, {n}, 'fedex'); "
                    f"UPDATE shipments SET carrier = 'moved {n}' WHERE id = {n - 90}")  # fmt: skip
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = cdc(pg_settings, delta_settings)
    finally:
        stop.set()
        thread.join()
    cdc(pg_settings, delta_settings)  # what the writer committed after the first run

    assert_lake_equals_source(execute, delta_settings, "shipments")
    assert_lake_equals_source(execute, delta_settings, "customers")
    assert_lake_equals_source(execute, delta_settings, "orders")
    # The other tables were not snapshotted again: untouched rows keep the first snapshot's
    # position, while the new table's rows carry their own, later one.
    after = {r["id"]: r["_pg_lsn"] for r in delta_rows(delta_settings, "customers", meta=True)}
    assert {k: v for k, v in after.items() if k != 1} == {k: v for k, v in before.items() if k != 1}
    shipped = {r["_pg_lsn"] for r in delta_rows(delta_settings, "shipments", meta=True)}
    assert min(shipped) > max(before.values())
    assert report.changes >= 1


def test_a_dropped_table_is_reported_and_left_in_the_lake(
    execute: Any,
    pg_settings: PostgresSettings,
    delta_settings: LakeSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    execute(SHOP)
    snapshot(pg_settings, delta_settings)
    stored = delta_rows(delta_settings, "orders")
    execute("DROP TABLE orders")
    execute("UPDATE customers SET name = 'still replicated' WHERE id = 2")

    with caplog.at_level("WARNING"):
        cdc(pg_settings, delta_settings)

    assert "public.orders is no longer replicated" in caplog.text
    assert delta_rows(delta_settings, "orders") == stored
    assert_lake_equals_source(execute, delta_settings, "customers")


def test_follow_picks_up_a_table_created_while_it_runs(
    execute: Any,
    pg_dsn: str,
    pg_settings: PostgresSettings,
    delta_settings: LakeSettings,
    tmp_path: Any,
) -> None:
    from tests.integration.processes import replicator_env, start_follow, terminate, wait_for

    execute(SHOP)
    snapshot(pg_settings, delta_settings)
    env = replicator_env(
        pg_dsn,
        delta_settings.bucket_url,
        tmp_path / "follow-dlt",
        batch_max_seconds="0.5",
        discover_seconds="1",
    )
    process = start_follow(tmp_path, env)
    try:
        execute("CREATE TABLE late (id int PRIMARY KEY, v text); INSERT INTO late VALUES (1, 'a')")
        execute("INSERT INTO late VALUES (2, 'b')")
        log = Path(delta_settings.bucket_url) / "bronze" / "late" / "_delta_log"
        wait_for(
            lambda: log.exists() and len(delta_rows(delta_settings, "late")) == 2,
            "the new table never reached the lake",
        )
        execute("UPDATE late SET v = 'followed' WHERE id = 1")
        wait_for(
            lambda: delta_rows(delta_settings, "late")[0]["v"] == "followed",
            "changes to the new table are not followed",
        )
    finally:
        stderr = terminate(process)
    assert process.returncode == 0, stderr
    assert_lake_equals_source(execute, delta_settings, "late")
