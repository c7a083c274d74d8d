"""The Databricks lake writer's configuration, checked offline (no workspace needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter, write_plan
from replicator.domain.errors import ConfigurationError
from replicator.domain.model import ColumnSchema, Frontier, TableId, TableLoad, TableSchema

CREDENTIALS = {
    "DESTINATION__DATABRICKS__CREDENTIALS__SERVER_HOSTNAME": "adb-1.7.azuredatabricks.net",
    "DESTINATION__DATABRICKS__CREDENTIALS__HTTP_PATH": "/sql/1.0/warehouses/abc",
    "DESTINATION__DATABRICKS__CREDENTIALS__CATALOG": "main",
    "DESTINATION__DATABRICKS__CREDENTIALS__ACCESS_TOKEN": "dapi-not-a-real-token",
}


@pytest.fixture
def writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DltLakeWriter:
    monkeypatch.chdir(tmp_path)
    for key in (*CREDENTIALS, "DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_ID",
                "DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_SECRET"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    return DltLakeWriter(LakeSettings(destination="databricks", pipelines_dir=str(tmp_path)))


class TestDatabricksConfiguration:
    def test_credentials_come_from_dlt_env_vars_and_datasets_are_bronze(
        self, writer: DltLakeWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)

        client = writer.pipeline().destination_client()

        credentials = client.config.credentials
        assert (credentials.server_hostname, credentials.http_path, credentials.catalog) == (
            "adb-1.7.azuredatabricks.net",
            "/sql/1.0/warehouses/abc",
            "main",
        )
        assert client.sql_client.dataset_name == "bronze"
        assert client.config.staging_dataset_name_layout % "bronze" == "bronze_staging"
        # No volume configured: dlt creates _dlt_staging_load_volume itself.
        assert client.config.staging_volume_name is None
        assert "dapi-not-a-real-token" not in repr(client.config)

    def test_oauth_m2m_service_principal_instead_of_a_token(
        self, writer: DltLakeWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in CREDENTIALS.items():
            if not key.endswith("ACCESS_TOKEN"):
                monkeypatch.setenv(key, value)
        monkeypatch.setenv("DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_ID", "sp-app-id")
        monkeypatch.setenv("DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_SECRET", "sp-secret-value")

        credentials = writer.pipeline().destination_client().config.credentials

        assert (credentials.client_id, credentials.access_token) == ("sp-app-id", None)
        assert "sp-secret-value" not in repr(credentials)

    def test_missing_credentials_name_the_key_and_env_var(self, writer: DltLakeWriter) -> None:
        table = TableSchema(TableId("public", "t"), (ColumnSchema("id", "integer", 23),), ("id",))
        batch = pa.record_batch([pa.array([1], pa.int32())], ["id"])

        with pytest.raises(ConfigurationError) as failure:
            writer.replace([TableLoad(table, iter([batch]))], None)

        message = str(failure.value)
        assert "[destination.databricks.credentials]" in message
        assert "DESTINATION__DATABRICKS__CREDENTIALS__" in message


class TestMergeStrategy:
    TABLE = TableSchema(TableId("public", "t"), (ColumnSchema("id", "integer", 23),), ("id",))

    def test_cdc_batches_are_staged_and_merged_by_the_replicators_sql(self) -> None:
        disposition, hints, plan = write_plan(
            "databricks", self.TABLE, Frontier(10), kind="merge", soft=False
        )
        assert disposition == {"disposition": "merge", "strategy": "upsert"}
        assert hints == {}  # deletes are the replicator's MERGE clause, not dlt's hint
        assert (plan.kind, plan.keys, plan.hard_delete, plan.frontier) == (
            "merge",
            ("id",),
            True,
            Frontier(10),
        )

    def test_delta_merges_with_dlts_upsert_and_hard_deletes(self) -> None:
        disposition, hints, _ = write_plan("delta", self.TABLE, None, kind="merge", soft=False)
        assert disposition == {"disposition": "merge", "strategy": "upsert"}
        assert hints == {"_pg_deleted_ts": {"hard_delete": True}}
        assert write_plan("delta", self.TABLE, None, kind="merge", soft=True)[1] == {}
        assert write_plan("delta", self.TABLE, None, kind="replace", soft=False)[0] == "replace"
