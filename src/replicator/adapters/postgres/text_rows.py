"""The source's rows as PostgreSQL's text output, for ``verify``.

Read inside the snapshot a TEMPORARY replication slot exports (the server drops the slot when
its connection closes), through a server-side cursor a batch at a time, with psycopg2 told to
hand back every value as the text the server sent: each type's output function under the
replicator's session settings, decoded by nothing of the replicator's (the domain's
``verify_values`` reads it). Nothing here is shared with the snapshot path that writes the lake.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from replicator.adapters.postgres.connection import SESSION_SETTINGS, connect, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import temporary_slot_snapshot
from replicator.domain.lsn import Lsn
from replicator.domain.model import TableSchema
from replicator.domain.ports import SourceRowReader, SourceTextReader, TextRow

BATCH_ROWS = 20_000


def _as_sent(value: str | None, cursor: Any) -> str | None:
    return value


class PostgresTextRows(SourceRowReader):
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def consistent_point(self) -> AbstractContextManager[tuple[SourceTextReader, Lsn]]:
        return self._consistent_point()

    @contextmanager
    def _consistent_point(self) -> Iterator[tuple[SourceTextReader, Lsn]]:
        with temporary_slot_snapshot(self._settings, "verify") as (snapshot, position, _):
            conn = connect(self._settings)
            try:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                    for name, value in SESSION_SETTINGS.items():
                        cur.execute(f"SET LOCAL {name} TO %s", (value,))
                    cur.execute("SELECT oid FROM pg_type")
                    oids = tuple(int(row[0]) for row in cur.fetchall())
            except psycopg2.Error as e:
                conn.close()
                raise translate_error(e, "opening the source for verify") from e
            # Every type, arrays and domains included: the server's text, as it came.
            as_sent = psycopg2.extensions.new_type(oids, "REPLICATOR_AS_SENT", _as_sent)
            psycopg2.extensions.register_type(as_sent, conn)
            try:
                yield _TextReader(conn), position
            finally:
                conn.close()


def _relation(table: TableSchema) -> sql.Composed:
    return sql.SQL("{}.{}").format(
        sql.Identifier(table.table_id.schema), sql.Identifier(table.table_id.name)
    )


def _columns(table: TableSchema) -> sql.Composable:
    if not table.columns:
        return sql.SQL("")
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)


class _TextReader(SourceTextReader):
    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self._conn = conn
        self._cursors = itertools.count()

    def batches(self, table: TableSchema) -> Iterator[Sequence[TextRow]]:
        query = sql.SQL("SELECT {} FROM {}").format(_columns(table), _relation(table))
        name = f"replicator_verify_{next(self._cursors)}"
        try:
            with self._conn.cursor(name=name) as cur:
                cur.itersize = BATCH_ROWS
                cur.execute(query)
                while rows := cur.fetchmany(BATCH_ROWS):
                    yield rows
        except psycopg2.Error as e:
            raise translate_error(e, f"reading {table.table_id} for verify") from e

    def sample(self, table: TableSchema, rows: int, seed: int) -> Sequence[TextRow]:
        estimate = self.estimate(table)
        percent = 100.0 if estimate <= rows else 100.0 * rows / estimate
        query = sql.SQL(
            "SELECT {} FROM {} TABLESAMPLE SYSTEM (%s) REPEATABLE (%s) LIMIT %s"
        ).format(_columns(table), _relation(table))
        found: Sequence[TextRow] = self._all(query, (percent, seed, 2 * rows), table)
        return found

    def count(self, table: TableSchema) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(_relation(table))
        ((found,),) = self._all(query, (), table)
        return int(found or 0)

    def estimate(self, table: TableSchema) -> int:
        """The planner's row estimate of the table (its partitions summed), 0 if unknown."""
        query = sql.SQL(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint "
            "FROM pg_partition_tree(%s::regclass) p JOIN pg_class c ON c.oid = p.relid "
            "WHERE p.isleaf"
        )
        ((found,),) = self._all(query, (_relation(table).as_string(self._conn),), table)
        return int(found or 0)

    def _all(self, query: sql.Composable, args: Sequence[Any], table: TableSchema) -> Any:
        try:
            with self._conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        except psycopg2.Error as e:
            raise translate_error(e, f"reading {table.table_id} for verify") from e
