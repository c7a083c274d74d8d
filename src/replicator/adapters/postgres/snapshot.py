"""Consistent multi-table snapshot reads: dlt's ``sql_database`` source with an ADBC loader.

One coordinating transaction (REPEATABLE READ) exports its snapshot; every table is then read
by dlt's ``sql_table`` resource through :class:`AdbcSnapshotTableLoader`, which opens its own
ADBC connection, joins the exported snapshot (``SET TRANSACTION SNAPSHOT``) and streams the
table with binary COPY straight into Arrow record batches: no Python object per row. All tables
therefore see exactly the same committed state, however long the snapshot takes and whatever
writers do meanwhile. The same mechanism joins the snapshot a replication slot exports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg2
import pyarrow as pa
import sqlalchemy as sa
from dlt.sources.sql_database import BaseTableLoader, sql_table

from replicator.adapters.postgres.arrow_types import (
    ColumnTransport,
    conform_batch,
    quote_ident,
    target_schema,
    transport_for,
)
from replicator.adapters.postgres.connection import connect, redact, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import SourceReadError, SourceUnavailableError
from replicator.domain.lsn import Lsn
from replicator.domain.model import RowBatch, TableSchema
from replicator.domain.ports import SnapshotReader, SnapshotSource

log = logging.getLogger(__name__)

# Text output settings shared by snapshot and CDC, so both produce the same strings.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "bytea_output": "hex",
    "extra_float_digits": "3",
}
_BATCH_SIZE_HINT_BYTES = 64 * 1024 * 1024


def _set_local_sql() -> list[str]:
    return [f"SET LOCAL {name} TO '{value}'" for name, value in SESSION_SETTINGS.items()]


class AdbcSnapshotTableLoader(BaseTableLoader):
    """A ``sql_table`` loader that reads one table inside an exported snapshot via ADBC.

    Receives through ``backend_kwargs``: ``dsn``, ``snapshot`` (the exported snapshot name),
    ``table`` (the domain ``TableSchema``).
    """

    def load_rows(self, backend_kwargs: dict[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        kwargs = backend_kwargs or {}
        table: TableSchema = kwargs["table"]
        transports = [transport_for(c) for c in table.columns]
        schema = target_schema(transports)
        query = self._select(table, transports)
        try:
            conn = adbc.connect(kwargs["dsn"])
        except adbc_driver_manager.Error as e:
            raise SourceUnavailableError(
                f"cannot open a snapshot reader connection: {redact(str(e)).splitlines()[0]}"
            ) from e
        try:
            cur = conn.cursor()
            try:
                cur.adbc_statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(_BATCH_SIZE_HINT_BYTES)}
                )
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{kwargs['snapshot']}'")
                for statement in _set_local_sql():
                    cur.execute(statement)
                cur.execute(query)
                reader = cur.fetch_record_batch()
                empty = True
                for batch in reader:
                    if batch.num_rows:
                        empty = False
                        yield conform_batch(table.table_id, batch, transports, schema)
                if empty:
                    # An empty table still becomes a lake table with every column.
                    yield pa.RecordBatch.from_pylist([], schema=schema)
            finally:
                cur.close()
            conn.rollback()
        except adbc_driver_manager.Error as e:
            raise SourceReadError(
                f"reading {table.table_id} failed: {redact(str(e)).splitlines()[0]}"
            ) from e
        finally:
            conn.close()

    @staticmethod
    def _select(table: TableSchema, transports: list[ColumnTransport]) -> str:
        columns = ", ".join(t.select_sql for t in transports)
        source = f"{quote_ident(table.table_id.schema)}.{quote_ident(table.table_id.name)}"
        return f"SELECT {columns} FROM {source}"


class _ExportedSnapshotReader(SnapshotReader):
    def __init__(self, dsn: str, engine: sa.Engine, snapshot: str, position: Lsn | None) -> None:
        self._dsn = dsn
        self._engine = engine
        self._snapshot = snapshot
        self._position = position

    @property
    def position(self) -> Lsn | None:
        return self._position

    def read(self, table: TableSchema) -> Iterator[RowBatch]:
        resource = sql_table(
            credentials=self._engine,
            table=table.table_id.name,
            schema=table.table_id.schema,
            backend="pyarrow",
            reflection_level="minimal",
            defer_table_reflect=True,
            table_loader_class=AdbcSnapshotTableLoader,
            backend_kwargs={"dsn": self._dsn, "snapshot": self._snapshot, "table": table},
        )
        yield from resource


class SqlDatabaseSnapshotSource(SnapshotSource):
    """Snapshots through dlt's ``sql_database`` source, all tables in one exported snapshot."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def open(self, tables: Sequence[TableSchema]) -> AbstractContextManager[SnapshotReader]:
        return self._open()

    @contextmanager
    def _open(self) -> Iterator[SnapshotReader]:
        coordinator = connect(self._settings)
        engine = sa.create_engine(
            _sqlalchemy_url(self._settings.dsn),
            connect_args={"connect_timeout": self._settings.connect_timeout_s},
            poolclass=sa.pool.NullPool,
        )
        try:
            try:
                coordinator.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with coordinator.cursor() as cur:
                    cur.execute("SELECT pg_export_snapshot(), pg_current_wal_lsn()::text")
                    snapshot, lsn = cur.fetchone()
            except psycopg2.Error as e:
                raise translate_error(e, "exporting a snapshot of the source") from e
            log.debug("exported snapshot %s at %s", snapshot, lsn)
            yield _ExportedSnapshotReader(self._settings.dsn, engine, snapshot, Lsn.parse(lsn))
        finally:
            engine.dispose()
            coordinator.close()


def _sqlalchemy_url(dsn: str) -> sa.URL:
    """SQLAlchemy needs the driver named; psycopg2 is what this project ships."""
    url = sa.make_url(dsn)
    return url.set(drivername="postgresql+psycopg2")
