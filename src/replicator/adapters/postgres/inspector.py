"""Reads the facts preflight judges from PostgreSQL's settings and catalogs."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg2
import psycopg2.extras

from replicator.adapters.postgres.connection import connection, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import read_slot
from replicator.domain.model import PublicationFacts, RolePrivileges, SourceFacts, TableId
from replicator.domain.ports import SourceInspector

_FACTS_SQL = """
SELECT current_setting('server_version_num')::int AS version,
       current_setting('wal_level') AS wal_level,
       current_setting('max_replication_slots')::int AS max_slots,
       (SELECT count(*) FROM pg_replication_slots)::int AS used_slots,
       current_setting('max_wal_senders')::int AS max_senders,
       (SELECT count(*) FROM pg_stat_replication)::int AS used_senders,
       current_user AS role,
       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)
         OR pg_has_role(current_user, oid_rds, 'member') AS can_replicate,
       oid_rds IS NOT NULL AS managed_rds,
       current_setting('max_slot_wal_keep_size', true) AS keep_size
FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = 'rds_replication') AS oid_rds) r
"""


_ROLE_SQL = """
SELECT current_database() AS database, rolsuper AS superuser,
       has_database_privilege(current_database(), 'CREATE') AS create_on_database
FROM pg_roles WHERE rolname = current_user
"""

# Per replicated table: may the role reach its schema, read it, and does it own it (as a member
# of the owning role, which is what CREATE PUBLICATION ... FOR TABLE asks)?
_TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name,
       has_schema_privilege(n.oid, 'USAGE') AS usage,
       has_table_privilege(c.oid, 'SELECT') AS readable,
       pg_has_role(c.relowner, 'USAGE') AS owned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) AS w(schema, name)
  ON w.schema = n.nspname AND w.name = c.relname
"""


class PostgresSourceInspector(SourceInspector):
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def facts(self, slot: str, tables: Sequence[TableId] = ()) -> SourceFacts:
        settings = self._settings
        try:
            with connection(settings) as conn:
                conn.autocommit = True
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    cur.execute(_FACTS_SQL)
                    row = cur.fetchone()
                    assert row is not None
                    cur.execute(
                        "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,),
                    )
                    plugin_row = cur.fetchone()
                    publication = self._publication(cur, settings.pub_name)
                    inserts = self._publication(cur, settings.inserts_pub_name, inserts_only=True)
                    privileges = self._privileges(cur, tables)
        except psycopg2.Error as e:
            raise translate_error(e, "inspecting the source") from e
        plugin = plugin_row["plugin"] if plugin_row else None
        return SourceFacts(
            server_version=row["version"],
            wal_level=row["wal_level"],
            max_replication_slots=row["max_slots"],
            used_replication_slots=row["used_slots"],
            max_wal_senders=row["max_senders"],
            used_wal_senders=row["used_senders"],
            role=row["role"],
            can_replicate=bool(row["can_replicate"]),
            managed_rds=bool(row["managed_rds"]),
            max_slot_wal_keep_size=row["keep_size"],
            slot=read_slot(settings, slot) if plugin == "pgoutput" else None,
            slot_plugin=plugin,
            publication=publication,
            inserts_publication=inserts,
            privileges=privileges,
        )

    @staticmethod
    def _publication(
        cur: psycopg2.extras.RealDictCursor, name: str, *, inserts_only: bool = False
    ) -> PublicationFacts | None:
        """``inserts_only``: the publication of insert-only tables, which must publish inserts
        and TRUNCATEs and nothing else (PostgreSQL would refuse their UPDATEs and DELETEs)."""
        wanted = (
            "pubinsert AND pubtruncate AND NOT pubupdate AND NOT pubdelete"
            if inserts_only
            else "pubinsert AND pubupdate AND pubdelete AND pubtruncate"
        )
        cur.execute(
            f"SELECT puballtables, {wanted} AS every, pg_has_role(pubowner, 'USAGE') AS owned "
            "FROM pg_publication WHERE pubname = %s",
            (name,),
        )
        pub = cur.fetchone()
        if pub is None:
            return None
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (name,)
        )
        tables = frozenset(TableId(r["schemaname"], r["tablename"]) for r in cur.fetchall())
        return PublicationFacts(
            bool(pub["puballtables"]), bool(pub["every"]), tables, owned=bool(pub["owned"])
        )

    @staticmethod
    def _privileges(
        cur: psycopg2.extras.RealDictCursor, tables: Sequence[TableId]
    ) -> RolePrivileges:
        cur.execute(_ROLE_SQL)
        role = cur.fetchone()
        assert role is not None
        cur.execute(_TABLES_SQL, ([t.schema for t in tables], [t.name for t in tables]))
        rows = cur.fetchall()
        superuser = bool(role["superuser"])
        return RolePrivileges(
            database=role["database"],
            superuser=superuser,
            create_on_database=superuser or bool(role["create_on_database"]),
            unreadable=frozenset(
                TableId(r["schema"], r["name"]) for r in rows if not (r["usage"] and r["readable"])
            ),
            schemas_without_usage=frozenset(r["schema"] for r in rows if not r["usage"]),
            not_owned=frozenset(
                TableId(r["schema"], r["name"]) for r in rows if not (superuser or r["owned"])
            ),
        )
