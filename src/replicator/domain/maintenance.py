"""The maintenance use case: compact and clean the lake's tables, never beside a CDC run."""

from __future__ import annotations

import attrs

from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.errors import CheckpointError
from replicator.domain.model import TableMaintained
from replicator.domain.ports import ChangeSource, LakeMaintenance


@attrs.define(eq=False)
class MaintenanceService:
    source: ChangeSource
    checkpoint: LsnCheckpoint
    maintenance: LakeMaintenance

    def run(self) -> list[TableMaintained]:
        """Every table the lake's checkpoint lists, under the pipeline's lock (a CDC run's
        merge and a compaction of the same table would conflict)."""
        with self.source.exclusive():
            checkpoint = self.checkpoint.store.load()
            if checkpoint is None or not checkpoint.tables:
                raise CheckpointError(
                    "the lake has no replicated tables to maintain: run `replicator --mode "
                    "snapshot` first"
                )
            return self.maintenance.maintain(sorted(checkpoint.tables))
