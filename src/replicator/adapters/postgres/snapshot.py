"""Consistent multi-table snapshot reads: dlt's ``sql_database`` source with an ADBC loader.

One coordinating transaction (REPEATABLE READ) exports its snapshot; every table is then read
by dlt's ``sql_table`` resource through :class:`AdbcSnapshotTableLoader`, which opens its own
ADBC connection, joins the exported snapshot (``SET TRANSACTION SNAPSHOT``) and streams the
table with binary COPY straight into Arrow record batches: no Python object per row. All tables
therefore see exactly the same committed state, however long the snapshot takes and whatever
writers do meanwhile. The same mechanism joins the snapshot a replication slot exports.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import psycopg2
import psycopg2.extras
import pyarrow as pa
import sqlalchemy as sa
from dlt.sources.sql_database import BaseTableLoader, sql_table

from replicator.adapters.postgres import full_rows
from replicator.adapters.postgres.arrow_types import (
    ColumnTransport,
    conform_batch,
    meta_arrays,
    quote_ident,
    select_list,
    target_schema,
    transports_for,
)
from replicator.adapters.postgres.connection import (
    SESSION_SETTINGS,
    connect,
    redact,
    translate_error,
)
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import copy_slot, temporary_slot_snapshot
from replicator.adapters.postgres.text_values import column_from_text
from replicator.domain.errors import ConfigurationError, SourceReadError, SourceUnavailableError
from replicator.domain.lsn import Lsn
from replicator.domain.model import RowBatch, TableSchema
from replicator.domain.ports import SnapshotReader, SnapshotSource

log = logging.getLogger(__name__)

_BATCH_SIZE_HINT_BYTES = 64 * 1024 * 1024


def _set_local_sql() -> list[str]:
    return [f"SET LOCAL {name} TO '{value}'" for name, value in SESSION_SETTINGS.items()]


class AdbcSnapshotTableLoader(BaseTableLoader):
    """A ``sql_table`` loader that reads one table inside an exported snapshot via ADBC.

    Receives through ``backend_kwargs``: ``dsn``, ``snapshot`` (the exported snapshot name),
    ``table`` (the domain ``TableSchema``), ``lsn`` (the snapshot's position, for the table's
    ``lsn`` column).
    """

    def load_rows(self, backend_kwargs: dict[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        kwargs = backend_kwargs or {}
        table: TableSchema = kwargs["table"]
        transports = transports_for(table)
        schema = target_schema(transports, table.lake_columns)
        lsn: int | None = kwargs.get("lsn")
        query = self._select(table, transports)
        if table.keyless_full:  # one row per distinct row image, with its count
            schema = pa.schema([*schema, *full_rows.fields(table.lake_columns)])
            query = full_rows.grouped_select(table)
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
                    if not batch.num_rows:
                        continue
                    empty = False
                    if table.keyless_full:
                        meta = meta_arrays(batch.num_rows, lsn)
                        yield full_rows.snapshot_batch(
                            batch, transports, meta, schema, column_from_text
                        )
                    else:
                        yield conform_batch(
                            batch, transports, schema, lsn, from_text=column_from_text
                        )
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
        source = f"{quote_ident(table.table_id.schema)}.{quote_ident(table.table_id.name)}"
        return f"SELECT {select_list(transports)} FROM {source}"


class _ExportedSnapshotReader(SnapshotReader):
    def __init__(
        self,
        dsn: str,
        engine: sa.Engine,
        snapshot: str,
        position: Lsn | None,
        keep: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._engine = engine
        self._snapshot = snapshot
        self._position = position
        self._keep = keep

    @property
    def position(self) -> Lsn | None:
        return self._position

    def keep_slot(self) -> None:
        if self._keep is not None:
            self._keep()
            self._keep = None

    def read(self, table: TableSchema) -> Iterator[RowBatch]:
        resource = sql_table(
            credentials=self._engine,
            table=table.table_id.name,
            schema=table.table_id.schema,
            backend="pyarrow",
            reflection_level="minimal",
            defer_table_reflect=True,
            table_loader_class=AdbcSnapshotTableLoader,
            backend_kwargs={
                "dsn": self._dsn,
                "snapshot": self._snapshot,
                "table": table,
                "lsn": None if self._position is None else int(self._position),
            },
        )
        yield from resource


class SqlDatabaseSnapshotSource(SnapshotSource):
    """Snapshots through dlt's ``sql_database`` source, all tables in one exported snapshot.

    The snapshot is the one a new TEMPORARY replication slot exports as it is created
    (``CREATE_REPLICATION_SLOT ... TEMPORARY ... EXPORT_SNAPSHOT``): its position is the slot's
    consistent point, so CDC can continue exactly where the snapshot ends, with no gap and no
    overlap. The server drops a temporary slot when its connection ends, so a snapshot that
    fails or is killed leaves no slot behind and pins no WAL. ``keep_slot`` copies it into the
    lasting slot CDC uses (``pg_copy_logical_replication_slot``: same consistent point), once
    every row was read; other slots are never touched here.
    """

    def __init__(self, settings: PostgresSettings, *, temporary: bool = False) -> None:
        self._settings = settings
        # Only a consistent point, never a lasting slot: for tables added to a running lake,
        # and for verify. (A lasting slot needs ``open(..., slot=name)`` and ``keep_slot``.)
        self._temporary = temporary

    def open(
        self, tables: Sequence[TableSchema], *, slot: str | None = None
    ) -> AbstractContextManager[SnapshotReader]:
        return self._open(None if self._temporary else slot)

    @contextmanager
    def _open(self, slot: str | None) -> Iterator[SnapshotReader]:
        engine = sa.create_engine(
            _sqlalchemy_url(self._settings.dsn),
            connect_args={"connect_timeout": self._settings.connect_timeout_s},
            poolclass=sa.pool.NullPool,
        )
        purpose = "tables" if self._temporary else "snapshot"
        try:
            with self._exported(purpose) as (snapshot, position, temporary):
                log.debug("reading in snapshot %s at %s", snapshot, position)
                keep = None
                if slot is not None and temporary is not None:
                    keep = functools.partial(copy_slot, self._settings, temporary, slot)
                yield _ExportedSnapshotReader(self._settings.dsn, engine, snapshot, position, keep)
        finally:
            engine.dispose()

    @contextmanager
    def _exported(self, purpose: str) -> Iterator[tuple[str, Lsn | None, str | None]]:
        """(snapshot, position, temporary slot): a slot's exported snapshot, or a plain one
        (no position) when the role may not create replication slots."""
        try:
            replication = connect(
                self._settings, connection_factory=psycopg2.extras.LogicalReplicationConnection
            )
        except ConfigurationError as e:
            if "replication" not in str(e) or self._temporary:
                raise
            log.warning(
                "this role may not create replication slots (%s): snapshot taken without a CDC "
                "hand-off; grant REPLICATION (ALTER ROLE ... REPLICATION) to enable CDC",
                e,
            )
            with self._plain_snapshot() as snapshot:
                yield snapshot, None, None
            return
        replication.close()
        with temporary_slot_snapshot(self._settings, purpose) as (snapshot, position, name):
            yield snapshot, position, name

    @contextmanager
    def _plain_snapshot(self) -> Iterator[str]:
        """A REPEATABLE READ transaction's snapshot, kept open while the tables are read."""
        coordinator = connect(self._settings)
        try:
            try:
                coordinator.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with coordinator.cursor() as cur:
                    cur.execute("SELECT pg_export_snapshot()")
                    row = cur.fetchone()
            except psycopg2.Error as e:
                raise translate_error(e, "exporting a snapshot of the source") from e
            assert row is not None
            yield row[0]
        finally:
            coordinator.close()


def _sqlalchemy_url(dsn: str) -> sa.URL:
    """SQLAlchemy needs the driver named; psycopg2 is what this project ships."""
    url = sa.make_url(dsn)
    return url.set(drivername="postgresql+psycopg2")
