"""Where replication stands: the slot on the source, the checkpoint in the lake, the gap."""

from __future__ import annotations

import datetime
from typing import Any

import attrs

from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.lsn import Lsn
from replicator.domain.model import Checkpoint, LakeTableInfo, SlotState
from replicator.domain.ports import ChangeSource, LakeWriter


@attrs.frozen
class StatusReport:
    server_position: Lsn
    slot: SlotState | None
    checkpoint: Checkpoint | None
    tables: tuple[LakeTableInfo, ...]

    @property
    def retained_wal_bytes(self) -> int | None:
        """WAL the server keeps for the slot."""
        if self.slot is None or self.slot.restart_lsn is None:
            return None
        return max(0, self.server_position - self.slot.restart_lsn)

    # When the report was made (lag in seconds is measured to it).
    at: datetime.datetime | None = None

    @property
    def lag_bytes(self) -> int | None:
        """How far the lake is behind the server."""
        if self.checkpoint is None:
            return None
        return max(0, self.server_position - self.checkpoint.position)

    @property
    def lag_seconds(self) -> float | None:
        """How old the last transaction the lake holds is (its commit time to now); 0 when the
        lake holds everything up to the server's position; None when unknown."""
        if self.checkpoint is None:
            return None
        if self.lag_bytes == 0:
            return 0.0
        if self.checkpoint.commit_ts is None or self.at is None:
            return None
        return max(0.0, (self.at - self.checkpoint.commit_ts).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        slot = self.slot
        checkpoint = self.checkpoint

        def text(value: object) -> str | None:
            return None if value is None else str(value)

        return {
            "server_position": str(self.server_position),
            "slot": None
            if slot is None
            else {
                "name": slot.name,
                "active": slot.active,
                "confirmed_flush_lsn": None
                if slot.confirmed_flush is None
                else str(slot.confirmed_flush),
                "restart_lsn": None if slot.restart_lsn is None else str(slot.restart_lsn),
                "wal_status": slot.wal_status,
                "retained_wal_bytes": self.retained_wal_bytes,
            },
            "lake": None
            if checkpoint is None
            else {
                "checkpoint_lsn": str(checkpoint.position),
                "source": None if checkpoint.source is None else attrs.asdict(checkpoint.source),
                "lag_bytes": self.lag_bytes,
                "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
                "last_commit_ts": None
                if checkpoint.commit_ts is None
                else checkpoint.commit_ts.isoformat(),
                "last_run_at": None
                if checkpoint.written_at is None
                else checkpoint.written_at.isoformat(),
            },
            "tables": [
                {
                    "table": str(t.table_id),
                    "lake_table": t.lake_name,
                    "rows": t.rows,
                    "last_change_lsn": None if t.last_lsn is None else str(Lsn(t.last_lsn)),
                }
                for t in self.tables
            ],
        }


@attrs.define(eq=False)
class StatusService:
    source: ChangeSource
    checkpoint: LsnCheckpoint
    writer: LakeWriter

    def run(self) -> StatusReport:
        checkpoint = self.checkpoint.store.load()
        tables = sorted(checkpoint.tables) if checkpoint else []
        columns = {t: checkpoint.lake_columns(t) for t in tables} if checkpoint else {}
        return StatusReport(
            server_position=self.source.server_position(),
            slot=self.source.slot(self.checkpoint.slot_of(checkpoint)),
            checkpoint=checkpoint,
            tables=tuple(self.writer.describe(tables, last_change=columns)),
            at=datetime.datetime.now(datetime.UTC),
        )
