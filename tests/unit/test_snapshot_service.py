from __future__ import annotations

import pytest

from replicator.adapters.memory.fakes import (
    InMemoryLakeWriter,
    InMemorySnapshotSource,
    InMemoryTableCatalog,
)
from replicator.domain.errors import LakeWriteError, SourceReadError, SourceSchemaError
from replicator.domain.lsn import Lsn
from replicator.domain.model import ColumnSchema, TableId, TableSchema
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
