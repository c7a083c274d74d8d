"""Preflight: what the source must offer before replication can work, and the exact fix when not.

The adapter gathers facts (``SourceFacts``); the rules live here, so each finding names the
problem and the SQL or setting that solves it, the same way for every source.
"""

from __future__ import annotations

import enum

import attrs

from replicator.domain.model import (
    PublicationFacts,
    RolePrivileges,
    SourceFacts,
    TableId,
    TableSchema,
)
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
    # The publication of insert-only tables (no key, no REPLICA IDENTITY FULL).
    inserts_pub_name: str = ""

    def run(self) -> list[Finding]:
        tables = self.catalog.discover()
        facts = self.inspector.facts(self.slot_name, [t.table_id for t in tables])
        return [
            self._wal_level(facts),
            self._role(facts),
            *self._capacity(facts),
            *self._tables(tables, self.catalog.left_out()),
            *self._reading(facts.role, facts.privileges),
            *self._publications(facts, tables),
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
            elif table.identity_problem and not table.deferrable_key:
                virtual = ", ".join(c.name for c in table.columns if c.virtual)
                findings.append(
                    Finding(
                        f"table {table.table_id}",
                        Severity.FAIL,
                        f"REPLICA IDENTITY FULL includes virtual generated column(s) {virtual}, "
                        "which PostgreSQL cannot publish: publishing the table would make its "
                        "UPDATEs and DELETEs fail",
                        "give it a primary key or ALTER TABLE "
                        f"{table.quoted_name()} REPLICA IDENTITY USING INDEX <a unique index>, "
                        "make the column(s) STORED, or exclude the table",
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

    @staticmethod
    def _reading(role: str, privileges: RolePrivileges | None) -> list[Finding]:
        """The snapshot and verify read every replicated table."""
        if privileges is None or not privileges.unreadable:
            return []
        grants = [
            f'GRANT USAGE ON SCHEMA "{_escaped(schema)}" TO "{_escaped(role)}"'
            for schema in sorted(privileges.schemas_without_usage)
        ]
        tables = ", ".join(_quoted(t) for t in sorted(privileges.unreadable))
        grants.append(f'GRANT SELECT ON {tables} TO "{_escaped(role)}"')
        return [
            Finding(
                "privileges",
                Severity.FAIL,
                f"this role may not read {_counted(len(privileges.unreadable), 'table')}: "
                + ", ".join(str(t) for t in sorted(privileges.unreadable)),
                "as their owner or a superuser: " + "; ".join(grants),
            )
        ]

    def _publications(self, facts: SourceFacts, tables: list[TableSchema]) -> list[Finding]:
        every = [t.table_id for t in tables if not t.inserts_only]
        inserts = [t.table_id for t in tables if t.inserts_only]
        # What the snapshot creates: PostgreSQL 18 publishes stored generated columns on request.
        options = "publish_via_partition_root = true" + (
            ", publish_generated_columns = stored" if facts.server_version >= 180000 else ""
        )
        findings = [
            self._publication(
                self.pub_name,
                facts.publication,
                every,
                _EVERY_KIND,
                options,
                facts.role,
                facts.privileges,
            )
        ]
        if inserts and self.inserts_pub_name:
            findings.append(
                self._publication(
                    self.inserts_pub_name,
                    facts.inserts_publication,
                    inserts,
                    _INSERTS_ONLY,
                    options,
                    facts.role,
                    facts.privileges,
                )
            )
        return findings

    @staticmethod
    def _publication(
        pub_name: str,
        publication: PublicationFacts | None,
        wanted: list[TableId],
        publish: str,
        options: str,
        role: str,
        privileges: RolePrivileges | None,
    ) -> Finding:
        name = "publication " + pub_name
        quoted = f'"{_escaped(pub_name)}"'
        if publication is None:
            create = (
                f"CREATE PUBLICATION {quoted} FOR TABLE {', '.join(map(_quoted, wanted))} "
                f"WITH (publish = '{publish}', {options})"
            )
            return _creatable(name, create, wanted, role, privileges)
        if not publication.publishes_everything:
            return Finding(
                name,
                Severity.FAIL,
                "does not publish inserts, updates, deletes and truncates"
                if publish == _EVERY_KIND
                else "must publish inserts and truncates only",
                f"ALTER PUBLICATION {quoted} SET (publish = '{publish}')",
            )
        missing = [] if publication.all_tables else [
            t for t in wanted if t not in publication.tables
        ]  # fmt: skip
        if not missing:
            return Finding(name, Severity.OK, "covers every selected table")
        names = ", ".join(str(t) for t in missing)
        add = f"ALTER PUBLICATION {quoted} ADD TABLE {', '.join(map(_quoted, missing))}"
        if privileges is not None and not privileges.superuser:
            foreign = [t for t in missing if t in privileges.not_owned]
            if not publication.owned or foreign:
                whose = (
                    "the publication"
                    if not publication.owned
                    else "; ".join(str(t) for t in foreign)
                )
                return Finding(
                    name,
                    Severity.FAIL,
                    f"lacks {names}, and this role may not add them (another role owns {whose})",
                    f"as a superuser (or the owner of the publication and the tables): {add}",
                )
        return Finding(
            name,
            Severity.WARN,
            f"lacks {names}; the next run adds them (changes before that are not captured)",
        )

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


_EVERY_KIND = "insert, update, delete, truncate"
_INSERTS_ONLY = "insert, truncate"


def _escaped(name: str) -> str:
    return name.replace('"', '""')


def _counted(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _creatable(
    name: str, create: str, wanted: list[TableId], role: str, privileges: RolePrivileges | None
) -> Finding:
    """A publication the snapshot will create: can this role create it?"""
    if privileges is None or privileges.superuser:
        return Finding(name, Severity.WARN, "does not exist yet; the snapshot creates it")
    foreign = [t for t in wanted if t in privileges.not_owned]
    if foreign:
        owners = ", ".join(str(t) for t in foreign)
        return Finding(
            name,
            Severity.FAIL,
            f"does not exist yet, and this role may not create it: another role owns {owners} "
            "(publishing a table takes its owner)",
            f"as a superuser (or the tables' owner): {create}",
        )
    if not privileges.create_on_database:
        return Finding(
            name,
            Severity.FAIL,
            "does not exist yet, and this role may not create it (no CREATE on database "
            f"{privileges.database})",
            f'as a superuser: GRANT CREATE ON DATABASE "{_escaped(privileges.database)}" TO '
            f'"{_escaped(role)}", or create it yourself: {create}',
        )
    return Finding(name, Severity.WARN, "does not exist yet; the snapshot creates it")


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.FAIL]
