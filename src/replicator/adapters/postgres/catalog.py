"""Discovers the replicated tables from PostgreSQL's system catalogs."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg2

from replicator.adapters.postgres.connection import connect, startup_options, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import SourceSchemaError
from replicator.domain.model import ColumnSchema, ReplicaIdentity, TableId, TableSchema
from replicator.domain.ports import TableCatalog

log = logging.getLogger(__name__)

# Ordinary and partitioned tables; partitions are read through their root.
_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relpersistence = 'u' AS unlogged
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND n.nspname = ANY(%s)
ORDER BY n.nspname, c.relname
"""

# What a column's type is, from pg_type ``t`` (the column's) joined as ``base`` (a domain's base
# type, else itself) and ``elem`` (an array's element type). Domains are resolved to their base
# type: values travel in the base type's representation.
_TYPE_FACTS = """
       base.typname,
       base.typtype,
       base.typcategory = 'A' AS is_array,
       elem.typname AS elem_typname,
       elem.typtype AS elem_typtype,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS domain_base,
       coalesce(elem.typdelim, ',') AS delimiter
"""
_TYPE_JOINS = """
JOIN pg_type base ON base.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type elem ON elem.oid = base.typelem AND base.typcategory = 'A'
"""

# Generated columns whose values the stream does not carry, so CDC computes them: virtual ones
# (PostgreSQL 18+) always; stored ones up to 17 (from 18 the publication publishes them:
# publish_generated_columns = stored).
_UNPUBLISHED = (
    "(a.attgenerated = 'v' OR (a.attgenerated = 's' "
    "AND current_setting('server_version_num')::int < 180000))"
)

# How a column's values print, for the types whose text can change without a row being
# rewritten (so without WAL): every enum and composite type its type reaches (through arrays,
# domains and composite attributes, nested ones included), an enum as its labels by oid
# (RENAME VALUE keeps the oid), a composite as its attribute types in order (ADD, DROP and
# ALTER ATTRIBUTE change its text). NULL when it reaches none.
_SIGNATURE = """(
  WITH RECURSIVE reach(oid) AS (
    SELECT a.atttypid
    UNION
    SELECT x.next FROM reach r JOIN pg_type rt ON rt.oid = r.oid
    CROSS JOIN LATERAL (
      SELECT rt.typbasetype AS next WHERE rt.typtype = 'd'
      UNION ALL SELECT rt.typelem WHERE rt.typcategory = 'A' AND rt.typelem <> 0
      UNION ALL SELECT ca.atttypid FROM pg_attribute ca
        WHERE rt.typtype = 'c' AND ca.attrelid = rt.typrelid AND ca.attnum > 0
          AND NOT ca.attisdropped
    ) x
  )
  SELECT CASE WHEN bool_or(t.typtype IN ('e', 'c')) THEN json_build_object(
    'e', coalesce(json_object_agg(t.oid, (
        SELECT json_object_agg(e.oid, e.enumlabel ORDER BY e.oid)
        FROM pg_enum e WHERE e.enumtypid = t.oid)) FILTER (WHERE t.typtype = 'e'), '{}'),
    'c', coalesce(json_object_agg(t.oid, (
        SELECT json_agg(json_build_array(ca.atttypid, ca.atttypmod) ORDER BY ca.attnum)
        FROM pg_attribute ca
        WHERE ca.attrelid = t.typrelid AND ca.attnum > 0 AND NOT ca.attisdropped))
      FILTER (WHERE t.typtype = 'c'), '{}'))::text END
  FROM reach r JOIN pg_type t ON t.oid = r.oid)"""

_COLUMNS_SQL = f"""
SELECT a.attrelid,
       a.attname,
       format_type(a.atttypid, a.atttypmod) AS pg_type,
       a.atttypid,
       a.attnotnull,
       {_TYPE_FACTS},
       a.attnum,
       a.atttypmod,
       CASE WHEN {_UNPUBLISHED} THEN pg_get_expr(d.adbin, d.adrelid) END AS generated,
       a.attgenerated = 'v' AS virtual,
       CASE WHEN {_UNPUBLISHED} THEN ARRAY(
           SELECT r.attname FROM pg_depend dep
           JOIN pg_attribute r ON r.attrelid = dep.refobjid AND r.attnum = dep.refobjsubid
           WHERE dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
             AND dep.refobjid = a.attrelid AND dep.refobjsubid > 0
           ORDER BY r.attnum) END AS generated_from,
       {_SIGNATURE} AS type_signature
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
{_TYPE_JOINS}
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# A type by oid and typmod alone: for a column the catalog no longer has in that shape.
_TYPE_SQL = f"""
SELECT format_type(t.oid, %s), {_TYPE_FACTS}
FROM pg_type t
{_TYPE_JOINS}
WHERE t.oid = %s
"""

_TABLE_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relpersistence = 'u' AS unlogged
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

# The first (only) element of attmissingval, as text: what rows older than the column hold.
# Columns with a default: the value older rows hold when PostgreSQL recorded it (a constant
# default added without rewriting the table), else NULL (the table was rewritten: a volatile
# default, or a later ALTER ... TYPE, stored the values in the rows themselves).
_MISSING_VALUES_SQL = """
SELECT a.attname, CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END
FROM pg_attribute a
WHERE a.attrelid = ANY(%s) AND (a.atthasmissing OR a.atthasdef) AND NOT a.attisdropped
"""

# Attnums of a table's dropped columns: pg_attribute keeps them (never reused), so they bound
# where the columns of an older Relation message can lie.
_DROPPED_ATTNUMS_SQL = """
SELECT a.attnum
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attisdropped AND a.attnum > 0
"""

# A row's identity in the WAL, and so the lake's key: the index of REPLICA IDENTITY USING INDEX
# when the table has one (unique, NOT NULL columns; the old key the WAL carries is its columns,
# whatever the primary key), else the primary key. ``deferrable``: the key's constraint may be
# violated for a moment inside a transaction (DEFERRABLE), which no replica identity index can be.
_PRIMARY_KEYS_SQL = """
SELECT i.indrelid, i.indexrelid, a.attname, NOT i.indimmediate AS deferrable
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE (i.indisprimary OR i.indisreplident) AND i.indrelid = ANY(%s)
ORDER BY i.indrelid, (c.relreplident = 'i' AND i.indisreplident) DESC, i.indisprimary DESC,
         k.pos
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
    """``keep_open``: one connection for every lookup until ``close()`` (the change stream asks
    for a table's shape at each of its Relation messages), else one per call."""

    def __init__(
        self, settings: PostgresSettings, *, keep_open: bool = False, warn_left_out: bool = True
    ) -> None:
        self._settings = settings
        self._keep_open = keep_open
        self._warn_left_out = warn_left_out
        self._conn: psycopg2.extensions.connection | None = None
        self._warned: set[TableId] = set()  # keyless tables already warned about
        self._left_out: list[TableSchema] = []

    @contextmanager
    def _reading(self, doing: str) -> Iterator[psycopg2.extensions.cursor]:
        """A read-only autocommit cursor; PostgreSQL errors become one-line errors.

        Under the stream's fixed session settings: the catalog prints values too (the defaults
        older rows hold, ``attmissingval``), and they must read as the stream's do, whatever
        IntervalStyle, extra_float_digits or bytea_output the database or role sets."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = connect(self._settings, options=startup_options())
            if self._keep_open:
                self._conn = conn
        try:
            conn.set_session(readonly=True, autocommit=True)
            with conn.cursor() as cur:
                yield cur
        except psycopg2.Error as e:
            raise translate_error(e, doing) from e
        finally:
            if not self._keep_open:
                conn.close()

    def idle_sockets(self) -> list[Any]:
        """The kept-open connection, for a caller that waits on sockets: while no query runs,
        anything it can read is the server ending the session."""
        conn = self._conn
        return [conn] if conn is not None and not conn.closed else []

    def query(self, statement: Any, params: Sequence[Any], doing: str) -> list[tuple[Any, ...]]:
        """A read-only query of the source on the catalog's connection (its fixed session
        settings), e.g. the values of generated columns."""
        with self._reading(doing) as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def discover(self) -> list[TableSchema]:
        with self._reading("reading the source catalog") as cur:
            return self._discover(cur)

    def _discover(self, cur: psycopg2.extensions.cursor) -> list[TableSchema]:
        cur.execute(_TABLES_SQL, (list(self._settings.schemas),))
        rows, unlogged = {}, []
        for oid, schema, name, ident, is_unlogged in cur.fetchall():
            rows[oid] = (TableId(schema, name), ident)
            if is_unlogged:
                unlogged.append(oid)
        wanted = set(
            select_tables(
                (t for t, _ in rows.values()), self._settings.include, self._settings.exclude
            )
        )
        found = self._describe(cur, {oid: r for oid, r in rows.items() if r[0] in wanted})
        skipped = {rows[oid][0] for oid in unlogged}
        self._left_out = [attrs.evolve(t, unlogged=True) for t in found if t.table_id in skipped]
        for table in self._left_out:
            self._warn_once(
                table.table_id,
                "%s is UNLOGGED: its changes are not in the WAL, so logical replication cannot "
                "see them; it is left out (ALTER TABLE %s SET LOGGED to replicate it)",
                table.table_id,
                table.quoted_name(),
            )
        return self._keyless_policy([t for t in found if t.table_id not in skipped])

    def left_out(self) -> list[TableSchema]:
        return list(self._left_out)

    def dropped_attnums(self, table: TableId) -> frozenset[int]:
        """The attnums the table's dropped columns had."""
        with self._reading(f"reading the dropped columns of {table}") as cur:
            cur.execute(_DROPPED_ATTNUMS_SQL, (table.schema, table.name))
            return frozenset(int(attnum) for (attnum,) in cur.fetchall())

    def column_of_type(self, table: TableId, name: str, type_oid: int, typmod: int) -> ColumnSchema:
        """A column described by its type alone (attnum unknown): what a Relation message says
        of a column whose shape the catalog has changed again since."""
        with self._reading(f"reading the type of {table}.{name}") as cur:
            cur.execute(_TYPE_SQL, (typmod, type_oid))
            facts = cur.fetchone()
        if facts is None:
            raise SourceSchemaError(
                f"{table}.{name}: its type (oid {type_oid}) no longer exists; re-run "
                "`replicator --mode snapshot`"
            )
        return self._column(table, name, facts, type_oid=type_oid, typmod=typmod)

    def _column(
        self, table: TableId, name: str, facts: Sequence[Any], **known: Any
    ) -> ColumnSchema:
        pg_type, typname, typtype, is_array, elem_typname, elem_typtype, domain_base, delim = facts
        return ColumnSchema(
            name=name,
            pg_type=domain_base or pg_type,
            base_type=elem_typname if is_array else typname,
            is_array=bool(is_array),
            type_kind=(elem_typtype if is_array else typtype) or "b",
            as_text=is_text_column(table, name, self._settings.text_columns),
            delimiter=str(delim or ","),
            **known,
        )

    def _keyless_policy(self, tables: list[TableSchema]) -> list[TableSchema]:
        """Tables whose updates and deletes cannot be matched (no key, no REPLICA IDENTITY
        FULL): left out, or replicated by their inserts only (``keyless_tables``)."""
        kept = []
        for table in tables:
            if table.primary_key or table.keyless_full:
                kept.append(table)
                continue
            if self._settings.keyless_tables == "insert_only":
                kept.append(attrs.evolve(table, inserts_only=True))
                effect = "only its inserts and TRUNCATEs are replicated"
            else:
                self._left_out.append(table)
                effect = 'it is left out (keyless_tables = "insert_only" replicates its inserts)'
            self._warn_once(
                table.table_id,
                "%s has no primary key and no REPLICA IDENTITY FULL, so its updates and "
                "deletes cannot be matched: %s; to replicate them: %s",
                table.table_id,
                effect,
                table.fix_sql(),
            )
        return kept

    def _warn_once(self, table: TableId, message: str, *args: object) -> None:
        if self._warn_left_out and table not in self._warned:
            self._warned.add(table)
            log.warning(message, *args)

    def describe(self, table: TableId) -> tuple[TableSchema | None, dict[str, str | None]]:
        """One table's shape now, and for each column with a default the value rows older than
        the column hold (``attmissingval``), as PostgreSQL prints it; None where PostgreSQL
        wrote the values into the rows instead (they are then unknown to the stream)."""
        with self._reading(f"reading the shape of {table}") as cur:
            cur.execute(_TABLE_SQL, (table.schema, table.name))
            rows = {oid: (TableId(sch, name), ident) for oid, sch, name, ident, _ in cur}
            found = self._describe(cur, rows)
            if not found:
                return None, {}
            cur.execute(_MISSING_VALUES_SQL, (list(rows),))
            missing = {name: first for name, first in cur.fetchall()}
            return found[0], missing

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
            elem_typname, elem_typtype, domain_base, delimiter, attnum, typmod, generated,
            virtual, generated_from, type_signature,
        ) in cur.fetchall():  # fmt: skip
            facts = (typname, typtype, is_array, elem_typname, elem_typtype, domain_base, delimiter)
            columns[relid].append(
                self._column(
                    rows[relid][0],
                    name,
                    (pg_type, *facts),
                    type_oid=type_oid,
                    nullable=not notnull,
                    attnum=attnum,
                    typmod=typmod,
                    generated=generated,
                    generated_from=tuple(generated_from or ()),
                    virtual=bool(virtual),
                    type_signature=type_signature,
                )
            )

        keys: dict[int, list[str]] = {oid: [] for oid in oids}
        index_of: dict[int, int] = {}
        deferrable: set[int] = set()
        cur.execute(_PRIMARY_KEYS_SQL, (oids,))
        for relid, index, name, is_deferrable in cur.fetchall():
            if index_of.setdefault(relid, index) == index:  # the identity's index comes first
                keys[relid].append(name)
                if is_deferrable:
                    deferrable.add(relid)

        tables = []
        for oid in oids:
            table_id, ident = rows[oid]
            tables.append(
                TableSchema(
                    table_id=table_id,
                    columns=tuple(columns[oid]),
                    primary_key=tuple(keys[oid]),
                    replica_identity=ReplicaIdentity(ident),
                    deferrable_key=oid in deferrable,
                )
            )
        tables.sort(key=lambda t: t.table_id)
        log.debug(
            "discovered %d tables: %s", len(tables), ", ".join(str(t.table_id) for t in tables)
        )
        return tables
