"""The composition root: wires adapters into the domain services.

Settings come in as dependencies; tests override any provider with a fake
(``with container.lake_writer.override(InMemoryLakeWriter()): ...``).
"""

from __future__ import annotations

from dependency_injector import containers, providers

from replicator.adapters.lake import dlt_tuning
from replicator.adapters.lake.admin import LakeAdmin
from replicator.adapters.lake.checkpoint_store import DltCheckpointStore
from replicator.adapters.lake.lake_rows import DltLakeRowReader
from replicator.adapters.lake.maintenance import DltLakeMaintenance
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.postgres.admin import PostgresSourceAdmin
from replicator.adapters.postgres.catalog import PostgresTableCatalog
from replicator.adapters.postgres.change_stream import PgOutputChangeSource
from replicator.adapters.postgres.inspector import PostgresSourceInspector
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.snapshot import SqlDatabaseSnapshotSource
from replicator.adapters.postgres.text_rows import PostgresTextRows
from replicator.demo.sample_data import simulate
from replicator.domain.cdc import BatchLimits, CdcService
from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.maintenance import MaintenanceService
from replicator.domain.ports import (
    ChangeSource,
    CheckpointStore,
    LakeMaintenance,
    LakeRowReader,
    LakeWriter,
    SnapshotSource,
    SourceInspector,
    SourceRowReader,
    TableCatalog,
)
from replicator.domain.preflight import PreflightService
from replicator.domain.snapshot import SnapshotService
from replicator.domain.status import StatusService
from replicator.domain.verify import VerifyService


def tuned_lake_writer(settings: LakeSettings) -> DltLakeWriter:
    """The lake writer, once dlt and the process are tuned for it (``dlt_tuning``: the loader's
    poll, Delta merges without streaming, the system memory pool, failed jobs that never
    commit a package). Here, in the composition root, rather than inside the adapter."""
    dlt_tuning.apply()
    return DltLakeWriter(settings)


class Container(containers.DeclarativeContainer):
    postgres_settings = providers.Dependency(instance_of=PostgresSettings)
    lake_settings = providers.Dependency(instance_of=LakeSettings)

    # Warn about the tables left out (keyless, UNLOGGED): by the commands that replicate; the
    # ones that only read (check lists them itself, verify) stay quiet about them.
    announce_left_out = providers.Object(True)
    table_catalog: providers.Provider[TableCatalog] = providers.Singleton(
        PostgresTableCatalog, settings=postgres_settings, warn_left_out=announce_left_out
    )
    snapshot_source: providers.Provider[SnapshotSource] = providers.Singleton(
        SqlDatabaseSnapshotSource, settings=postgres_settings
    )
    lake_writer: providers.Provider[LakeWriter] = providers.Singleton(
        tuned_lake_writer, settings=lake_settings
    )

    change_source: providers.Provider[ChangeSource] = providers.Singleton(
        PgOutputChangeSource, settings=postgres_settings
    )
    checkpoint_store: providers.Provider[CheckpointStore] = providers.Singleton(
        DltCheckpointStore, writer=lake_writer
    )
    lsn_checkpoint = providers.Factory(
        LsnCheckpoint, store=checkpoint_store, slot_name=postgres_settings.provided.slot_name
    )
    batch_limits = providers.Object(BatchLimits())
    source_inspector: providers.Provider[SourceInspector] = providers.Singleton(
        PostgresSourceInspector, settings=postgres_settings
    )
    preflight_service = providers.Factory(
        PreflightService,
        catalog=table_catalog,
        inspector=source_inspector,
        slot_name=postgres_settings.provided.slot_name,
        pub_name=postgres_settings.provided.pub_name,
        inserts_pub_name=postgres_settings.provided.inserts_pub_name,
    )

    snapshot_service = providers.Factory(
        SnapshotService,
        catalog=table_catalog,
        source=snapshot_source,
        writer=lake_writer,
        publisher=change_source,
        checkpoint=lsn_checkpoint,
    )
    source_rows: providers.Provider[SourceRowReader] = providers.Singleton(
        PostgresTextRows, settings=postgres_settings
    )
    lake_rows: providers.Provider[LakeRowReader] = providers.Singleton(
        DltLakeRowReader, writer=lake_writer
    )
    status_service = providers.Factory(
        StatusService, source=change_source, checkpoint=lsn_checkpoint, writer=lake_writer
    )
    # Compaction and cleanup of the lake's tables (``maintain``, and every N CDC batches).
    maintain_retention_hours: providers.Object[int | None] = providers.Object(None)
    maintain_every_batches = providers.Object(0)
    lake_maintenance: providers.Provider[LakeMaintenance] = providers.Singleton(
        DltLakeMaintenance, writer=lake_writer, retention_hours=maintain_retention_hours
    )
    maintenance_service = providers.Factory(
        MaintenanceService,
        source=change_source,
        checkpoint=lsn_checkpoint,
        maintenance=lake_maintenance,
    )
    cdc_service = providers.Factory(
        CdcService,
        catalog=table_catalog,
        source=change_source,
        writer=lake_writer,
        checkpoint=lsn_checkpoint,
        limits=batch_limits,
        maintenance=lake_maintenance,
        maintain_every=maintain_every_batches,
        table_snapshots=providers.Singleton(
            SqlDatabaseSnapshotSource, settings=postgres_settings, temporary=True
        ),
    )
    verify_service = providers.Factory(
        VerifyService, catalog=table_catalog, source=source_rows, lake=lake_rows, cdc=cdc_service
    )

    # The admin commands. A command that only cleans the lake (volumes, cleanup) gets a
    # container without postgres_settings, simulate one without lake_settings (wiring.py).
    lake_admin = providers.Singleton(LakeAdmin, settings=lake_settings)
    source_admin = providers.Singleton(PostgresSourceAdmin, settings=postgres_settings)
    # simulate's random changes to the sample shop: ``simulate_changes(inserts=..., ...)``.
    simulate_changes = providers.Callable(simulate, settings=postgres_settings)
