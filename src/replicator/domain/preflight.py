"""Preflight: what the source must offer before replication can work, and the exact fix when not.

The adapter gathers facts (``SourceFacts``); the rules live here, so each finding names the
problem and the SQL or setting that solves it, the same way for every source.
"""

from __future__ import annotations

import enum

import attrs

from replicator.domain.model import SourceFacts, TableId, TableSchema
from replicator.domain.ports import SourceInspector, TableCatalog


class Severity(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@attrs.frozen
class Finding:
    check: str
    severity: Severity
    message: str
    fix: str | None = None

    def line(self) -> str:
        return f"{self.check}: {self.message}" + (f" -> {self.fix}" if self.fix else "")


def _quoted(table: TableId) -> str:
    return '"{}"."{}"'.format(table.schema.replace('"', '""'), table.name.replace('"', '""'))


@attrs.define(eq=False)
class PreflightService:
    catalog: TableCatalog
    inspector: SourceInspector
    slot_name: str
    pub_name: str

    def run(self) -> list[Finding]:
        facts = self.inspector.facts(self.slot_name)
        tables = self.catalog.discover()
        return [
            self._wal_level(facts),
            self._role(facts),
            *self._capacity(facts),
            *self._tables(tables, self.catalog.left_out()),
            self._publication(facts, tables),
            *self._slot(facts),
        ]

    @staticmethod
    def _wal_level(facts: SourceFacts) -> Finding:
        if facts.wal_level == "logical":
            return Finding("wal_level", Severity.OK, "logical")
        fix = (
            "set rds.logical_replication = 1 in the DB parameter group and reboot"
            if facts.managed_rds
            else "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )
        return Finding("wal_level", Severity.FAIL, f"is {facts.wal_level!r}, not 'logical'", fix)

    @staticmethod
    def _role(facts: SourceFacts) -> Finding:
        if facts.can_replicate:
            return Finding("role", Severity.OK, f"{facts.role} may replicate")
        fix = (
            f'GRANT rds_replication TO "{facts.role}"'
            if facts.managed_rds
            else f'ALTER ROLE "{facts.role}" WITH REPLICATION'
        )
        return Finding("role", Severity.FAIL, f"{facts.role} lacks the REPLICATION attribute", fix)

    def _capacity(self, facts: SourceFacts) -> list[Finding]:
        findings = []
        needs_slot = facts.slot is None
        free_slots = facts.max_replication_slots - facts.used_replication_slots
        if needs_slot and free_slots < 1:
            findings.append(
                Finding(
                    "max_replication_slots",
                    Severity.FAIL,
                    f"all {facts.max_replication_slots} replication slots are in use",
                    "drop unused slots (SELECT pg_drop_replication_slot(name)) or raise "
                    "max_replication_slots and restart",
                )
            )
        else:
            findings.append(Finding("max_replication_slots", Severity.OK, f"{free_slots} free"))
        free_senders = facts.max_wal_senders - facts.used_wal_senders
        if free_senders < 1:
            findings.append(
                Finding(
                    "max_wal_senders",
                    Severity.FAIL,
                    f"all {facts.max_wal_senders} WAL senders are in use",
                    "raise max_wal_senders and restart, or stop another replication client",
                )
            )
        else:
            findings.append(Finding("max_wal_senders", Severity.OK, f"{free_senders} free"))
        return findings

    @staticmethod
    def _tables(tables: list[TableSchema], left_out: list[TableSchema]) -> list[Finding]:
        findings = []
        if not tables:
            findings.append(
                Finding(
                    "tables",
                    Severity.FAIL,
                    "no tables selected",
                    "check schemas, include and exclude in [sources.pg_replication]",
                )
            )
        for table in left_out:
            if table.unlogged:
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.WARN,
                        "UNLOGGED: its changes are not in the WAL; left out",
                        f"ALTER TABLE {table.quoted_name()} SET LOGGED to replicate it",
                    )
                )
                continue
            findings.append(
                Finding(
                    f"table {table.table_id}",
                    Severity.WARN,
                    "no primary key and no REPLICA IDENTITY FULL: left out, its updates and "
                    "deletes could not be matched",
                    f'{table.fix_sql()}, or keyless_tables = "insert_only" for its inserts',
                )
            )
        for table in tables:
            if table.generated_key:
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.FAIL,
                        f"its key includes stored generated column(s) "
                        f"{', '.join(table.generated_key)}, which the WAL does not carry",
                        f"ALTER TABLE {table.quoted_name()} REPLICA IDENTITY USING INDEX "
                        "<a unique index on ordinary columns>, or exclude the table",
                    )
                )
            elif table.identity_problem:
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.FAIL,
                        "DEFERRABLE primary key: no replica identity, so publishing the table "
                        "would make its UPDATEs and DELETEs fail",
                        f"ALTER TABLE {table.quoted_name()} REPLICA IDENTITY FULL",
                    )
                )
            elif table.inserts_only:
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.WARN,
                        "no primary key and no REPLICA IDENTITY FULL: only inserts and "
                        "TRUNCATEs are replicated (keyless_tables = insert_only)",
                        table.fix_sql(),
                    )
                )
            elif table.keyless_full:
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.OK,
                        "no primary key, REPLICA IDENTITY FULL: rows matched on all columns",
                    )
                )
        if not findings:
            findings.append(
                Finding("tables", Severity.OK, f"{len(tables)} tables, all with a primary key")
            )
        return findings

    def _publication(self, facts: SourceFacts, tables: list[TableSchema]) -> Finding:
        name = "publication " + self.pub_name
        publication = facts.publication
        if publication is None:
            return Finding(name, Severity.WARN, "does not exist yet; the snapshot creates it")
        if not publication.publishes_everything:
            return Finding(
                name,
                Severity.FAIL,
                "does not publish inserts, updates, deletes and truncates",
                f'ALTER PUBLICATION "{self.pub_name}" SET (publish = \'insert, update, delete, '
                "truncate')",
            )
        missing = [] if publication.all_tables else [
            t.table_id for t in tables if t.table_id not in publication.tables
        ]  # fmt: skip
        if missing:
            names = ", ".join(str(t) for t in missing)
            return Finding(
                name,
                Severity.WARN,
                f"lacks {names}; the next run adds them (changes before that are not captured)",
            )
        return Finding(name, Severity.OK, "covers every selected table")

    def _slot(self, facts: SourceFacts) -> list[Finding]:
        name = "slot " + self.slot_name
        findings = []
        slot = facts.slot
        if slot is None:
            findings.append(
                Finding(name, Severity.WARN, "does not exist yet; `--mode snapshot` creates it")
            )
        elif slot.wal_status == "lost":
            findings.append(
                Finding(
                    name,
                    Severity.FAIL,
                    "was invalidated by the server (wal_status=lost)",
                    "re-run `replicator --mode snapshot`",
                )
            )
        else:
            state = "active" if slot.active else "inactive"
            findings.append(
                Finding(name, Severity.OK, f"{state}, wal_status={slot.wal_status or 'n/a'}")
            )
        if facts.slot_plugin not in (None, "pgoutput"):
            findings.append(
                Finding(
                    name,
                    Severity.FAIL,
                    f"uses plugin {facts.slot_plugin!r}, not pgoutput",
                    f"SELECT pg_drop_replication_slot('{self.slot_name}'), or set "
                    "SOURCES__PG_REPLICATION__SLOT_NAME",
                )
            )
        keep = facts.max_slot_wal_keep_size
        findings.append(
            Finding(
                "max_slot_wal_keep_size",
                Severity.OK if keep not in (None, "-1") else Severity.WARN,
                f"{keep}"
                if keep not in (None, "-1")
                else "unlimited: a stopped pipeline keeps WAL until the disk fills",
                None
                if keep not in (None, "-1")
                else "consider ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (PostgreSQL 13+)",
            )
        )
        return findings


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.FAIL]
