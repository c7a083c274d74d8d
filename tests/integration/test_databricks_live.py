"""Snapshot and CDC into a real Databricks workspace. Runs only when a workspace is configured:
DATABRICKS_SERVER_HOSTNAME, DATABRICKS_HTTP_PATH, DATABRICKS_CATALOG and DATABRICKS_TOKEN."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.admin import LakeAdmin
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import cdc, snapshot

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
def databricks_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
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
    # A dataset of its own per run (and its _staging twin), so parallel runs never meet.
    settings = LakeSettings(
        destination="databricks",
        dataset=f"bronze_test_{uuid.uuid4().hex[:8]}",
        pipelines_dir=str(tmp_path),
    )
    yield settings
    LakeAdmin(settings).cleanup()


def rows(settings: LakeSettings, table: str) -> list[tuple[Any, ...]]:
    with DltLakeWriter(settings).pipeline().sql_client() as client:
        result = client.execute_sql(
            f"SELECT id, price, name FROM {client.make_qualified_table_name(table)} ORDER BY id"
        )
    return [tuple(r) for r in result]


def test_snapshot_then_cdc_land_in_databricks_with_staging_volumes(
    execute: Any, pg_settings: PostgresSettings, databricks_settings: LakeSettings
) -> None:
    execute("CREATE TABLE items (id int PRIMARY KEY, price numeric(6,2), name text);"
            "INSERT INTO items VALUES (1, 9.99, 'pen'), (2, 120.00, 'lamp')")  # fmt: skip
    report = snapshot(pg_settings, databricks_settings)
    assert [(i.lake_name, i.rows) for i in report.tables] == [("items", 2)]
    assert rows(databricks_settings, "items") == [
        (1, Decimal("9.99"), "pen"),
        (2, Decimal("120.00"), "lamp"),
    ]

    execute("UPDATE items SET price = 10.49 WHERE id = 1; DELETE FROM items WHERE id = 2;"
            "INSERT INTO items VALUES (3, 1.00, 'cup')")  # fmt: skip
    cdc(pg_settings, databricks_settings)
    assert rows(databricks_settings, "items") == [
        (1, Decimal("10.49"), "pen"),
        (3, Decimal("1.00"), "cup"),
    ]

    volumes = {(v.dataset, v.name) for v in LakeAdmin(databricks_settings).volumes()}
    assert (databricks_settings.dataset, "_dlt_staging_load_volume") in volumes
    assert (databricks_settings.dataset + "_staging", "_dlt_staging_load_volume") in volumes
