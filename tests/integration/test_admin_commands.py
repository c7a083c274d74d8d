"""`cleanup`, `volumes` and `drop-slot` against real destinations and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from replicator.adapters.lake.admin import LakeAdmin
from replicator.adapters.lake.checkpoint_store import DltCheckpointStore
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import snapshot
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration


def test_cleanup_of_a_local_delta_lake_removes_tables_and_state(
    execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
) -> None:
    execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    snapshot(pg_settings, delta_settings)
    bronze = Path(delta_settings.bucket_url) / "bronze"
    assert (bronze / "t").is_dir()

    removed = LakeAdmin(delta_settings).cleanup()

    assert not bronze.exists()
    assert any(item.startswith("folder") for item in removed)
    assert DltCheckpointStore(DltLakeWriter(delta_settings)).load() is None


def test_cleanup_of_duckdb_drops_the_schemas(
    execute: Any, pg_settings: PostgresSettings, duckdb_settings: LakeSettings, tmp_path: Path
) -> None:
    execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    snapshot(pg_settings, duckdb_settings)

    removed = LakeAdmin(duckdb_settings).cleanup()

    assert removed[:2] == ['schema "bronze"', 'schema "bronze_staging"']
    with duckdb.connect(str(tmp_path / "lake.duckdb"), read_only=True) as conn:
        schemas = {
            r[0]
            for r in conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
        }
    assert "bronze" not in schemas


def test_drop_slot_command_drops_slot_and_publication(
    execute: Any,
    pg_dsn: str,
    pg_settings: PostgresSettings,
    delta_settings: LakeSettings,
    tmp_path: Path,
) -> None:
    execute("CREATE TABLE t (id int PRIMARY KEY)")
    snapshot(pg_settings, delta_settings)
    assert execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 1

    result = run_cli(["drop-slot"], tmp_path, {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn})

    assert result.returncode == 0, result.stderr
    assert "dlt_cdc_slot: dropped" in result.stdout
    assert execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 0
    assert execute("SELECT count(*) FROM pg_publication")[0][0] == 0


def test_cleanup_refuses_without_yes_and_volumes_explains_local_delta(tmp_path: Path) -> None:
    refused = run_cli(["cleanup"], tmp_path, {})
    assert refused.returncode == 2
    assert "run it again with --yes" in refused.stderr
    volumes = run_cli(["volumes"], tmp_path, {})
    assert volumes.returncode == 2
    assert "only on Databricks" in volumes.stderr
