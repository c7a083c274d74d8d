"""The snapshot use case: copy every replicated table into the lake, all from one point in time."""

from __future__ import annotations

import attrs

from replicator.domain.errors import SourceSchemaError
from replicator.domain.model import Checkpoint, SnapshotReport, TableLoad
from replicator.domain.ports import ChangeSource, LakeWriter, SnapshotSource, TableCatalog


@attrs.define(eq=False)
class SnapshotService:
    """Full load with replace semantics.

    Invariants: every table is read inside one snapshot (no mixing of points in time); each
    lake table ends up with exactly the source's rows; the snapshot's position is recorded with
    the data in the same load, never separately.
    """

    catalog: TableCatalog
    source: SnapshotSource
    writer: LakeWriter
    # Prepares CDC (the publication) before the snapshot's slot is created, so every change
    # committed after the snapshot is published.
    publisher: ChangeSource | None = None

    def run(self) -> SnapshotReport:
        tables = self.catalog.discover()
        if not tables:
            raise SourceSchemaError(
                "no tables to replicate: check the schemas and the include/exclude lists "
                "in [sources.pg_replication]"
            )
        if self.publisher is not None:
            self.publisher.prepare(tables)
        with self.source.open(tables) as reader:
            loads = [TableLoad(table, reader.read(table)) for table in tables]
            position = reader.position
            # A snapshot is a fresh start: its tables are all the lake replicates.
            checkpoint = (
                None
                if position is None
                else Checkpoint(
                    position,
                    frozenset(t.table_id for t in tables),
                    schemas={t.table_id: t for t in tables},
                )
            )
            infos = self.writer.replace(loads, checkpoint)
        return SnapshotReport(
            tables=tuple(infos), position=position, rows=sum(i.rows for i in infos)
        )
