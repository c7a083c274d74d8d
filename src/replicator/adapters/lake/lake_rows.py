"""The lake's rows as each destination's own reader returns them, for ``verify``.

Delta tables are read with delta-rs (pyarrow batches); DuckDB and Databricks through dlt's SQL
client, a batch at a time from one cursor. Values are handed on as the reader returns them, with
only what the reader itself packs differently unpacked: DuckDB's JSON text of an array column,
the connector's numpy arrays on Databricks. Rows marked deleted and counted rows whose count is
0 or less are not live; ``census`` counts them apart, in one pass (one aggregate statement on a
SQL destination).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from replicator.adapters.lake import naming
from replicator.adapters.lake.writer import (
    DELETED_TS_COLUMN,
    ROW_COUNT_COLUMN,
    DltLakeWriter,
)
from replicator.domain.model import Key, LakeBatch, LakeCensus, TableSchema
from replicator.domain.ports import LakeRowReader

BATCH_ROWS = 20_000


class DltLakeRowReader(LakeRowReader):
    def __init__(self, writer: DltLakeWriter) -> None:
        self._writer = writer

    # -- the port ----------------------------------------------------------------------------

    def census(self, table: TableSchema) -> LakeCensus:
        shape = self._shape(table)
        if shape is None:
            return LakeCensus()
        if self._writer.settings.destination == "delta":
            return self._delta_census(shape)
        return self._sql_census(shape)

    def batches(self, table: TableSchema) -> Iterator[LakeBatch]:
        shape = self._shape(table)
        if shape is None:
            return
        if self._writer.settings.destination == "delta":
            yield from self._delta_batches(shape)
        else:
            yield from self._sql_batches(shape)

    def rows_with_keys(self, table: TableSchema, keys: Sequence[Key]) -> LakeBatch:
        shape = self._shape(table)
        if shape is None or not keys or not table.primary_key:
            return LakeBatch([])
        first = naming.column_names(table.column_names)[table.primary_key[0]]
        wanted = sorted({k[0] for k in keys}, key=repr)
        read = [c for c in (*shape.columns, DELETED_TS_COLUMN) if c in shape.present]
        found = self._writer.rows_where(shape.name, first, wanted, read)
        live = [r for r in found if r.get(DELETED_TS_COLUMN) is None]
        return LakeBatch([shape.row(r) for r in live])

    # -- shape -------------------------------------------------------------------------------

    def _shape(self, table: TableSchema) -> _Shape | None:
        name = self._writer.lake_table_name(table.table_id)
        if self._writer.settings.destination == "delta":
            delta = self._writer.open_delta(name)
            if delta is None:
                return None
            dataset = delta.to_pyarrow_dataset()
            present = dict.fromkeys(dataset.schema.names)
            return _Shape(table, name, present, dataset=dataset)
        stored = self._writer.pipeline().default_schema.tables.get(name)
        if stored is None or not stored.get("columns"):
            return None
        columns = stored["columns"]
        duckdb = self._writer.settings.destination == "duckdb"
        # DuckDB keeps arrays as JSON text; the Databricks connector returns numpy arrays.
        return _Shape(table, name, dict.fromkeys(columns), arrays="json" if duckdb else "numpy")

    # -- Delta -------------------------------------------------------------------------------

    def _delta_batches(self, shape: _Shape) -> Iterator[LakeBatch]:
        import pyarrow.dataset as ds

        live = None
        if DELETED_TS_COLUMN in shape.present:
            live = ds.field(DELETED_TS_COLUMN).is_null()
        if shape.counted:
            positive = ds.field(ROW_COUNT_COLUMN) > 0
            live = positive if live is None else live & positive
        read = [c for c in shape.columns if c in shape.present]
        if shape.counted:
            read.append(ROW_COUNT_COLUMN)
        for batch in shape.dataset.to_batches(columns=read, filter=live, batch_size=BATCH_ROWS):
            if not batch.num_rows:
                continue
            data = {c: batch.column(c).to_pylist() for c in read}
            rows = shape.rows(data, batch.num_rows)
            yield LakeBatch(rows, data[ROW_COUNT_COLUMN] if shape.counted else None)

    def _delta_census(self, shape: _Shape) -> LakeCensus:
        import pyarrow as pa
        import pyarrow.compute as pc

        read = [c for c in (DELETED_TS_COLUMN, *shape.values) if c in shape.present]
        if shape.counted:
            read.append(ROW_COUNT_COLUMN)
        live = soft = ghosts = tombstones = 0
        for batch in shape.dataset.to_batches(columns=read, batch_size=BATCH_ROWS * 5):
            n = batch.num_rows
            marked = (
                pc.is_valid(batch.column(DELETED_TS_COLUMN))
                if DELETED_TS_COLUMN in shape.present
                else pa.array([False] * n)
            )
            unmarked = pc.invert(marked)
            if shape.counted:
                count = batch.column(ROW_COUNT_COLUMN)
                positive = pc.and_(unmarked, pc.greater(count, 0))
                live += pc.sum(pc.if_else(positive, count, 0)).as_py() or 0
                tombstones += _true(pc.and_(unmarked, pc.less_equal(count, 0)))
            else:
                live += _true(unmarked)
            empty = None  # every value column NULL: a ghost when marked
            for c in shape.values:
                if c in shape.present:
                    null = pc.is_null(batch.column(c))
                    empty = null if empty is None else pc.and_(empty, null)
            if empty is None or not shape.values:
                soft += _true(marked)
            else:
                ghost = pc.and_(marked, empty)
                ghosts += _true(ghost)
                soft += _true(marked) - _true(ghost)
        return LakeCensus(int(live), soft, ghosts, tombstones)

    # -- SQL destinations --------------------------------------------------------------------

    def _sql_batches(self, shape: _Shape) -> Iterator[LakeBatch]:
        read = [c for c in shape.columns if c in shape.present]
        if shape.counted:
            read.append(ROW_COUNT_COLUMN)
        with self._writer.pipeline().sql_client() as client:
            listed = ", ".join(client.escape_column_name(c) for c in read) or "1"
            where = []
            if DELETED_TS_COLUMN in shape.present:
                where.append(f"{client.escape_column_name(DELETED_TS_COLUMN)} IS NULL")
            if shape.counted:
                where.append(f"{client.escape_column_name(ROW_COUNT_COLUMN)} > 0")
            query = f"SELECT {listed} FROM {client.make_qualified_table_name(shape.name)}"
            if where:
                query += " WHERE " + " AND ".join(where)
            with client.execute_query(query) as cursor:
                while fetched := cursor.fetchmany(BATCH_ROWS):
                    data = {c: [row[i] for row in fetched] for i, c in enumerate(read)}
                    rows = shape.rows(data, len(fetched))
                    counts = [int(n) for n in data[ROW_COUNT_COLUMN]] if shape.counted else None
                    yield LakeBatch(rows, counts)

    def _sql_census(self, shape: _Shape) -> LakeCensus:
        with self._writer.pipeline().sql_client() as client:

            def q(column: str) -> str:
                return client.escape_column_name(column)

            marked = (
                f"{q(DELETED_TS_COLUMN)} IS NOT NULL"
                if DELETED_TS_COLUMN in shape.present
                else "1 = 0"
            )
            unmarked = f"NOT ({marked})"
            values = [c for c in shape.values if c in shape.present]
            empty = " AND ".join(f"{q(c)} IS NULL" for c in values) if values else "1 = 0"
            if shape.counted:
                count = q(ROW_COUNT_COLUMN)
                live = f"CASE WHEN {unmarked} AND {count} > 0 THEN {count} ELSE 0 END"
                tombstone = f"CASE WHEN {unmarked} AND {count} <= 0 THEN 1 ELSE 0 END"
            else:
                live = f"CASE WHEN {unmarked} THEN 1 ELSE 0 END"
                tombstone = "0"
            query = (
                f"SELECT SUM({live}), "
                f"SUM(CASE WHEN {marked} AND NOT ({empty}) THEN 1 ELSE 0 END), "
                f"SUM(CASE WHEN {marked} AND {empty} THEN 1 ELSE 0 END), "
                f"SUM({tombstone}) "
                f"FROM {client.make_qualified_table_name(shape.name)}"
            )
            with client.execute_query(query) as cursor:
                row = cursor.fetchone()
        live_rows, soft, ghosts, tombstones = (int(v or 0) for v in (row or (0, 0, 0, 0)))
        return LakeCensus(live_rows, soft, ghosts, tombstones)


def _true(mask: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.cast(mask, "int64")).as_py() or 0)


class _Shape:
    """One lake table as ``verify`` reads it: its columns in source order (the lake's names),
    the columns that hold values (not the key), and which of them the table stores."""

    def __init__(
        self,
        table: TableSchema,
        name: str,
        present: dict[str, None],
        *,
        dataset: Any = None,
        arrays: str = "lists",
    ) -> None:
        lake_names = naming.column_names(table.column_names)
        self.name = name
        self.present = present
        self.dataset = dataset
        self.columns = [lake_names[c] for c in table.column_names]
        keys = {lake_names[k] for k in table.primary_key}
        self.values = [c for c in self.columns if c not in keys]
        self.counted = table.keyless_full and ROW_COUNT_COLUMN in present
        self._arrays = {lake_names[c.name] for c in table.columns if c.is_array and not c.as_text}
        self._unpack = {"json": _from_json, "numpy": _from_numpy}.get(arrays)

    def rows(self, data: dict[str, list[Any]], n: int) -> list[tuple[Any, ...]]:
        """Rows in source column order from column lists (a column not stored: NULL)."""
        columns = []
        for c in self.columns:
            values = data.get(c)
            if values is None:
                values = [None] * n
            elif self._unpack is not None and c in self._arrays:
                values = [None if v is None else self._unpack(v) for v in values]
            columns.append(values)
        return list(zip(*columns, strict=True)) if columns else [() for _ in range(n)]

    def row(self, stored: dict[str, Any]) -> tuple[Any, ...]:
        return self.rows({c: [stored.get(c)] for c in self.columns if c in stored}, 1)[0]


def _from_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _from_numpy(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return value if tolist is None else tolist()
