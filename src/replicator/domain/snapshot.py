"""The snapshot use case: copy every replicated table into the lake, all from one point in time."""

from __future__ import annotations

import logging

import attrs

from replicator.domain.checkpoint import (
    LsnCheckpoint,
    refuse_other_source,
    same_source,
    slot_generations,
)
from replicator.domain.errors import ConfigurationError, SourceSchemaError
from replicator.domain.model import Checkpoint, SnapshotReport, TableLoad
from replicator.domain.ports import ChangeSource, LakeWriter, SnapshotSource, TableCatalog

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class SnapshotService:
    """Full load with replace semantics.

    Invariants: every table is read inside one snapshot (no mixing of points in time); each
    lake table ends up with exactly the source's rows; the snapshot's position is recorded with
    the data in the same load, never separately. And a snapshot that fails, for whatever
    reason, leaves a working pipeline working:
    - the lake is reached first (its checkpoint read), before anything is done to the source,
      so a misconfigured or unreachable destination stops the run with nothing changed;
    - the snapshot's slot is a new one, under a name the lake does not use, and lives only as
      long as the read until every row was read; the slot the lake continues from is retired
      only after the new snapshot committed;
    - a table the failed snapshot did replace records the snapshot's position as its own, so
      CDC from the old slot gives it only the changes after it (see ``LakeWriter.positions``).
    """

    catalog: TableCatalog
    source: SnapshotSource
    writer: LakeWriter
    # Prepares CDC (the publication and slots); without it the snapshot takes no slot.
    publisher: ChangeSource | None = None
    # Where the lake's current checkpoint (and so its slot) is read.
    checkpoint: LsnCheckpoint | None = None
    # The lake mirrors another source, and this snapshot makes it mirror this one instead
    # (``--new-source``); without it such a snapshot is refused.
    new_source: bool = False

    def run(self) -> SnapshotReport:
        if self.publisher is None:
            return self._run()
        with self.publisher.exclusive():  # no CDC run of this pipeline meanwhile
            return self._run()

    def _run(self) -> SnapshotReport:
        current = self.checkpoint.store.load() if self.checkpoint is not None else None
        tables = self.catalog.discover()
        if not tables:
            raise SourceSchemaError(
                "no tables to replicate: check the schemas and the include/exclude lists "
                "in [sources.pg_replication]"
            )
        problems = [p for p in (t.identity_problem for t in tables) if p]
        if problems:  # before anything is published: the application's writes keep working
            raise SourceSchemaError("; ".join(problems) + "; nothing was changed")
        source = self.publisher.identity() if self.publisher is not None else None
        if source is not None and current is not None and current.source is not None:
            if not self.new_source:
                refuse_other_source(current.source, source, "a snapshot would load its tables")
            elif not same_source(current.source, source):
                left = sorted(map(str, current.tables - {t.table_id for t in tables}))
                log.warning(
                    "--new-source: this lake mirrored %s and now mirrors %s%s",
                    current.source,
                    source,
                    f"; tables of the previous source stay in the lake, unreplicated: "
                    f"{', '.join(left)}"
                    if left
                    else "",
                )
        slot = retiring = None
        if self.publisher is not None and self.checkpoint is not None:
            retiring = self.checkpoint.slot_of(current) if current is not None else None
            slot = self._new_slot_name(retiring)
        if self.publisher is not None:
            self.publisher.prepare(tables)
        # Loaded from scratch: the metadata columns take names no source column has.
        tables = [t.choosing_lake_columns(self.writer.column_names(t).values()) for t in tables]
        with self.source.open(tables, slot=slot) as reader:
            stored = current.schemas if current is not None else {}
            loads = [
                TableLoad(
                    table,
                    reader.read(table),
                    retyped=table.retyped_since(stored.get(table.table_id)),
                )
                for table in tables
            ]
            position = reader.position
            if position is None and current is not None:
                raise ConfigurationError(
                    "this role may not create replication slots, so this snapshot would have no "
                    "CDC position, while the lake's CDC continues from its checkpoint: grant "
                    "REPLICATION (ALTER ROLE ... REPLICATION) and run it again, or remove the "
                    "lake first (`replicator cleanup --yes`)"
                )
            # A snapshot is a fresh start: its tables are all the lake replicates.
            checkpoint = (
                None
                if position is None
                else Checkpoint(
                    position,
                    frozenset(t.table_id for t in tables),
                    schemas={t.table_id: t for t in tables},
                    slot=slot,
                    source=source,
                )
            )
            infos = self.writer.replace(loads, checkpoint, before_commit=reader.keep_slot)
        if self.publisher is not None and retiring is not None and slot not in (None, retiring):
            self._retire(retiring, str(slot))
        return SnapshotReport(
            tables=tuple(infos), position=position, rows=sum(i.rows for i in infos)
        )

    def _retire(self, old: str, new: str) -> None:
        """Drop the slot the lake continued from, now that it continues from ``new``."""
        assert self.publisher is not None
        if self.publisher.slot(new) is None:  # dropped by hand since it was made
            raise ConfigurationError(
                f"the snapshot committed with replication slot {new!r}, which no longer exists; "
                f"slot {old!r} was kept: run `replicator --mode snapshot` again"
            )
        if self.publisher.retire(old):
            log.info("retired replication slot %s: CDC continues from %s", old, new)

    def _new_slot_name(self, retiring: str | None) -> str:
        """The first slot name of this pipeline that the lake does not use and no slot has."""
        assert self.publisher is not None and self.checkpoint is not None
        if retiring is not None:
            slot = self.publisher.slot(retiring)
            if slot is not None and slot.active:
                raise ConfigurationError(
                    f"replication slot {retiring!r} is in use (a running CDC job?): stop it "
                    "before taking a new snapshot"
                )
        names = slot_generations(self.checkpoint.slot_name)
        taken = [n for n in names if n == retiring or self.publisher.occupied(n)]
        free = [n for n in names if n not in taken]
        if not free:
            others = ", ".join(n for n in taken if n != retiring)
            raise ConfigurationError(
                f"replication slots {others} exist besides the one this lake uses "
                f"({retiring or 'none'}): drop the one no pipeline uses with "
                "`replicator drop-slot --slot NAME` (a slot left by an interrupted snapshot "
                "pins WAL), or give this pipeline a slot name of its own "
                "(SOURCES__PG_REPLICATION__SLOT_NAME)"
            )
        for name in taken:
            if name != retiring:
                log.warning(
                    "replication slot %s exists and this lake does not use it: another "
                    "pipeline's, or left by an interrupted snapshot (then it pins WAL: drop it "
                    "with `replicator drop-slot --slot %s`)",
                    name,
                    name,
                )
        return free[0]
