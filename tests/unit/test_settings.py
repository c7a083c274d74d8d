from collections.abc import Iterator

import pytest
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

from replicator.domain.errors import ConfigurationError
from replicator.entrypoints.settings import lake_settings, source_dsn, source_options
from tests.unit.dlt_config import config_from


@pytest.fixture(autouse=True)
def isolated_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> Iterator[None]:
    """A project folder of the test's own (its .dlt is what the test writes), no inherited env."""
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for key in (
        "SOURCES__PG_REPLICATION__CREDENTIALS",
        "SOURCES__PG_REPLICATION__SLOT_NAME",
        "SOURCES__PG_REPLICATION__PUB_NAME",
        "SOURCES__PG_REPLICATION__SCHEMAS",
        "SOURCES__PG_REPLICATION__TEXT_COLUMNS",
        "SOURCES__PG_REPLICATION__MAINTAIN_EVERY_BATCHES",
        "SOURCES__PG_REPLICATION__MAINTAIN_RETENTION_HOURS",
        "DESTINATION__FILESYSTEM__BUCKET_URL",
        "DESTINATION__DATABRICKS__CHANGE_DATA_FEED",
        "DESTINATION__DATABRICKS__DELETION_VECTORS",
        "DESTINATION__DATABRICKS__CLUSTER_BY_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    with config_from(tmp_path):
        yield


def reload_config(tmp_path: object) -> None:
    Container()[PluggableRunContext].reload(str(tmp_path))


class TestSourceSettings:
    def test_nothing_configured_means_the_embedded_default(self) -> None:
        assert source_dsn() is None

    def test_connection_string_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        dsn = "postgresql://rep:s3cret@db.internal:6543/shop"
        monkeypatch.setenv("SOURCES__PG_REPLICATION__CREDENTIALS", dsn)
        assert source_dsn() == dsn

    def test_credentials_table_from_secrets_toml(self, tmp_path: pytest.TempPathFactory) -> None:
        dlt_dir = tmp_path / ".dlt"  # type: ignore[operator]
        dlt_dir.mkdir()
        (dlt_dir / "secrets.toml").write_text(
            "[sources.pg_replication.credentials]\n"
            'host = "db.internal"\nport = 6543\ndatabase = "shop"\n'
            'username = "rep"\npassword = "s3cret"\n'
        )
        reload_config(tmp_path)
        assert source_dsn() == "postgresql://rep:s3cret@db.internal:6543/shop"

    def test_incomplete_credentials_name_the_missing_keys(
        self, tmp_path: pytest.TempPathFactory
    ) -> None:
        dlt_dir = tmp_path / ".dlt"  # type: ignore[operator]
        dlt_dir.mkdir()
        (dlt_dir / "secrets.toml").write_text(
            '[sources.pg_replication.credentials]\nhost = "db.internal"\n'
        )
        reload_config(tmp_path)
        with pytest.raises(ConfigurationError, match="lacks database, username"):
            source_dsn()

    def test_not_a_postgres_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__CREDENTIALS", "mysql://x@y/z")
        with pytest.raises(ConfigurationError, match="SOURCES__PG_REPLICATION__CREDENTIALS"):
            source_dsn()

    def test_slot_publication_and_schemas_defaults(self) -> None:
        options = source_options()
        assert (options.slot_name, options.pub_name) == ("dlt_cdc_slot", "dlt_cdc_pub")
        assert options.schemas == ("public",)

    def test_env_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__SLOT_NAME", "my_slot")
        monkeypatch.setenv("SOURCES__PG_REPLICATION__PUB_NAME", "my_pub")
        monkeypatch.setenv("SOURCES__PG_REPLICATION__SCHEMAS", "public, sales")
        options = source_options()
        assert (options.slot_name, options.pub_name) == ("my_slot", "my_pub")
        assert options.schemas == ("public", "sales")

    def test_slot_name_with_characters_postgres_refuses(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__SLOT_NAME", "My-Slot")
        with pytest.raises(ConfigurationError, match="lower-case letters, digits and underscores"):
            source_options()

    def test_overlong_slot_name_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__SLOT_NAME", "s" * 64)
        with pytest.raises(ConfigurationError, match="63-byte"):
            source_options()

    def test_text_columns_reach_the_postgres_settings(
        self, tmp_path: pytest.TempPathFactory
    ) -> None:
        assert source_options().text_columns == ()
        dlt_dir = tmp_path / ".dlt"  # type: ignore[operator]
        dlt_dir.mkdir()
        (dlt_dir / "config.toml").write_text(
            '[sources.pg_replication]\ntext_columns = ["orders.amount", "sales.*.grid"]\n'
        )
        reload_config(tmp_path)
        options = source_options()
        assert options.text_columns == ("orders.amount", "sales.*.grid")
        assert options.with_dsn("postgresql://x@h/db").text_columns == options.text_columns

    def test_text_columns_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__TEXT_COLUMNS", "a.b, public.c.*")
        assert source_options().text_columns == ("a.b", "public.c.*")

    def test_a_text_columns_entry_without_a_column_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SOURCES__PG_REPLICATION__TEXT_COLUMNS", "amount")
        with pytest.raises(ConfigurationError, match="TEXT_COLUMNS: 'amount' names no column"):
            source_options()


class TestLakeSettings:
    def test_bucket_defaults_to_local_lakehouse(self) -> None:
        assert lake_settings("delta").bucket_url == "./lakehouse"

    def test_bucket_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DESTINATION__FILESYSTEM__BUCKET_URL", "/data/lake")
        settings = lake_settings("delta")
        assert (settings.bucket_url, settings.dataset) == ("/data/lake", "bronze")


class TestLocalState:
    """Each pipeline has a working dir of its own (issue: every checkout run as root shared
    /var/dlt/pipelines/replicator, and switching destinations mixed their dlt schemas)."""

    def _dir(self, monkeypatch: pytest.MonkeyPatch, destination: str = "delta", **env: str) -> str:
        for key in ("SOURCES__PG_REPLICATION__CREDENTIALS", "SOURCES__PG_REPLICATION__SLOT_NAME",
                    "DESTINATION__FILESYSTEM__BUCKET_URL"):  # fmt: skip
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        path = lake_settings(destination).pipelines_dir
        assert path is not None
        return path

    def test_named_from_source_slot_destination_and_location(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
    ) -> None:
        monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path))
        source = "SOURCES__PG_REPLICATION__CREDENTIALS"
        base = {source: "postgresql://app:secret@db.example:5432/shop"}
        first = self._dir(monkeypatch, **base)
        assert first.startswith(str(tmp_path))
        assert first.rsplit("/", 1)[1].startswith("replicator-shop-delta-")
        assert "secret" not in first and "app" not in first.rsplit("/", 1)[1]
        # The same pipeline (another password, another role) keeps its working dir.
        assert self._dir(monkeypatch, **{source: "postgresql://ops:other@db.example/shop"}) == first
        others = {
            self._dir(monkeypatch, **{source: "postgresql://app@db.example:5432/billing"}),
            self._dir(monkeypatch, **{source: "postgresql://app@db2.example:5432/shop"}),
            self._dir(monkeypatch, **base, SOURCES__PG_REPLICATION__SLOT_NAME="other_slot"),
            self._dir(monkeypatch, **base, DESTINATION__FILESYSTEM__BUCKET_URL="/elsewhere"),
            self._dir(monkeypatch, "duckdb", **base),
            self._dir(monkeypatch),  # the embedded default
        }
        assert len(others) == 6 and first not in others


def test_every_source_option_reaches_the_postgres_settings() -> None:
    import attrs

    from replicator.entrypoints.settings import SourceOptions

    options = SourceOptions(
        schemas=("a",),
        include=("x",),
        exclude=("y",),
        text_columns=("t.c",),
        slot_name="s",
        pub_name="p",
        heartbeat_s=1.5,
        keyless_tables="insert_only",
    )
    settings = options.with_dsn("postgresql://x@h/db")
    assert settings.dsn == "postgresql://x@h/db"
    for field in attrs.fields(SourceOptions):
        assert getattr(settings, field.name) == getattr(options, field.name), field.name


class TestBatchLimits:
    def test_databricks_batches_less_often_by_default(self) -> None:
        from replicator.entrypoints.settings import batch_limits

        local, databricks = batch_limits("delta"), batch_limits("databricks")
        assert (local.max_seconds, local.min_seconds, local.idle_advance_seconds) == (
            10.0,
            0.0,
            300.0,
        )
        assert (
            databricks.max_seconds,
            databricks.min_seconds,
            databricks.idle_advance_seconds,
        ) == (60.0, 60.0, 1800.0)

    def test_what_is_configured_wins_on_every_destination(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from replicator.entrypoints.settings import batch_limits

        monkeypatch.setenv("SOURCES__PG_REPLICATION__BATCH_MAX_SECONDS", "2")
        monkeypatch.setenv("SOURCES__PG_REPLICATION__IDLE_CHECKPOINT_SECONDS", "90")
        limits = batch_limits("databricks")
        assert (limits.max_seconds, limits.idle_advance_seconds) == (2.0, 90.0)
        assert limits.min_seconds == 2.0  # never past max_seconds
        monkeypatch.setenv("SOURCES__PG_REPLICATION__BATCH_MIN_SECONDS", "0")
        assert batch_limits("databricks").min_seconds == 0.0

    @pytest.mark.parametrize(
        ("name", "value"), [("BATCH_MIN_SECONDS", "-1"), ("BATCH_MAX_SECONDS", "0")]
    )
    def test_a_limit_out_of_range_names_its_bound(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        from replicator.entrypoints.settings import batch_limits

        monkeypatch.setenv(f"SOURCES__PG_REPLICATION__{name}", value)
        bound = ">= 0" if name == "BATCH_MIN_SECONDS" else "> 0"
        with pytest.raises(ConfigurationError, match=f"{name.lower()} must be {bound}$"):
            batch_limits("delta")


class TestMaintenanceSettings:
    def test_never_by_default_with_each_table_s_own_retention(self) -> None:
        from replicator.entrypoints.settings import maintenance_settings

        assert maintenance_settings() == (0, None)

    def test_configured_whole_numbers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from replicator.entrypoints.settings import maintenance_settings

        monkeypatch.setenv("SOURCES__PG_REPLICATION__MAINTAIN_EVERY_BATCHES", "50")
        monkeypatch.setenv("SOURCES__PG_REPLICATION__MAINTAIN_RETENTION_HOURS", "0")
        assert maintenance_settings() == (50, 0)

    @pytest.mark.parametrize("value", ["-1", "2.5", "often"])
    def test_anything_else_is_one_line_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        from replicator.entrypoints.settings import maintenance_settings

        monkeypatch.setenv("SOURCES__PG_REPLICATION__MAINTAIN_EVERY_BATCHES", value)
        with pytest.raises(ConfigurationError, match="MAINTAIN_EVERY_BATCHES must be a whole"):
            maintenance_settings()


class TestDatabricksTableFeatures:
    def test_on_by_default(self) -> None:
        lake = lake_settings("databricks")
        assert (lake.change_data_feed, lake.deletion_vectors, lake.cluster_by_key) == (
            True,
            True,
            True,
        )

    def test_each_can_be_turned_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DESTINATION__DATABRICKS__CHANGE_DATA_FEED", "false")
        monkeypatch.setenv("DESTINATION__DATABRICKS__CLUSTER_BY_KEY", "0")
        lake = lake_settings("databricks")
        assert (lake.change_data_feed, lake.deletion_vectors, lake.cluster_by_key) == (
            False,
            True,
            False,
        )
        assert lake.databricks_properties() == {"delta.enableDeletionVectors": True}

    def test_anything_but_true_or_false_is_one_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DESTINATION__DATABRICKS__DELETION_VECTORS", "maybe")
        with pytest.raises(ConfigurationError, match="DELETION_VECTORS must be true or false"):
            lake_settings("databricks")
