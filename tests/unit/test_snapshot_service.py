from __future__ import annotations

import pytest

from replicator.adapters.memory.fakes import (
    InMemoryChangeSource,
    InMemoryCheckpointStore,
    InMemoryLakeWriter,
    InMemorySnapshotSource,
    InMemoryTableCatalog,
)
from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.errors import (
    ConfigurationError,
    LakeWriteError,
    PipelineBusyError,
    SourceReadError,
    SourceSchemaError,
)
from replicator.domain.lsn import Lsn
from replicator.domain.model import Checkpoint, ColumnSchema, TableId, TableSchema
from replicator.domain.snapshot import SnapshotService

CUSTOMERS = TableId("public", "customers")
ORDERS = TableId("sales", "orders")


def schema(table_id: TableId) -> TableSchema:
    return TableSchema(
        table_id=table_id,
        columns=(ColumnSchema("id", "integer", 23, nullable=False, base_type="int4"),),
        primary_key=("id",),
    )


def service(
    rows: dict[TableId, list[dict[str, object]]],
    *,
    source: InMemorySnapshotSource | None = None,
    writer: InMemoryLakeWriter | None = None,
) -> tuple[SnapshotService, InMemorySnapshotSource, InMemoryLakeWriter]:
    source = source or InMemorySnapshotSource(rows, position=Lsn.parse("0/16B3A8"))
    writer = writer or InMemoryLakeWriter()
    catalog = InMemoryTableCatalog(schema(t) for t in rows)
    return SnapshotService(catalog, source, writer), source, writer


class TestSnapshotService:
    def test_copies_every_discovered_table_row_for_row(self) -> None:
        rows = {
            CUSTOMERS: [{"id": 1}, {"id": 2}, {"id": 3}],
            ORDERS: [{"id": 10}],
        }
        svc, _, writer = service(rows)

        report = svc.run()

        assert writer.tables == rows
        assert report.rows == 4
        assert {(i.table_id, i.rows) for i in report.tables} == {(CUSTOMERS, 3), (ORDERS, 1)}

    def test_replaces_instead_of_appending_on_a_second_run(self) -> None:
        rows = {CUSTOMERS: [{"id": 1}, {"id": 2}]}
        svc, source, writer = service(rows)
        svc.run()
        source.rows[CUSTOMERS] = [{"id": 2}, {"id": 5}]

        svc.run()

        assert writer.tables[CUSTOMERS] == [{"id": 2}, {"id": 5}]
        assert writer.versions[CUSTOMERS] == 1

    def test_reads_all_tables_inside_one_snapshot(self) -> None:
        svc, source, _ = service({CUSTOMERS: [{"id": 1}], ORDERS: [{"id": 2}]})

        svc.run()

        # The fake refuses reads outside an open snapshot; one snapshot served both tables.
        assert source.opened == 1
        assert source.is_open is False

    def test_records_the_snapshot_position_with_the_data(self) -> None:
        svc, _, writer = service({CUSTOMERS: [{"id": 1}]})

        report = svc.run()

        assert writer.checkpoint == Lsn.parse("0/16B3A8")
        assert report.position == Lsn.parse("0/16B3A8")

    def test_refuses_to_run_without_tables(self) -> None:
        svc, _, writer = service({})

        with pytest.raises(SourceSchemaError, match="include/exclude"):
            svc.run()
        assert writer.loads == 0

    def test_read_failure_surfaces_as_domain_error_and_leaves_lake_untouched(self) -> None:
        rows = {CUSTOMERS: [{"id": 1}], ORDERS: [{"id": 2}]}
        source = InMemorySnapshotSource(
            rows, fail_on_table=ORDERS, failure=SourceReadError("orders unreadable")
        )
        writer = InMemoryLakeWriter()
        writer.tables[CUSTOMERS] = [{"id": 99}]
        svc, _, _ = service(rows, source=source, writer=writer)

        with pytest.raises(SourceReadError, match="orders unreadable"):
            svc.run()
        assert writer.tables == {CUSTOMERS: [{"id": 99}]}
        assert source.is_open is False

    def test_write_failure_surfaces_as_domain_error(self) -> None:
        rows = {CUSTOMERS: [{"id": 1}]}
        svc, _, writer = service(rows, writer=InMemoryLakeWriter(fail_on_table=CUSTOMERS))

        with pytest.raises(LakeWriteError, match="customers"):
            svc.run()
        assert writer.tables == {}
        assert writer.checkpoint is None


class _UnreachableLake(InMemoryCheckpointStore):
    def load(self) -> Checkpoint | None:
        raise ConfigurationError("missing configuration: catalog in [destination.databricks...]")


def with_slots(
    rows: dict[TableId, list[dict[str, object]]],
    *,
    source: InMemorySnapshotSource | None = None,
    writer: InMemoryLakeWriter | None = None,
    server: InMemoryChangeSource | None = None,
) -> tuple[SnapshotService, InMemoryChangeSource, InMemoryLakeWriter]:
    """A snapshot service that takes slots on a fake server (no slot at the start)."""
    server = server or InMemoryChangeSource(slot_exists=False)
    source = source or InMemorySnapshotSource(rows, position=Lsn(100))
    source.slots = server
    writer = writer or InMemoryLakeWriter()
    catalog = InMemoryTableCatalog(schema(t) for t in rows)
    checkpoints = LsnCheckpoint(InMemoryCheckpointStore(writer), "fake_slot")
    return SnapshotService(catalog, source, writer, server, checkpoints), server, writer


class TestAFailedSnapshotLeavesAWorkingPipelineWorking:
    def test_the_first_snapshot_takes_the_configured_slot_name(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})

        svc.run()

        assert server.slots == {"fake_slot": Lsn(100)}
        assert writer.checkpoint_slot == "fake_slot"

    def test_a_new_snapshot_takes_a_new_slot_and_retires_the_old_one_once_committed(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        assert isinstance(svc.source, InMemorySnapshotSource)
        svc.source.position = Lsn(200)

        svc.run()

        assert server.slots == {"fake_slot_2": Lsn(200)}
        assert writer.checkpoint_slot == "fake_slot_2"
        svc.source.position = Lsn(300)
        svc.run()  # and back to the first name
        assert server.slots == {"fake_slot": Lsn(300)}

    def test_a_snapshot_failing_mid_read_keeps_the_slot_lake_and_checkpoint(self) -> None:
        rows = {CUSTOMERS: [{"id": 1}], ORDERS: [{"id": 2}]}
        svc, server, writer = with_slots(rows)
        svc.run()
        failing = InMemorySnapshotSource(
            rows, position=Lsn(200), fail_on_table=ORDERS, failure=SourceReadError("gone")
        )
        svc2, _, _ = with_slots(rows, source=failing, writer=writer, server=server)

        with pytest.raises(SourceReadError):
            svc2.run()

        assert server.slots == {"fake_slot": Lsn(100)}  # no new slot was kept
        assert (writer.checkpoint, writer.checkpoint_slot) == (Lsn(100), "fake_slot")

    def test_an_unreachable_lake_stops_the_run_before_the_source_is_touched(self) -> None:
        svc, server, _ = with_slots({CUSTOMERS: [{"id": 1}]})
        assert svc.checkpoint is not None
        svc.checkpoint.store = _UnreachableLake(InMemoryLakeWriter())

        with pytest.raises(ConfigurationError, match="catalog"):
            svc.run()

        assert server.prepared == [] and server.slots == {}
        assert isinstance(svc.source, InMemorySnapshotSource) and svc.source.opened == 0

    def test_refuses_while_the_lakes_slot_is_in_use(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        server.active.add("fake_slot")

        with pytest.raises(ConfigurationError, match="in use"):
            svc.run()
        assert server.slots == {"fake_slot": Lsn(100)} and writer.loads == 1

    def test_a_slot_left_by_an_interrupted_snapshot_is_never_dropped_by_another(self) -> None:
        svc, server, _ = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        server.create_slot("fake_slot_2", Lsn(150))  # a killed snapshot's, or another pipeline's
        assert isinstance(svc.source, InMemorySnapshotSource)
        svc.source.position = Lsn(200)

        svc.run()

        assert server.slots == {"fake_slot_2": Lsn(150), "fake_slot_3": Lsn(200)}
        server.create_slot("fake_slot", Lsn(250))
        with pytest.raises(ConfigurationError, match="drop-slot --slot"):
            svc.run()


class TestOneRunAtATime:
    def test_a_snapshot_never_runs_beside_another_run_of_the_pipeline(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        server.busy = True  # a CDC run holds the pipeline

        with pytest.raises(PipelineBusyError):
            svc.run()
        assert server.slots == {} and writer.loads == 0

    def test_a_slot_of_that_name_in_another_database_is_taken_not_ours(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        server.elsewhere.add("fake_slot")  # another pipeline named its own slot so

        svc.run()

        assert writer.checkpoint_slot == "fake_slot_2"

    def test_a_snapshot_without_a_slot_position_refuses_a_lake_cdc_continues(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        assert isinstance(svc.source, InMemorySnapshotSource)
        svc.source.position = None  # the role may not create replication slots

        with pytest.raises(ConfigurationError, match="REPLICATION"):
            svc.run()
        assert writer.loads == 1 and server.slots == {"fake_slot": Lsn(100)}

    def test_the_old_slot_stays_when_the_new_one_vanished_before_the_commit(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        assert isinstance(svc.source, InMemorySnapshotSource)
        svc.source.position = Lsn(200)
        original = writer.replace

        def replace(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)  # type: ignore[arg-type]
            server.retire("fake_slot_2")  # dropped by hand right after it was made
            return result

        writer.replace = replace  # type: ignore[method-assign]
        with pytest.raises(ConfigurationError, match="no longer exists"):
            svc.run()
        assert "fake_slot" in server.slots


class TestOneSourcePerLake:
    """A lake knows the source it mirrors; another source's snapshot does not mix into it."""

    def test_a_snapshot_records_the_source(self) -> None:
        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        assert writer.checkpoint_source == server.source

    def test_another_source_is_refused_before_anything_changes(self) -> None:
        import attrs

        from replicator.domain.model import SourceIdentity

        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        svc.run()
        before = (dict(writer.tables), writer.checkpoint, dict(server.slots))
        for other in (
            SourceIdentity("7000000000000000002", "shop"),  # another server
            SourceIdentity("7000000000000000001", "billing"),  # another database
        ):
            server.source = other
            with pytest.raises(ConfigurationError, match="this lake mirrors database 'shop'"):
                svc.run()
            assert (dict(writer.tables), writer.checkpoint, dict(server.slots)) == before
            assert server.prepared == [CUSTOMERS]  # not published again for the refused run

        moved = attrs.evolve(svc, new_source=True)
        moved.run()
        assert writer.checkpoint_source == SourceIdentity("7000000000000000001", "billing")

    def test_the_demo_lake_follows_its_embedded_database_when_it_is_made_again(self) -> None:
        from replicator.domain.model import SourceIdentity

        svc, server, writer = with_slots({CUSTOMERS: [{"id": 1}]})
        server.source = SourceIdentity("7000000000000000001", "shop", embedded=True)
        svc.run()
        server.source = SourceIdentity("7000000000000000009", "shop", embedded=True)
        svc.run()  # a re-created embedded cluster: the same demo
        assert writer.checkpoint_source == server.source
        server.source = SourceIdentity("7000000000000000009", "shop")  # your own database
        with pytest.raises(ConfigurationError, match=r"\(the embedded sample database\), but"):
            svc.run()

    @pytest.mark.parametrize(
        ("mirrored", "configured", "same"),
        [
            (("1", "shop", False), ("1", "shop", False), True),
            (("1", "shop", False), ("2", "shop", False), False),
            (("1", "shop", False), ("1", "crm", False), False),
            (("", "shop", False), ("2", "shop", False), True),  # a service hiding the identifier
            (("", "shop", False), ("", "crm", False), False),
            (("1", "postgres", True), ("9", "postgres", True), True),  # the demo, made again
            (("1", "postgres", True), ("1", "postgres", False), False),
        ],
    )
    def test_what_counts_as_the_same_source(
        self,
        mirrored: tuple[str, str, bool],
        configured: tuple[str, str, bool],
        same: bool,
    ) -> None:
        from replicator.domain.checkpoint import same_source
        from replicator.domain.model import SourceIdentity

        assert same_source(SourceIdentity(*mirrored), SourceIdentity(*configured)) is same
