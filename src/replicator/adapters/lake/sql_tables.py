"""DuckDB and Databricks tables read and reshaped through dlt's SQL client: stored rows, row
counts, positions (``sql_merge``), schema changes (``evolution``), the checkpoint's history rows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dlt

from replicator.adapters.lake import evolution, sql_merge
from replicator.adapters.lake.table_access import TableAccess
from replicator.domain.model import Frontier, LakeTableInfo, TableId

# Values per IN (...) list when stored rows are read back from a SQL destination.
IN_LIST_SIZE = 1000


class SqlTables(TableAccess):
    def __init__(self, destination: str, pipeline: Callable[[], dlt.Pipeline]) -> None:
        self._destination = destination
        self._pipeline = pipeline
        self._positions_ready = False  # DuckDB: the positions table exists

    def rows_where(
        self, name: str, column: str, values: Sequence[Any], columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Through the SQL client: dlt's dataset API fails with this sqlglot version. ``IN``
        lists are sent IN_LIST_SIZE values at a time, so a large batch never makes one
        statement of unbounded size."""
        if not values:
            return []
        found: list[dict[str, Any]] = []
        with self._pipeline().sql_client() as client:
            listed = ", ".join(client.escape_column_name(c) for c in columns) if columns else "*"
            query = f"SELECT {listed} FROM {client.make_qualified_table_name(name)}"
            chunks = [values[i : i + IN_LIST_SIZE] for i in range(0, len(values), IN_LIST_SIZE)]
            for chunk in chunks:
                marks = ", ".join(["%s"] * len(chunk))
                statement = f"{query} WHERE {client.escape_column_name(column)} IN ({marks})"
                with client.execute_query(statement, *chunk) as cursor:
                    names = [d[0] for d in cursor.description]
                    found.extend(dict(zip(names, row, strict=True)) for row in cursor.fetchall())
        return found

    def describe(
        self, names: Mapping[TableId, str], lsn: Mapping[TableId, str] | None
    ) -> list[LakeTableInfo]:
        infos = []
        with self._pipeline().sql_client() as client:
            for table, name in names.items():
                measures = "count(*), NULL"
                if lsn is not None:
                    measures = f"count(*), max({client.escape_column_name(lsn[table])})"
                qualified = client.make_qualified_table_name(name)
                rows = client.execute_sql(f"SELECT {measures} FROM {qualified}")
                count, last = (int(rows[0][0]), rows[0][1]) if rows else (0, None)
                infos.append(LakeTableInfo(table, name, count, None, qualified, last))
        return infos

    def positions(self, names: Mapping[TableId, str]) -> dict[TableId, Frontier]:
        with self._pipeline().sql_client() as client:
            by_name = sql_merge.read_positions(client, list(names.values()))
        return {t: by_name[n] for t, n in names.items() if n in by_name}

    def holds_other_types(self, name: str, fields: Any) -> bool:
        """dlt's stored schema (compared by the writer) is the table's: the load that changed
        a column's type dropped the table first."""
        return False

    def evolve(self, name: str, plan: evolution.Plan) -> None:
        evolution.evolve_sql(self._pipeline(), name, plan)

    def start_anew(self, names: Sequence[str]) -> None:
        """Drop the tables, and their staged rows: the load creates them again."""
        with self._pipeline().sql_client() as client:
            for staging in (False, True):  # the merge stages the rows in bronze_staging
                with client.with_staging_dataset() if staging else contextlib.nullcontext():
                    for name in names:
                        table = client.make_qualified_table_name(name)
                        client.execute_sql(f"DROP TABLE IF EXISTS {table}")

    def prepare_positions(self) -> None:
        """DuckDB keeps the positions in a table of its own, made once (see ``sql_merge``)."""
        if self._destination != "duckdb" or self._positions_ready:
            return
        with self._pipeline().sql_client() as client:
            sql_merge.prepare_positions(client)
        self._positions_ready = True

    def tidy_state(self, keep: int) -> None:
        pipeline = self._pipeline()
        with pipeline.sql_client() as client:
            state = client.make_qualified_table_name(pipeline.default_schema.state_table_name)
            name = client.escape_column_name("pipeline_name")
            version = client.escape_column_name("version")
            rows = client.execute_sql(
                f"SELECT max({version}) FROM {state} WHERE {name} = %s", pipeline.pipeline_name
            )
            newest = rows[0][0] if rows else None
            if newest is not None and int(newest) > keep:
                client.execute_sql(
                    f"DELETE FROM {state} WHERE {name} = %s AND {version} <= %s",
                    pipeline.pipeline_name,
                    int(newest) - keep,
                )
