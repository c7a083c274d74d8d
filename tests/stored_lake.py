"""Lake tables read back as stored, with each destination's own reader (deltalake's, duckdb's,
Databricks' SQL connector), never through the replicator's lake reader."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from replicator.adapters.lake.settings import LakeSettings
from replicator.domain.lake_columns import LakeColumns

META_COLUMNS = ("_pg_lsn", "_pg_commit_ts", "_pg_deleted_ts")
DEFAULT_META = (*META_COLUMNS, "_pg_row_key", "_pg_row_count")
DATABRICKS_ENV = (
    "DATABRICKS_SERVER_HOSTNAME",
    "DATABRICKS_HTTP_PATH",
    "DATABRICKS_CATALOG",
    "DATABRICKS_TOKEN",
)


def databricks_configured() -> bool:
    return all(os.environ.get(k) for k in DATABRICKS_ENV)


@attrs.define
class StoredLake:
    """One lake, as a test sees it from outside."""

    settings: LakeSettings
    duckdb_path: str | None = None

    @property
    def destination(self) -> str:
        return self.settings.destination

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every stored row of a table, every column (``_pg_*`` included), unordered."""
        if self.destination == "delta":
            from deltalake import DeltaTable

            return list(DeltaTable(self._delta_path(table)).to_pyarrow_table().to_pylist())
        with self._sql() as (cursor, quote):
            cursor.execute(f"SELECT * FROM {quote(self.settings.dataset)}.{quote(table)}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def columns(self, table: str) -> list[str]:
        if self.destination == "delta":
            from deltalake import DeltaTable

            return [f.name for f in DeltaTable(self._delta_path(table)).schema().fields]
        with self._sql() as (cursor, quote):
            cursor.execute(f"SELECT * FROM {quote(self.settings.dataset)}.{quote(table)} LIMIT 0")
            return [d[0] for d in cursor.description]

    def lake_columns(self, table: str) -> LakeColumns:
        """The names of the lake table's metadata columns, as its checkpoint keeps them (a lake
        without a checkpoint, or a table it has no shape of: the defaults)."""
        from replicator.adapters.lake.checkpoint_store import DltCheckpointStore
        from replicator.adapters.lake.writer import DltLakeWriter

        writer = DltLakeWriter(self.settings)
        checkpoint = DltCheckpointStore(writer).load()
        for table_id in checkpoint.tables if checkpoint is not None else ():
            if writer.lake_table_name(table_id) == table:
                assert checkpoint is not None
                return checkpoint.lake_columns(table_id)
        return LakeColumns()

    def meta_columns(self, table: str) -> tuple[str, ...]:
        """The metadata columns a lake table may have (they collide with none of its own)."""
        meta = self.lake_columns(table)
        return (*meta.written, *meta.counted)

    def execute(self, statement: str) -> None:
        """Change the lake behind the replicator's back (DuckDB, Databricks): a tampered lake."""
        with self._sql(read_only=False) as (cursor, _):
            cursor.execute(statement)

    def update(self, table: str, sets: dict[str, str], where: str) -> None:
        """Change stored values behind the replicator's back: ``sets`` maps a column to a SQL
        expression (DataFusion's on Delta, the destination's own otherwise)."""
        if self.destination == "delta":
            from deltalake import DeltaTable

            DeltaTable(self._delta_path(table)).update(updates=sets, predicate=where)
            return
        quote = (lambda n: f'"{n}"') if self.destination == "duckdb" else (lambda n: f"`{n}`")
        assignments = ", ".join(f"{quote(c)} = {e}" for c, e in sets.items())
        self.execute(
            f"UPDATE {quote(self.settings.dataset)}.{quote(table)} SET {assignments} WHERE {where}"
        )

    def delta_version(self, table: str) -> int:
        from deltalake import DeltaTable

        return int(DeltaTable(self._delta_path(table)).version())

    def _delta_path(self, table: str) -> str:
        return str(Path(self.settings.bucket_url) / self.settings.dataset / table)

    @contextmanager
    def _sql(self, read_only: bool = True) -> Iterator[tuple[Any, Any]]:
        if self.destination == "duckdb":
            import duckdb

            assert self.duckdb_path is not None
            with duckdb.connect(self.duckdb_path, read_only=read_only) as conn:
                yield conn.cursor(), lambda n: '"' + n.replace('"', '""') + '"'
            return
        from databricks import sql as databricks_sql

        with (
            databricks_sql.connect(
                server_hostname=os.environ["DATABRICKS_SERVER_HOSTNAME"],
                http_path=os.environ["DATABRICKS_HTTP_PATH"],
                access_token=os.environ["DATABRICKS_TOKEN"],
                catalog=os.environ["DATABRICKS_CATALOG"],
            ) as conn,
            conn.cursor() as cursor,
        ):
            yield cursor, lambda n: "`" + n.replace("`", "``") + "`"


def without_meta(row: dict[str, Any], meta: Iterable[str] = DEFAULT_META) -> dict[str, Any]:
    """The row without the metadata columns ``meta`` (``StoredLake.meta_columns``; by default
    the default names, for tables without source columns of such names)."""
    names = set(meta)
    return {k: v for k, v in row.items() if k not in names}
