"""Snapshot into a real Databricks workspace. Runs only when a workspace is configured:
DATABRICKS_SERVER_HOSTNAME, DATABRICKS_HTTP_PATH, DATABRICKS_CATALOG and DATABRICKS_TOKEN."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.test_snapshot_delta import run_snapshot

REQUIRED = (
    "DATABRICKS_SERVER_HOSTNAME",
    "DATABRICKS_HTTP_PATH",
    "DATABRICKS_CATALOG",
    "DATABRICKS_TOKEN",
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.databricks,
    pytest.mark.skipif(
        not all(os.environ.get(k) for k in REQUIRED),
        reason=f"no Databricks workspace configured ({', '.join(REQUIRED)})",
    ),
]


@pytest.fixture
def databricks_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeSettings:
    monkeypatch.setenv(
        "DESTINATION__DATABRICKS__CREDENTIALS__SERVER_HOSTNAME",
        os.environ["DATABRICKS_SERVER_HOSTNAME"],
    )
    monkeypatch.setenv(
        "DESTINATION__DATABRICKS__CREDENTIALS__HTTP_PATH", os.environ["DATABRICKS_HTTP_PATH"]
    )
    monkeypatch.setenv(
        "DESTINATION__DATABRICKS__CREDENTIALS__CATALOG", os.environ["DATABRICKS_CATALOG"]
    )
    monkeypatch.setenv(
        "DESTINATION__DATABRICKS__CREDENTIALS__ACCESS_TOKEN", os.environ["DATABRICKS_TOKEN"]
    )
    # A dataset of its own per run, so parallel runs never meet; dropped afterwards.
    return LakeSettings(
        destination="databricks",
        dataset=f"bronze_test_{uuid.uuid4().hex[:8]}",
        pipelines_dir=str(tmp_path),
    )


def test_snapshot_lands_in_databricks(
    execute: Any, pg_settings: PostgresSettings, databricks_settings: LakeSettings
) -> None:
    execute("CREATE TABLE items (id int PRIMARY KEY, price numeric(6,2), name text);"
            "INSERT INTO items VALUES (1, 9.99, 'pen'), (2, 120.00, 'lamp')")  # fmt: skip
    writer = DltLakeWriter(databricks_settings)
    try:
        report = run_snapshot(pg_settings, databricks_settings)
        assert [(i.lake_name, i.rows) for i in report.tables] == [("items", 2)]
        with writer.pipeline().sql_client() as client:
            rows = client.execute_sql(
                f"SELECT id, price, name FROM {client.make_qualified_table_name('items')} ORDER BY id"
            )
        assert [tuple(r) for r in rows] == [
            (1, Decimal("9.99"), "pen"),
            (2, Decimal("120.00"), "lamp"),
        ]
    finally:
        with writer.pipeline().sql_client() as client:
            client.drop_dataset()
