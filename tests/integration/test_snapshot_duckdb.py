"""Snapshot mode into a real DuckDB database: the same exact values as into Delta."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.test_snapshot_delta import (
    ALL_TYPES_DDL,
    EXPECTED_ALL_TYPES,
    J,
    run_snapshot,
)
from tests.lake_readers import duckdb_rows

pytestmark = pytest.mark.integration

# DuckDB keeps arrays as JSON text (dlt's json type); everything else matches Delta.
ARRAY_COLUMNS = ("ints", "texts")


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("doc", "docb", *ARRAY_COLUMNS):
        if out.get(name) is not None:
            out[name] = J(json.loads(out[name]))
    return out


def expected(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ARRAY_COLUMNS:
        if out.get(name) is not None:
            out[name] = J(out[name])
    return out


class TestSnapshotIntoDuckDB:
    def test_every_type_lands_with_the_exact_value(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        duckdb_settings: LakeSettings,
        tmp_path: Any,
    ) -> None:
        execute(ALL_TYPES_DDL)

        report = run_snapshot(pg_settings, duckdb_settings)

        assert [(i.lake_name, i.rows) for i in report.tables] == [("all_types", 3)]
        rows = [normalise(r) for r in duckdb_rows(str(tmp_path / "lake.duckdb"), "all_types")]
        assert rows == [expected(r) for r in EXPECTED_ALL_TYPES]

    def test_a_second_snapshot_replaces_the_first(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        duckdb_settings: LakeSettings,
        tmp_path: Any,
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1,'a'),(2,'b')")
        run_snapshot(pg_settings, duckdb_settings)
        execute("DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (3, 'c')")

        run_snapshot(pg_settings, duckdb_settings)

        assert duckdb_rows(str(tmp_path / "lake.duckdb"), "t") == [
            {"id": 2, "v": "b"},
            {"id": 3, "v": "c"},
        ]


def test_cdc_into_duckdb_keeps_unchanged_toast_values_and_verifies_equal(
    execute: Any, pg_settings: PostgresSettings, duckdb_settings: LakeSettings
) -> None:
    """The stored-value fill and verify read DuckDB through dlt's SQL client."""
    from replicator.entrypoints.containers import Container
    from tests.integration.helpers import cdc, snapshot

    big = "SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 300) g"
    execute(f"CREATE TABLE docs (id int PRIMARY KEY, body text, n int); "
            f"INSERT INTO docs SELECT g, ({big}), g FROM generate_series(1, 3) g;")  # fmt: skip
    snapshot(pg_settings, duckdb_settings)
    execute("UPDATE docs SET n = n * 10 WHERE id IN (1, 3)")  # body: unchanged TOAST

    cdc(pg_settings, duckdb_settings)

    database = str(duckdb_settings.pipelines_dir).replace("/dlt", "/lake.duckdb")
    lake = duckdb_rows(database, "docs")
    source = execute("SELECT id, body, n FROM docs ORDER BY id")
    assert [(r["id"], r["body"], r["n"]) for r in lake] == source
    container = Container(postgres_settings=pg_settings, lake_settings=duckdb_settings)
    assert container.verify_service().run().equal
