from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.memory.fakes import (
    InMemoryChangeSource,
    InMemoryCheckpointStore,
    InMemoryLakeWriter,
    InMemorySnapshotSource,
    InMemoryTableCatalog,
)
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.model import ColumnSchema, TableId, TableSchema
from replicator.entrypoints.containers import Container


class TestContainer:
    def test_wires_real_adapters_without_connecting(self) -> None:
        container = Container(
            postgres_settings=PostgresSettings(dsn="postgresql://u:p@nowhere:1/db"),
            lake_settings=LakeSettings(),
        )
        service = container.snapshot_service()
        assert type(service.catalog).__name__ == "PostgresTableCatalog"
        assert type(service.writer).__name__ == "DltLakeWriter"

    def test_providers_can_be_overridden_with_fakes(self) -> None:
        table = TableSchema(TableId("public", "t"), (ColumnSchema("id", "integer", 23),))
        writer = InMemoryLakeWriter()
        container = Container(
            postgres_settings=PostgresSettings(dsn="postgresql://u:p@nowhere:1/db"),
            lake_settings=LakeSettings(),
        )
        with (
            container.table_catalog.override(InMemoryTableCatalog([table])),
            container.snapshot_source.override(
                InMemorySnapshotSource({table.table_id: [{"id": 1}, {"id": 2}]})
            ),
            container.lake_writer.override(writer),
            container.checkpoint_store.override(InMemoryCheckpointStore(writer)),
            container.change_source.override(InMemoryChangeSource()),
        ):
            report = container.snapshot_service().run()
        assert writer.tables == {table.table_id: [{"id": 1}, {"id": 2}]}
        assert report.rows == 2

    def test_postgres_settings_never_show_the_dsn(self) -> None:
        settings = PostgresSettings(dsn="postgresql://u:hunter2@db:5432/x")
        assert "hunter2" not in repr(settings)
