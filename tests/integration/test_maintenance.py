"""Lake maintenance (issue 15, point 4): after many small CDC batches, ``maintain`` compacts the
tables' files and removes what no recent version uses; every row, every table's position and
the versions within the retention stay as they were, on every destination we can run."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import CheckpointError
from replicator.domain.model import TableId
from tests.integration import helpers
from tests.integration.test_lake_contract import (
    SHOP,
    assert_stored_equals_source,
    container,
    lake,
    snapshot,
)
from tests.stored_lake import StoredLake

pytestmark = pytest.mark.integration
__all__ = ["lake"]  # the destination-parametrized fixture

ORDERS = TableId("public", "orders")
BATCHES = 30


def small_batches(execute: Any, pg_settings: PostgresSettings, lake: StoredLake, n: int) -> None:
    """``n`` transactions of one change each (inserts, which add files, and updates, which
    rewrite one), applied one batch each."""
    for i in range(n):
        if i % 3:
            execute(f"INSERT INTO orders VALUES ({1000 + i}, 1, {i}.5, 'new {i}')")
        else:
            execute(f"UPDATE orders SET status = 'round {i}' WHERE id = {1 + i % 50}")
    report = helpers.cdc(pg_settings, lake.settings, max_changes=1)
    assert report.batches == n


def delta_files(lake: StoredLake, table: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(lake._delta_path(table)).file_uris())


def test_maintenance_compacts_and_keeps_rows_positions_and_recent_versions(
    execute: Any, pg_settings: PostgresSettings, lake: StoredLake
) -> None:
    execute(SHOP)
    snapshot(pg_settings, lake.settings)
    small_batches(execute, pg_settings, lake, BATCHES)
    wired = container(pg_settings, lake)
    positions = wired.lake_writer().positions([ORDERS])
    if lake.destination == "delta":
        before_files = delta_files(lake, "orders")
        assert before_files > BATCHES // 2
        version = lake.delta_version("orders")

    done = {t.lake_name: t for t in wired.maintenance_service().run()}

    assert set(done) == {"customers", "orders"}
    assert_stored_equals_source(execute, lake, "orders")
    assert_stored_equals_source(execute, lake, "customers")
    assert container(pg_settings, lake).lake_writer().positions([ORDERS]) == positions
    if lake.destination == "delta":
        from deltalake import DeltaTable

        assert done["orders"].files_before == before_files
        assert done["orders"].files_after == delta_files(lake, "orders") <= 2
        assert done["orders"].removed == 0  # every version is younger than 168 h
        # A reader on the version before maintenance still reads it whole.
        old = DeltaTable(lake._delta_path("orders"), version=version).to_pyarrow_table()
        assert old.num_rows == 50 + BATCHES * 2 // 3
    # CDC goes on exactly from where it was, and maintenance again changes nothing.
    execute("UPDATE orders SET status = 'after' WHERE id <= 5; DELETE FROM orders WHERE id = 9")
    helpers.cdc(pg_settings, lake.settings)
    container(pg_settings, lake).maintenance_service().run()
    assert_stored_equals_source(execute, lake, "orders")
    assert container(pg_settings, lake).verify_service().run().equal


def test_a_zero_retention_removes_every_file_the_current_version_does_not_use(
    execute: Any, pg_settings: PostgresSettings, lake: StoredLake
) -> None:
    if lake.destination != "delta":
        pytest.skip("files are counted on Delta only")
    execute(SHOP)
    snapshot(pg_settings, lake.settings)
    small_batches(execute, pg_settings, lake, 10)
    wired = container(pg_settings, lake)
    wired.maintain_retention_hours.override(0)
    done = {t.lake_name: t for t in wired.maintenance_service().run()}
    assert done["orders"].removed is not None and done["orders"].removed >= 10
    assert_stored_equals_source(execute, lake, "orders")


def test_follow_style_runs_maintain_every_n_batches(
    execute: Any,
    pg_settings: PostgresSettings,
    lake: StoredLake,
    caplog: pytest.LogCaptureFixture,
) -> None:
    execute(SHOP)
    snapshot(pg_settings, lake.settings)
    for i in range(BATCHES):
        execute(f"INSERT INTO orders VALUES ({1000 + i}, 1, {i}.5, 'new {i}')")
    wired = helpers.container(pg_settings, lake.settings, max_changes=1)
    wired.maintain_every_batches.override(10)
    with caplog.at_level("INFO", logger="replicator"):
        report = wired.cdc_service().run()
    assert report.batches == BATCHES
    assert caplog.text.count("maintained 2 tables after") == BATCHES // 10
    assert_stored_equals_source(execute, lake, "orders")
    if lake.destination == "delta":
        assert delta_files(lake, "orders") <= 3  # compacted at batch 30, the last


def test_maintain_without_a_lake_says_what_to_run(
    execute: Any, pg_settings: PostgresSettings, lake: StoredLake
) -> None:
    execute(SHOP)
    with pytest.raises(CheckpointError, match="run `replicator --mode snapshot` first"):
        container(pg_settings, lake).maintenance_service().run()
