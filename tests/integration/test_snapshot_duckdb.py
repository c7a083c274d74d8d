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
