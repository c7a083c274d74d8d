"""Publication and replication slot management. Every identifier is quoted by psycopg2.sql."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from replicator.adapters.postgres.connection import connection, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import ConfigurationError, SourceSchemaError
from replicator.domain.lsn import Lsn
from replicator.domain.model import SlotState, TableId, TableSchema

log = logging.getLogger(__name__)

PLUGIN = "pgoutput"


def qualified(table: TableId) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def _table_list(tables: Sequence[TableId]) -> sql.Composed:
    return sql.SQL(", ").join(qualified(t) for t in tables)


def ensure_publication(settings: PostgresSettings, tables: Sequence[TableSchema]) -> None:
    """Create the publication for ``tables``, or add the ones it lacks; check what it publishes."""
    wanted = [t.table_id for t in tables]
    pub = settings.pub_name
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate "
                    "FROM pg_publication WHERE pubname = %s",
                    (pub,),
                )
                row = cur.fetchone()
                if row is None:
                    statement = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(pub), _table_list(wanted)
                    )
                    if conn.server_version >= 130000:
                        statement += sql.SQL(" WITH (publish_via_partition_root = true)")
                    _run_ddl(cur, statement, f"creating publication {pub!r}")
                    log.info("created publication %s for %d tables", pub, len(wanted))
                    return
                all_tables, *publishes = row
                if not all(publishes):
                    raise SourceSchemaError(
                        f"publication {pub!r} does not publish every kind of change: run "
                        f'ALTER PUBLICATION "{pub}" SET (publish = '
                        "'insert, update, delete, truncate')"
                    )
                if all_tables:
                    return
                cur.execute(
                    "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                    (pub,),
                )
                published = {TableId(s, n) for s, n in cur.fetchall()}
                missing = [t for t in wanted if t not in published]
                if missing:
                    statement = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        sql.Identifier(pub), _table_list(missing)
                    )
                    _run_ddl(cur, statement, f"adding tables to publication {pub!r}")
                    log.info("added %s to publication %s", ", ".join(map(str, missing)), pub)
    except psycopg2.Error as e:
        raise translate_error(e, f"checking publication {pub!r}") from e


def _run_ddl(cur: psycopg2.extensions.cursor, statement: sql.Composed, doing: str) -> None:
    try:
        cur.execute(statement)
    except psycopg2.errors.InsufficientPrivilege as e:
        raise ConfigurationError(
            f"{doing}: permission denied for this role; have a superuser or the tables' owner "
            f"run: {statement.as_string(cur)}"
        ) from e


def read_slot(settings: PostgresSettings) -> SlotState | None:
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                wal_status = "wal_status" if conn.server_version >= 130000 else "NULL"
                cur.execute(
                    "SELECT slot_name, plugin, slot_type, datname, active, "
                    "confirmed_flush_lsn::text AS confirmed_flush, restart_lsn::text AS restart, "
                    f"{wal_status} AS wal_status, current_database() AS here "
                    "FROM pg_replication_slots LEFT JOIN pg_database d ON d.oid = datoid "
                    "WHERE slot_name = %s",
                    (settings.slot_name,),
                )
                row: dict[str, Any] | None = cur.fetchone()
    except psycopg2.Error as e:
        raise translate_error(e, f"reading replication slot {settings.slot_name!r}") from e
    if row is None:
        return None
    if row["slot_type"] != "logical" or row["plugin"] != PLUGIN:
        raise ConfigurationError(
            f"replication slot {settings.slot_name!r} exists but is a {row['slot_type']} slot "
            f"with plugin {row['plugin']!r}, not pgoutput: drop it with "
            f"SELECT pg_drop_replication_slot('{settings.slot_name}') or choose another name "
            "with SOURCES__PG_REPLICATION__SLOT_NAME"
        )
    if row["datname"] != row["here"]:
        raise ConfigurationError(
            f"replication slot {settings.slot_name!r} belongs to database {row['datname']!r}, "
            f"not {row['here']!r}: choose another name with SOURCES__PG_REPLICATION__SLOT_NAME"
        )
    return SlotState(
        name=row["slot_name"],
        plugin=row["plugin"],
        confirmed_flush=Lsn.parse(row["confirmed_flush"]) if row["confirmed_flush"] else None,
        restart_lsn=Lsn.parse(row["restart"]) if row["restart"] else None,
        active=bool(row["active"]),
        wal_status=row["wal_status"],
    )


def drop_slot(settings: PostgresSettings) -> bool:
    """Drop the slot if it exists; refuse while a consumer holds it. True if one was dropped."""
    slot = read_slot(settings)
    if slot is None:
        return False
    if slot.active:
        raise ConfigurationError(
            f"replication slot {settings.slot_name!r} is in use by another process (a running "
            "CDC job?): stop it first"
        )
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (settings.slot_name,))
    except psycopg2.Error as e:
        raise translate_error(e, f"dropping replication slot {settings.slot_name!r}") from e
    log.info("dropped replication slot %s", settings.slot_name)
    return True


def server_position(settings: PostgresSettings) -> Lsn:
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                # The insert position: with asynchronous commit the write position can lag
                # behind transactions that already committed.
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                row = cur.fetchone()
    except psycopg2.Error as e:
        raise translate_error(e, "reading the server's WAL position") from e
    assert row is not None
    return Lsn.parse(row[0])


def drop_publication(settings: PostgresSettings) -> bool:
    """Drop the publication if it exists. True if one was dropped."""
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (settings.pub_name,))
                if cur.fetchone() is None:
                    return False
                statement = sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(settings.pub_name))
                _run_ddl(cur, statement, f"dropping publication {settings.pub_name!r}")
    except psycopg2.Error as e:
        raise translate_error(e, f"dropping publication {settings.pub_name!r}") from e
    log.info("dropped publication %s", settings.pub_name)
    return True
