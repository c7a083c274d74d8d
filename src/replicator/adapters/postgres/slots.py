"""Publication and replication slot management. Every identifier is quoted by psycopg2.sql."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from replicator.adapters.postgres.connection import (
    classify,
    connect,
    connection,
    translate_error,
)
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import (
    ConfigurationError,
    PipelineBusyError,
    SourceSchemaError,
    SourceUnavailableError,
)
from replicator.domain.lsn import Lsn
from replicator.domain.model import SlotState, SourceIdentity, TableId, TableSchema

log = logging.getLogger(__name__)

PLUGIN = "pgoutput"


def qualified(table: TableId) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def _table_list(tables: Sequence[TableId]) -> sql.Composed:
    return sql.SQL(", ").join(qualified(t) for t in tables)


def ensure_publication(settings: PostgresSettings, tables: Sequence[TableSchema]) -> None:
    """Create the publications for ``tables``, or add the ones they lack; check what they publish.

    Tables replicated by their inserts only (no key, no REPLICA IDENTITY FULL) go into a second
    publication that publishes inserts and TRUNCATEs only: in the main one, which publishes
    updates and deletes, PostgreSQL would refuse every UPDATE and DELETE on them.
    """
    every = [t.table_id for t in tables if not t.inserts_only]
    inserts = [t.table_id for t in tables if t.inserts_only]
    pub = settings.pub_name
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                _ensure(cur, pub, every, _EVERY_KIND)
                if inserts:
                    _ensure(cur, settings.inserts_pub_name, inserts, _INSERTS_ONLY)
                    _leave(cur, pub, inserts)
    except psycopg2.Error as e:
        raise translate_error(e, f"checking publication {pub!r}") from e


_EVERY_KIND = "insert, update, delete, truncate"
_INSERTS_ONLY = "insert, truncate"


def _ensure(
    cur: psycopg2.extensions.cursor, pub: str, wanted: Sequence[TableId], publish: str
) -> None:
    cur.execute(
        "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate "
        "FROM pg_publication WHERE pubname = %s",
        (pub,),
    )
    row = cur.fetchone()
    if row is None:
        options = [sql.SQL("publish = {}").format(sql.Literal(publish))]
        if cur.connection.server_version >= 130000:
            options.append(sql.SQL("publish_via_partition_root = true"))
        if cur.connection.server_version >= 180000:  # stored generated columns' values too
            options.append(sql.SQL("publish_generated_columns = stored"))
        statement = sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(pub))
        if wanted:
            statement += sql.SQL(" FOR TABLE {}").format(_table_list(wanted))
        statement += sql.SQL(" WITH ({})").format(sql.SQL(", ").join(options))
        _run_ddl(cur, statement, f"creating publication {pub!r}")
        log.info("created publication %s for %d tables (%s)", pub, len(wanted), publish)
        return
    all_tables, *kinds = row
    published = ", ".join(k for k, on in zip(_EVERY_KIND.split(", "), kinds, strict=True) if on)
    if published != publish:
        raise SourceSchemaError(
            f"publication {pub!r} publishes {published or 'nothing'}, not {publish}: run "
            f"ALTER PUBLICATION \"{pub}\" SET (publish = '{publish}')"
        )
    _refuse_partial(cur, pub, wanted)
    if all_tables:
        return
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (pub,)
    )
    published_tables = {TableId(s, n) for s, n in cur.fetchall()}
    missing = [t for t in wanted if t not in published_tables]
    if missing:
        statement = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(pub), _table_list(missing)
        )
        _run_ddl(cur, statement, f"adding tables to publication {pub!r}")
        log.info("added %s to publication %s", ", ".join(map(str, missing)), pub)


def _refuse_partial(cur: psycopg2.extensions.cursor, pub: str, wanted: Sequence[TableId]) -> None:
    """A publication made by hand must publish every row and column of the tables, and a
    partitioned table's changes under its own name (``publish_via_partition_root``): else the
    lake would silently differ (rows moving in and out of a filter, columns left NULL, a
    partitioned table's changes sent under its partitions' names, which the lake does not
    follow). Refused, naming every statement that fixes it."""
    if not wanted:
        return
    quoted = pub.replace('"', '""')
    problems, fixes = [], []
    if cur.connection.server_version >= 150000:  # row filters and column lists came with 15
        cur.execute(
            "SELECT n.nspname, c.relname, pg_get_expr(r.prqual, r.prrelid)"
            " FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
            " JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE p.pubname = %s AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL)"
            " ORDER BY 1, 2",
            (pub,),
        )
        wanted_set = set(wanted)
        for schema, name, row_filter in cur.fetchall():  # a filter, a column list, or both
            table = TableId(schema, name)
            if table not in wanted_set:
                continue
            problems.append(
                f"only the rows WHERE {row_filter} of {table}"
                if row_filter
                else f"only some of the columns of {table}"
            )
            target = qualified(table).as_string(cur)
            fixes += [
                f'ALTER PUBLICATION "{quoted}" DROP TABLE {target}',
                f'ALTER PUBLICATION "{quoted}" ADD TABLE {target}',
            ]
    cur.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'p' AND c.oid = ANY(%s::regclass[])"
        " AND NOT (SELECT pubviaroot FROM pg_publication WHERE pubname = %s) ORDER BY 1, 2",
        ([qualified(t).as_string(cur) for t in wanted], pub),
    )
    partitioned = [str(TableId(*r)) for r in cur.fetchall()]
    if partitioned:
        problems.append(f"the changes of {', '.join(partitioned)} under their partitions' names")
        fixes.append(f'ALTER PUBLICATION "{quoted}" SET (publish_via_partition_root = true)')
    if cur.connection.server_version >= 180000:
        cur.execute(
            "SELECT DISTINCT n.nspname, c.relname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE a.attgenerated = 's' AND NOT a.attisdropped AND c.oid = ANY(%s::regclass[])"
            " AND (SELECT pubgencols FROM pg_publication WHERE pubname = %s) <> 's' ORDER BY 1, 2",
            ([qualified(t).as_string(cur) for t in wanted], pub),
        )
        generated = [str(TableId(*r)) for r in cur.fetchall()]
        if generated:
            problems.append(f"no values of the stored generated columns of {', '.join(generated)}")
            fixes.append(f'ALTER PUBLICATION "{quoted}" SET (publish_generated_columns = stored)')
    if problems:
        raise SourceSchemaError(
            f"publication {pub!r} publishes {'; '.join(problems)}: the lake would not equal "
            f"the source; run {'; '.join(fixes)}"
        )


def _published(cur: psycopg2.extensions.cursor, pub: str) -> set[TableId]:
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (pub,)
    )
    return {TableId(s, n) for s, n in cur.fetchall()}


def _leave(cur: psycopg2.extensions.cursor, pub: str, tables: Sequence[TableId]) -> None:
    """Take insert-only tables out of the main publication (where an earlier set-up put them)."""
    cur.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s AND puballtables", (pub,)
    )
    if cur.fetchone() is not None:
        log.warning(
            "publication %s is FOR ALL TABLES and publishes updates and deletes: PostgreSQL "
            "refuses UPDATE and DELETE on %s (no key, no REPLICA IDENTITY FULL)",
            pub,
            ", ".join(map(str, tables)),
        )
        return
    cur.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (pub,)
    )
    inside = {TableId(s, n) for s, n in cur.fetchall()} & set(tables)
    if inside:
        statement = sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
            sql.Identifier(pub), _table_list(sorted(inside))
        )
        _run_ddl(cur, statement, f"taking insert-only tables out of publication {pub!r}")


def _run_ddl(cur: psycopg2.extensions.cursor, statement: sql.Composed, doing: str) -> None:
    try:
        cur.execute(statement)
    except psycopg2.errors.InsufficientPrivilege as e:
        raise ConfigurationError(
            f"{doing}: permission denied for this role; have a superuser or the tables' owner "
            f"run: {statement.as_string(cur)}"
        ) from e


def read_slot(settings: PostgresSettings, name: str | None = None) -> SlotState | None:
    """A replication slot (default: the configured name); None if it does not exist."""
    slot_name = name or settings.slot_name
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
                    (slot_name,),
                )
                row: dict[str, Any] | None = cur.fetchone()
    except psycopg2.Error as e:
        raise translate_error(e, f"reading replication slot {slot_name!r}") from e
    if row is None:
        return None
    if row["slot_type"] != "logical" or row["plugin"] != PLUGIN:
        raise ConfigurationError(
            f"replication slot {slot_name!r} exists but is a {row['slot_type']} slot "
            f"with plugin {row['plugin']!r}, not pgoutput: drop it with "
            f"SELECT pg_drop_replication_slot('{slot_name}') or choose another name "
            "with SOURCES__PG_REPLICATION__SLOT_NAME"
        )
    if row["datname"] != row["here"]:
        raise ConfigurationError(
            f"replication slot {slot_name!r} belongs to database {row['datname']!r}, "
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


def drop_slot(settings: PostgresSettings, name: str | None = None) -> bool:
    """Drop a slot (default: the configured name) if it exists; refuse while a consumer holds
    it. True if one was dropped."""
    slot_name = name or settings.slot_name
    slot = read_slot(settings, slot_name)
    if slot is None:
        return False
    if slot.active:
        raise ConfigurationError(
            f"replication slot {slot_name!r} is in use by another process (a running "
            "CDC job?): stop it first"
        )
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))
    except psycopg2.Error as e:
        raise translate_error(e, f"dropping replication slot {slot_name!r}") from e
    log.info("dropped replication slot %s", slot_name)
    return True


def copy_slot(settings: PostgresSettings, source: str, name: str) -> None:
    """A lasting copy of a (temporary) slot, at the same consistent point and restart LSN."""
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_copy_logical_replication_slot(%s, %s, false)", (source, name)
                )
    except psycopg2.Error as e:
        raise translate_error(e, f"creating replication slot {name!r}") from e
    log.info("created replication slot %s", name)


def slot_exists(settings: PostgresSettings, name: str) -> bool:
    """A replication slot of this name exists on the server, in whatever database."""
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,))
                return cur.fetchone() is not None
    except psycopg2.Error as e:
        raise translate_error(e, f"looking for replication slot {name!r}") from e


def _lock_key(name: str) -> int:
    """A 64-bit advisory lock key for a pipeline (signed, as pg_advisory_lock takes it)."""
    digest = hashlib.blake2b(f"replicator:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def pipeline_lock(settings: PostgresSettings) -> Iterator[None]:
    """Hold the pipeline (its configured slot name, on this server) for one run: a session
    advisory lock, released when the connection ends, also when the process is killed."""
    conn = connect(settings)
    key = _lock_key(settings.slot_name)
    held = False
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            row = cur.fetchone()
        if not (row and row[0]):
            raise PipelineBusyError(
                f"another run of this pipeline (slot {settings.slot_name!r}) is in progress: "
                "a snapshot and CDC never run at once; this one can be run again when it ends"
            )
        held = True
        yield
    except psycopg2.Error as e:
        raise translate_error(e, "taking the pipeline's lock") from e
    finally:
        # Released explicitly: closing the connection frees it only once the server has
        # ended the session, a moment later, and a run started right after (verify's drain
        # then its read, a re-snapshot after CDC) would find the pipeline busy.
        if held and not conn.closed:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg2.Error:
                pass  # the session is gone, and the lock with it
        conn.close()


def source_identity(settings: PostgresSettings) -> SourceIdentity:
    """The server's system identifier and the database's name. A managed service that hides
    ``pg_control_system()`` gives the database's name alone (system identifier "")."""
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                database = cur.fetchone()
                try:
                    cur.execute("SELECT system_identifier::text FROM pg_control_system()")
                    system = cur.fetchone()
                except psycopg2.Error as e:
                    if classify(e) is SourceUnavailableError:
                        raise
                    log.debug("pg_control_system() unavailable: %s", e)
                    system = ("",)
    except psycopg2.Error as e:
        raise translate_error(e, "identifying the source server") from e
    assert database is not None and system is not None
    return SourceIdentity(system[0] or "", database[0], embedded=settings.embedded)


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


def drop_publication(settings: PostgresSettings, pub: str) -> bool:
    """Drop a publication if it exists. True if it was dropped."""
    try:
        with connection(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,))
                if cur.fetchone() is None:
                    return False
                statement = sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(pub))
                _run_ddl(cur, statement, f"dropping publication {pub!r}")
    except psycopg2.Error as e:
        raise translate_error(e, f"dropping publication {pub!r}") from e
    log.info("dropped publication %s", pub)
    return True


@contextmanager
def temporary_slot_snapshot(
    settings: PostgresSettings, purpose: str
) -> Iterator[tuple[str, Lsn, str]]:
    """The snapshot a new TEMPORARY replication slot exports, its consistent point and the
    slot's name: valid while the slot's connection stays idle; the server drops the slot when
    it closes."""
    replication = connect(settings, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        name = f"replicator_{purpose}_{os.getpid()}"
        try:
            with replication.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT")
                    .format(sql.Identifier(name))
                    .as_string(replication)
                )
                row = cur.fetchone()
        except psycopg2.Error as e:
            raise translate_error(e, f"exporting a snapshot ({purpose})") from e
        assert row is not None
        _, point, snapshot, _ = row
        yield snapshot, Lsn.parse(point), name
    finally:
        replication.close()
