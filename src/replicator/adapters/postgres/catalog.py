"""Discovers the replicated tables from PostgreSQL's system catalogs."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable

import psycopg2

from replicator.adapters.postgres.connection import connection, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.model import ColumnSchema, ReplicaIdentity, TableId, TableSchema
from replicator.domain.ports import TableCatalog

log = logging.getLogger(__name__)

# Ordinary and partitioned tables; partitions are read through their root.
_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND n.nspname = ANY(%s)
ORDER BY n.nspname, c.relname
"""

# Domains are resolved to their base type: values travel in the base type's representation.
_COLUMNS_SQL = """
SELECT a.attrelid,
       a.attname,
       format_type(a.atttypid, a.atttypmod) AS pg_type,
       a.atttypid,
       a.attnotnull,
       base.typname,
       base.typtype,
       base.typcategory = 'A' AS is_array,
       elem.typname AS elem_typname,
       elem.typtype AS elem_typtype,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS domain_base,
       a.attnum,
       a.atttypmod
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type elem ON elem.oid = base.typelem AND base.typcategory = 'A'
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_TABLE_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

# The first (only) element of attmissingval, as text: what rows older than the column hold.
_MISSING_VALUES_SQL = """
SELECT a.attname, (a.attmissingval::text::text[])[1]
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND a.atthasmissing AND NOT a.attisdropped
"""

_PRIMARY_KEYS_SQL = """
SELECT i.indrelid, a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indisprimary AND i.indrelid = ANY(%s)
ORDER BY i.indrelid, k.pos
"""


def _matches(table: TableId, patterns: Iterable[str]) -> bool:
    """A pattern matches ``name`` or ``schema.name``; shell wildcards are allowed."""
    return any(
        fnmatch.fnmatchcase(table.name, p) or fnmatch.fnmatchcase(str(table), p) for p in patterns
    )


def is_text_column(table: TableId, column: str, patterns: Iterable[str]) -> bool:
    """A ``text_columns`` pattern matches ``table.column`` or ``schema.table.column``."""
    return _matches(TableId(table.schema, f"{table.name}.{column}"), patterns)


def select_tables(
    candidates: Iterable[TableId], include: Iterable[str], exclude: Iterable[str]
) -> list[TableId]:
    """Apply the naming rules: dlt's own ``_dlt*`` tables never, then include, then exclude."""
    include, exclude = tuple(include), tuple(exclude)
    chosen = []
    for table in candidates:
        if table.name.startswith("_dlt"):
            continue
        if include and not _matches(table, include):
            continue
        if exclude and _matches(table, exclude):
            continue
        chosen.append(table)
    return chosen


class PostgresTableCatalog(TableCatalog):
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def discover(self) -> list[TableSchema]:
        with connection(self._settings) as conn:
            try:
                conn.set_session(readonly=True, autocommit=True)
                with conn.cursor() as cur:
                    return self._discover(cur)
            except psycopg2.Error as e:
                raise translate_error(e, "reading the source catalog") from e

    def _discover(self, cur: psycopg2.extensions.cursor) -> list[TableSchema]:
        cur.execute(_TABLES_SQL, (list(self._settings.schemas),))
        rows = {oid: (TableId(schema, name), ident) for oid, schema, name, ident in cur.fetchall()}
        wanted = set(
            select_tables(
                (t for t, _ in rows.values()), self._settings.include, self._settings.exclude
            )
        )
        return self._describe(cur, {oid: r for oid, r in rows.items() if r[0] in wanted})

    def describe(self, table: TableId) -> tuple[TableSchema | None, dict[str, str]]:
        """One table's shape now, and the value that rows older than each column hold for it
        (``attmissingval``: columns added with a constant default), as PostgreSQL prints it."""
        with connection(self._settings) as conn:
            try:
                conn.set_session(readonly=True, autocommit=True)
                with conn.cursor() as cur:
                    cur.execute(_TABLE_SQL, (table.schema, table.name))
                    rows = {oid: (TableId(sch, name), ident) for oid, sch, name, ident in cur}
                    found = self._describe(cur, rows)
                    if not found:
                        return None, {}
                    cur.execute(_MISSING_VALUES_SQL, (list(rows),))
                    missing = {name: first for name, first in cur.fetchall()}
                    return found[0], missing
            except psycopg2.Error as e:
                raise translate_error(e, f"reading the shape of {table}") from e

    def _describe(
        self, cur: psycopg2.extensions.cursor, rows: dict[int, tuple[TableId, str]]
    ) -> list[TableSchema]:
        oids = list(rows)
        if not oids:
            return []

        columns: dict[int, list[ColumnSchema]] = {oid: [] for oid in oids}
        cur.execute(_COLUMNS_SQL, (oids,))
        for (
            relid, name, pg_type, type_oid, notnull, typname, typtype, is_array,
            elem_typname, elem_typtype, domain_base, attnum, typmod,
        ) in cur.fetchall():  # fmt: skip
            as_text = is_text_column(rows[relid][0], name, self._settings.text_columns)
            columns[relid].append(
                ColumnSchema(
                    name=name,
                    pg_type=domain_base or pg_type,
                    type_oid=type_oid,
                    nullable=not notnull,
                    base_type=elem_typname if is_array else typname,
                    is_array=bool(is_array),
                    type_kind=(elem_typtype if is_array else typtype) or "b",
                    as_text=as_text,
                    attnum=attnum,
                    typmod=typmod,
                )
            )

        keys: dict[int, list[str]] = {oid: [] for oid in oids}
        cur.execute(_PRIMARY_KEYS_SQL, (oids,))
        for relid, name in cur.fetchall():
            keys[relid].append(name)

        tables = []
        for oid in oids:
            table_id, ident = rows[oid]
            tables.append(
                TableSchema(
                    table_id=table_id,
                    columns=tuple(columns[oid]),
                    primary_key=tuple(keys[oid]),
                    replica_identity=ReplicaIdentity(ident),
                )
            )
        tables.sort(key=lambda t: t.table_id)
        log.debug(
            "discovered %d tables: %s", len(tables), ", ".join(str(t.table_id) for t in tables)
        )
        return tables
