from __future__ import annotations

import attrs
import pytest

from replicator.adapters.memory.fakes import InMemorySourceInspector, InMemoryTableCatalog
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    ColumnSchema,
    PublicationFacts,
    ReplicaIdentity,
    RolePrivileges,
    SlotState,
    SourceFacts,
    TableId,
    TableSchema,
)
from replicator.domain.preflight import Finding, PreflightService, Severity, failures

ORDERS = TableSchema(TableId("public", "orders"), (ColumnSchema("id", "integer", 23),), ("id",))
HEALTHY = SourceFacts(
    server_version=150000,
    wal_level="logical",
    max_replication_slots=10,
    used_replication_slots=1,
    max_wal_senders=10,
    used_wal_senders=1,
    role="replicator",
    can_replicate=True,
    managed_rds=False,
    max_slot_wal_keep_size="50GB",
    slot=SlotState("dlt_cdc_slot", "pgoutput", Lsn(1), Lsn(1), active=False, wal_status="reserved"),
    slot_plugin="pgoutput",
    publication=PublicationFacts(False, True, frozenset({ORDERS.table_id})),
)


def check(facts: SourceFacts = HEALTHY, tables: list[TableSchema] | None = None) -> list[Finding]:
    service = PreflightService(
        InMemoryTableCatalog(tables or [ORDERS]),
        InMemorySourceInspector(facts),
        "dlt_cdc_slot",
        "dlt_cdc_pub",
        "dlt_cdc_pub_inserts",
    )
    return service.run()


def failed(findings: list[Finding]) -> dict[str, str | None]:
    return {f.check: f.fix for f in failures(findings)}


class TestPreflight:
    def test_a_healthy_source_passes(self) -> None:
        findings = check()
        assert failures(findings) == []
        assert {f.severity for f in findings} == {Severity.OK}

    def test_wal_level_names_the_setting_and_the_rds_parameter(self) -> None:
        assert failed(check(attrs.evolve(HEALTHY, wal_level="replica"))) == {
            "wal_level": "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        }
        rds = attrs.evolve(HEALTHY, wal_level="replica", managed_rds=True)
        assert "rds.logical_replication = 1" in (failed(check(rds))["wal_level"] or "")

    def test_role_without_replication(self) -> None:
        assert failed(check(attrs.evolve(HEALTHY, can_replicate=False))) == {
            "role": 'ALTER ROLE "replicator" WITH REPLICATION'
        }
        rds = attrs.evolve(HEALTHY, can_replicate=False, managed_rds=True)
        assert failed(check(rds)) == {"role": 'GRANT rds_replication TO "replicator"'}

    def test_no_free_slot_matters_only_when_ours_does_not_exist(self) -> None:
        full = attrs.evolve(HEALTHY, used_replication_slots=10)
        assert failed(check(full)) == {}
        assert "max_replication_slots" in failed(
            check(attrs.evolve(full, slot=None, slot_plugin=None))
        )

    def test_no_free_wal_sender(self) -> None:
        assert "max_wal_senders" in failed(check(attrs.evolve(HEALTHY, used_wal_senders=10)))

    def test_keyless_tables_are_warnings_with_the_fix_never_failures(self) -> None:
        keyless = TableSchema(TableId("public", 'od"d'), (ColumnSchema("v", "text", 25),))
        service = PreflightService(
            InMemoryTableCatalog([ORDERS], left_out=[keyless]),
            InMemorySourceInspector(HEALTHY),
            "dlt_cdc_slot",
            "dlt_cdc_pub",
        )
        findings = {f.check: f for f in service.run()}
        left = findings['table public.od"d']
        assert left.severity is Severity.WARN
        assert left.fix == (
            'ALTER TABLE "public"."od""d" ADD PRIMARY KEY (...) or ALTER TABLE "public"."od""d" '
            'REPLICA IDENTITY FULL, or keyless_tables = "insert_only" for its inserts'
        )
        inserts = attrs.evolve(keyless, inserts_only=True)
        assert not failed(check(tables=[ORDERS, inserts]))
        assert {f.check: f.severity for f in check(tables=[ORDERS, inserts])}[
            'table public.od"d'
        ] is Severity.WARN
        full = attrs.evolve(keyless, replica_identity=ReplicaIdentity.FULL)
        assert {f.check: f.severity for f in check(tables=[ORDERS, full])}[
            'table public.od"d'
        ] is Severity.OK

    def test_unlogged_tables_are_warnings_and_deferrable_keys_without_identity_fail(
        self,
    ) -> None:
        cache = TableSchema(TableId("public", "cache"), ORDERS.columns, ("id",), unlogged=True)
        service = PreflightService(
            InMemoryTableCatalog([ORDERS], left_out=[cache]),
            InMemorySourceInspector(HEALTHY),
            "dlt_cdc_slot",
            "dlt_cdc_pub",
        )
        found = {f.check: f for f in service.run()}["table public.cache"]
        assert (found.severity, found.fix) == (
            Severity.WARN,
            'ALTER TABLE "public"."cache" SET LOGGED to replicate it',
        )
        deferred = attrs.evolve(ORDERS, deferrable_key=True)
        assert failed(check(tables=[deferred])) == {
            "table public.orders": 'ALTER TABLE "public"."orders" REPLICA IDENTITY FULL'
        }
        full = attrs.evolve(deferred, replica_identity=ReplicaIdentity.FULL)
        assert not failed(check(tables=[full]))
        generated = attrs.evolve(
            ORDERS, columns=(ColumnSchema("id", "integer", 23, generated="(a * 2)"),)
        )
        assert failed(check(tables=[generated])) == {
            "table public.orders": 'ALTER TABLE "public"."orders" REPLICA IDENTITY USING INDEX '
            "<a unique index on ordinary columns>, or exclude the table"
        }

    def test_publication_that_drops_some_kinds_of_change(self) -> None:
        partial = attrs.evolve(HEALTHY, publication=PublicationFacts(False, False, frozenset()))
        assert "SET (publish = 'insert, update, delete, truncate')" in (
            failed(check(partial))["publication dlt_cdc_pub"] or ""
        )

    def test_publication_the_role_may_not_create_names_the_grant_or_the_statement(self) -> None:
        role = RolePrivileges("shop", create_on_database=False)
        no_create = attrs.evolve(HEALTHY, publication=None, privileges=role)
        assert failed(check(no_create)) == {
            "publication dlt_cdc_pub": 'as a superuser: GRANT CREATE ON DATABASE "shop" TO '
            '"replicator", or create it yourself: CREATE PUBLICATION "dlt_cdc_pub" FOR TABLE '
            '"public"."orders" WITH (publish = \'insert, update, delete, truncate\', '
            "publish_via_partition_root = true)"
        }
        foreign = attrs.evolve(
            role, create_on_database=True, not_owned=frozenset({ORDERS.table_id})
        )
        fix = failed(check(attrs.evolve(no_create, privileges=foreign)))["publication dlt_cdc_pub"]
        assert fix is not None and fix.startswith("as a superuser (or the tables' owner): CREATE")
        may = attrs.evolve(role, create_on_database=True)
        assert not failed(check(attrs.evolve(no_create, privileges=may)))
        superuser = attrs.evolve(role, superuser=True, not_owned=frozenset({ORDERS.table_id}))
        assert not failed(check(attrs.evolve(no_create, privileges=superuser)))

    def test_insert_only_tables_need_their_own_publication(self) -> None:
        log = TableSchema(TableId("public", "log"), (ColumnSchema("line", "text", 25),), ())
        log = attrs.evolve(log, inserts_only=True)
        role = RolePrivileges("shop", create_on_database=False)
        facts = attrs.evolve(HEALTHY, privileges=role)
        fix = failed(check(facts, tables=[ORDERS, log]))["publication dlt_cdc_pub_inserts"]
        assert fix is not None
        assert 'CREATE PUBLICATION "dlt_cdc_pub_inserts" FOR TABLE "public"."log" WITH ' in fix
        assert "publish = 'insert, truncate'" in fix

    def test_tables_missing_from_a_publication_of_another_role(self) -> None:
        theirs = PublicationFacts(False, True, frozenset(), owned=False)
        facts = attrs.evolve(HEALTHY, publication=theirs, privileges=RolePrivileges("shop"))
        assert failed(check(facts)) == {
            "publication dlt_cdc_pub": "as a superuser (or the owner of the publication and the "
            'tables): ALTER PUBLICATION "dlt_cdc_pub" ADD TABLE "public"."orders"'
        }
        ours = attrs.evolve(theirs, owned=True)
        assert not failed(check(attrs.evolve(facts, publication=ours)))

    def test_tables_the_role_may_not_read_name_the_grants(self) -> None:
        role = RolePrivileges(
            "shop",
            unreadable=frozenset({ORDERS.table_id}),
            schemas_without_usage=frozenset({"public"}),
        )
        assert failed(check(attrs.evolve(HEALTHY, privileges=role))) == {
            "privileges": 'as their owner or a superuser: GRANT USAGE ON SCHEMA "public" TO '
            '"replicator"; GRANT SELECT ON "public"."orders" TO "replicator"'
        }

    @pytest.mark.parametrize(
        ("facts", "check_name"),
        [
            (attrs.evolve(HEALTHY, publication=None), "publication dlt_cdc_pub"),
            (attrs.evolve(HEALTHY, slot=None, slot_plugin=None), "slot dlt_cdc_slot"),
            (attrs.evolve(HEALTHY, max_slot_wal_keep_size="-1"), "max_slot_wal_keep_size"),
        ],
    )
    def test_missing_set_up_is_a_warning_not_a_failure(
        self, facts: SourceFacts, check_name: str
    ) -> None:
        findings = check(facts)
        assert failures(findings) == []
        assert [f.severity for f in findings if f.check == check_name] == [Severity.WARN]

    def test_lost_slot_and_foreign_plugin_fail_with_the_remedy(self) -> None:
        assert state_is_lost(
            check(attrs.evolve(HEALTHY, slot=attrs.evolve(HEALTHY.slot, wal_status="lost")))
        )
        foreign = attrs.evolve(HEALTHY, slot=None, slot_plugin="wal2json")
        assert "pg_drop_replication_slot('dlt_cdc_slot')" in (
            failed(check(foreign))["slot dlt_cdc_slot"] or ""
        )


def state_is_lost(findings: list[Finding]) -> bool:
    return failed(findings) == {"slot dlt_cdc_slot": "re-run `replicator --mode snapshot`"}
