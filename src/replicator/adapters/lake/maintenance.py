"""Lake maintenance: small files compacted, files no reader needs any more removed.

Every CDC batch merges into its tables, and each merge on Delta commits new Parquet files (the
rows it inserted, and rewrites of the files holding rows it updated or deleted); after a day of
small batches a table is thousands of small files and every full scan opens them all. Per
destination:

- Delta (local or bucket): ``optimize.compact()`` bin-packs small files into large ones (one
  commit; the rows, and the table's position recorded in its ``txn`` actions, stay), then
  ``vacuum`` removes the files no version younger than the retention references, then a log
  checkpoint lets readers skip replaying the JSON log.
- Databricks: ``OPTIMIZE`` and ``VACUUM ... RETAIN n HOURS`` (predictive optimization may do
  this for managed tables already; running it again is harmless).
- DuckDB: one database file, nothing to compact: ``CHECKPOINT`` folds the WAL into it.

The retention is by default each table's own (``delta.deletedFileRetentionDuration``, 7 days
unless set): a reader still on a version younger than that, or time-travelling to one, keeps
its files. A retention given in hours applies to every table instead; shorter is allowed (for a
lake nobody time-travels; on Databricks it turns the session's retention check off for that
VACUUM); 0 keeps only the current version.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from replicator.adapters.lake.writer import DltLakeWriter
from replicator.domain.errors import (
    ConfigurationError,
    DestinationUnavailableError,
    ReplicatorError,
)
from replicator.domain.model import TableId, TableMaintained
from replicator.domain.ports import LakeMaintenance

log = logging.getLogger(__name__)

# Below this, Databricks refuses a VACUUM unless the session's retention check is off.
DATABRICKS_SAFE_HOURS = 168


def databricks_statements(qualified: str, retention_hours: int | None) -> list[str]:
    """Compaction, then removal of what no version within the retention references (the
    table's own retention when None)."""
    if retention_hours is None:
        return [f"OPTIMIZE {qualified}", f"VACUUM {qualified}"]
    vacuum = [f"VACUUM {qualified} RETAIN {retention_hours} HOURS"]
    if retention_hours < DATABRICKS_SAFE_HOURS:  # the operator's explicit choice
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        vacuum = [f"SET {check} = false", *vacuum, f"SET {check} = true"]
    return [f"OPTIMIZE {qualified}", *vacuum]


class DltLakeMaintenance(LakeMaintenance):
    def __init__(self, writer: DltLakeWriter, retention_hours: int | None = None):
        if retention_hours is not None and retention_hours < 0:
            raise ConfigurationError("maintain_retention_hours must be 0 or more")
        self._writer = writer
        self._retention_hours = retention_hours

    def maintain(self, tables: Sequence[TableId]) -> list[TableMaintained]:
        try:
            return self._maintain(tables)
        except ReplicatorError:
            raise
        except Exception as e:  # delta-rs, the object store, the warehouse: one line
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DestinationUnavailableError(f"maintaining the lake's tables: {detail}") from e

    def _maintain(self, tables: Sequence[TableId]) -> list[TableMaintained]:
        names = self._writer.lake_table_names(tables)
        if self._writer.destination_name == "delta":
            return [m for t, n in names.items() if (m := self._delta(t, n)) is not None]
        with self._writer.pipeline().sql_client() as client:
            if self._writer.destination_name == "duckdb":
                statements = ["CHECKPOINT"]
            else:
                statements = [
                    statement
                    for name in names.values()
                    for statement in databricks_statements(
                        client.make_qualified_table_name(name), self._retention_hours
                    )
                ]
            for statement in statements:
                log.debug("running: %s", statement)
                client.execute_sql(statement)
        return [TableMaintained(t, n) for t, n in names.items()]

    def _delta(self, table_id: TableId, name: str) -> TableMaintained | None:
        table = self._writer.open_delta(name)
        if table is None:
            return None  # never loaded
        before = len(table.file_uris())
        table.optimize.compact()
        removed = table.vacuum(
            retention_hours=self._retention_hours,  # None: the table's own
            dry_run=False,
            enforce_retention_duration=self._retention_hours is None,
        )
        table.create_checkpoint()
        after = len(table.file_uris())
        log.debug("%s: %d files -> %d, %d removed", name, before, after, len(removed))
        return TableMaintained(table_id, name, before, after, len(removed))
