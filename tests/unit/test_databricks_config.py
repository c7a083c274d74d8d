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
                "DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_SECRET",
                "DESTINATION__DATABRICKS__KEEP_STAGED_FILES",
                "DESTINATION__DATABRICKS__CREDENTIALS__CONNECTION_PARAMETERS"):  # fmt: skip
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


class TestDatabricksDefaults:
    def test_a_host_with_its_scheme_is_reduced_to_the_host(
        self, writer: DltLakeWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        # ${workspace.host} in the bundle carries the scheme; dlt builds https://{host} itself
        monkeypatch.setenv(
            "DESTINATION__DATABRICKS__CREDENTIALS__SERVER_HOSTNAME",
            "https://adb-1.7.azuredatabricks.net/",
        )

        credentials = writer.pipeline().destination_client().config.credentials

        assert credentials.server_hostname == "adb-1.7.azuredatabricks.net"

    def test_staged_files_are_removed_and_retries_are_bounded_by_default(
        self, writer: DltLakeWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)

        config = writer.pipeline().destination_client().config

        assert config.keep_staged_files is False
        params = config.credentials.to_connector_params()
        assert params["_retry_stop_after_attempts_duration"] == 30.0

    def test_what_the_user_configured_is_kept(
        self, writer: DltLakeWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DESTINATION__DATABRICKS__KEEP_STAGED_FILES", "true")
        monkeypatch.setenv(
            "DESTINATION__DATABRICKS__CREDENTIALS__CONNECTION_PARAMETERS",
            '{"_retry_stop_after_attempts_duration": 120}',
        )

        config = writer.pipeline().destination_client().config

        assert config.keep_staged_files is True
        assert (
            config.credentials.to_connector_params()["_retry_stop_after_attempts_duration"] == 120
        )
