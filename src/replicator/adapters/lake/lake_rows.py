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
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from replicator.adapters.lake import naming
from replicator.adapters.lake.writer import DltLakeWriter
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
            return LakeBatch(0, [])
        first = naming.column_names(table.column_names)[table.primary_key[0]]
        wanted = sorted({k[0] for k in keys}, key=repr)
        read = [c for c in (*shape.columns, shape.deleted) if c in shape.present]
        found = self._writer.tables.rows_where(shape.name, first, wanted, read)
        live = [r for r in found if r.get(shape.deleted) is None]
        stored = {c: [r.get(c) for r in live] for c in read}
        return LakeBatch(len(live), shape.values_of(stored, len(live)))

    # -- shape -------------------------------------------------------------------------------

    def _shape(self, table: TableSchema) -> _Shape | None:
        name = self._writer.lake_table_name(table.table_id)
        if self._writer.settings.destination == "delta":
            delta = self._writer.open_delta(name)
            if delta is None:
                return None
            present = dict.fromkeys(f.name for f in delta.schema().fields)
            return _Shape(table, name, present, delta=delta)
        stored = self._writer.pipeline().default_schema.tables.get(name)
        if stored is None or not stored.get("columns"):
            return None
        columns = stored["columns"]
        duckdb = self._writer.settings.destination == "duckdb"
        # DuckDB keeps arrays as JSON text; the Databricks connector returns numpy arrays.
        return _Shape(table, name, dict.fromkeys(columns), arrays="json" if duckdb else "numpy")

    # -- Delta -------------------------------------------------------------------------------

    def _delta_batches(self, shape: _Shape) -> Iterator[LakeBatch]:
        import pyarrow.compute as pc

        def live(batch: Any) -> Any:
            keep = pc.is_null(batch.column(shape.deleted))
            if shape.counted:
                keep = pc.and_(keep, pc.fill_null(pc.greater(batch.column(shape.count), 0), False))
            return keep

        read = [c for c in shape.columns if c in shape.present]
        read.append(shape.deleted)
        if shape.counted:
            read.append(shape.count)
        for batch in _stream(shape.delta, read, live):
            if not batch.num_rows:
                continue
            columns: list[Sequence[Any]] = []
            rendered = set()
            for i, c in enumerate(shape.columns):
                if c not in shape.present:
                    columns.append([None] * batch.num_rows)
                    continue
                array = batch.column(c)
                text = None if c in shape.arrays else pg_text(array)
                if text is not None:
                    rendered.add(i)
                columns.append(array.to_pylist() if text is None else text)
            counts = batch.column(shape.count).to_pylist() if shape.counted else None
            yield LakeBatch(batch.num_rows, columns, counts, frozenset(rendered))

    def _delta_census(self, shape: _Shape) -> LakeCensus:
        import pyarrow.compute as pc

        # First the marker and count columns alone; the values only of the rows marked deleted.
        markers = [shape.deleted]
        if shape.counted:
            markers.append(shape.count)
        live = soft = ghosts = tombstones = marked = 0
        for batch in _stream(shape.delta, markers):
            column = batch.column(shape.deleted)
            marked += len(column) - column.null_count
            if not shape.counted:
                live += column.null_count
                continue
            count = pc.if_else(pc.is_null(column), batch.column(shape.count), None)
            live += pc.sum(pc.if_else(pc.greater(count, 0), count, 0)).as_py() or 0
            tombstones += _true(pc.less_equal(count, 0))
        values = [c for c in shape.values if c in shape.present]
        if marked and values:

            def flagged(batch: Any) -> Any:
                return pc.is_valid(batch.column(shape.deleted))

            for batch in _stream(shape.delta, [*values, shape.deleted], flagged):
                empty = pc.is_null(batch.column(values[0]))
                for c in values[1:]:
                    empty = pc.and_(empty, pc.is_null(batch.column(c)))
                ghosts += _true(empty)
        soft = marked - ghosts
        return LakeCensus(int(live), soft, ghosts, tombstones)

    # -- SQL destinations --------------------------------------------------------------------

    def _sql_batches(self, shape: _Shape) -> Iterator[LakeBatch]:
        read = [c for c in shape.columns if c in shape.present]
        if shape.counted:
            read.append(shape.count)
        with self._writer.pipeline().sql_client() as client:
            listed = ", ".join(client.escape_column_name(c) for c in read) or "1"
            where = []
            if shape.deleted in shape.present:
                where.append(f"{client.escape_column_name(shape.deleted)} IS NULL")
            if shape.counted:
                where.append(f"{client.escape_column_name(shape.count)} > 0")
            query = f"SELECT {listed} FROM {client.make_qualified_table_name(shape.name)}"
            if where:
                query += " WHERE " + " AND ".join(where)
            with client.execute_query(query) as cursor:
                while fetched := cursor.fetchmany(BATCH_ROWS):
                    stored = dict(zip(read, zip(*fetched, strict=True), strict=True))
                    columns = shape.values_of(stored, len(fetched))
                    counts = None
                    if shape.counted:
                        counts = [int(n) for n in stored[shape.count]]
                    yield LakeBatch(len(fetched), columns, counts)

    def _sql_census(self, shape: _Shape) -> LakeCensus:
        with self._writer.pipeline().sql_client() as client:

            def q(column: str) -> str:
                return client.escape_column_name(column)

            marked = (
                f"{q(shape.deleted)} IS NOT NULL" if shape.deleted in shape.present else "1 = 0"
            )
            unmarked = f"NOT ({marked})"
            values = [c for c in shape.values if c in shape.present]
            empty = " AND ".join(f"{q(c)} IS NULL" for c in values) if values else "1 = 0"
            if shape.counted:
                count = q(shape.count)
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


def pg_text(array: Any) -> list[Any] | None:
    """An Arrow column rendered in bulk as ``verify_values`` renders each value (PostgreSQL's
    text output), for the types where Arrow can; None for the others (floats, binary, lists,
    years before 1000), which go value by value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return list(array.to_pylist())
    if pa.types.is_integer(kind):
        return list(pc.cast(array, pa.string()).to_pylist())
    if pa.types.is_boolean(kind):
        return list(pc.if_else(array, "t", "f").to_pylist())
    if pa.types.is_decimal(kind):  # Arrow writes 0E-12 where PostgreSQL writes 0.000000000000
        return [
            v if v is None or "E" not in v else format(Decimal(v), "f")
            for v in pc.cast(array, pa.string()).to_pylist()
        ]
    temporal = (pa.types.is_timestamp(kind) and kind.unit == "us") or pa.types.is_date32(kind)
    if not temporal or array.null_count == len(array):
        return None
    # the UTC wall clock (a cast with a zone prints it and a Z, 30 times slower)
    wall = array.cast(pa.timestamp("us")) if pa.types.is_timestamp(kind) else array
    if (pc.min(pc.year(wall)).as_py() or 0) < 1000:
        return None
    text = pc.cast(wall, pa.string())
    if pa.types.is_timestamp(kind):
        # 2024-01-02 03:04:05.500000 -> 2024-01-02 03:04:05.5; .000000 goes
        text = pc.replace_substring_regex(text, pattern=r"\.?0+$", replacement="")
    if getattr(kind, "tz", None) is not None:
        text = pc.binary_join_element_wise(text, "+00", "")
    return list(text.to_pylist())


def _stream(
    delta: Any, columns: list[str], keep: Callable[[Any], Any] | None = None
) -> Iterator[Any]:
    """A Delta table's batches of ``columns`` (a column a file lacks: NULL), only the rows
    ``keep`` selects, one batch in hand at a time.

    A local table without deletion vectors, column mapping or partitions is read file by file
    with a buffered, page-by-page Parquet reader on one thread: the dataset scanner holds whole
    row groups' column chunks (a million rows each, as delta-rs writes them), three times the
    memory. Other tables go through delta-rs' dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def completed(batch: Any) -> Any:
        have = set(batch.schema.names)
        arrays = [
            _without_views(batch.column(c)) if c in have else pa.nulls(batch.num_rows)
            for c in columns
        ]
        whole = pa.RecordBatch.from_arrays(arrays, names=columns)
        return whole if keep is None else whole.filter(keep(whole))

    if not _files_readable(delta):
        dataset = delta.to_pyarrow_dataset()
        names = set(dataset.schema.names)
        for batch in dataset.to_batches(
            columns=[c for c in columns if c in names], batch_size=BATCH_ROWS, use_threads=False
        ):
            yield completed(batch)
        return
    for uri in delta.file_uris():
        parquet = pq.ParquetFile(uri, buffer_size=1 << 20, pre_buffer=False)
        names = set(parquet.schema_arrow.names)
        for batch in parquet.iter_batches(
            batch_size=BATCH_ROWS, columns=[c for c in columns if c in names], use_threads=False
        ):
            yield completed(batch)


def _without_views(array: Any) -> Any:
    """``array`` with its view types (``string_view``, ``binary_view``, also nested) as their
    large plain types: delta-rs may store those, and Arrow's take and filter kernels do not
    take every one of them."""
    plain = _plain_type(array.type)
    return array if plain == array.type else array.cast(plain)


def _plain_type(kind: Any) -> Any:
    import pyarrow as pa

    if pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    if pa.types.is_list_view(kind) or pa.types.is_large_list_view(kind):
        return pa.large_list(pa.field(kind.value_field.name, _plain_type(kind.value_type)))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = pa.field(kind.value_field.name, _plain_type(kind.value_type))
        return pa.list_(item) if pa.types.is_list(kind) else pa.large_list(item)
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_plain_type(f.type)) for f in kind])
    return kind


def _files_readable(delta: Any) -> bool:
    uris = delta.file_uris()
    if any("://" in u and not u.startswith("file://") for u in uris):
        return False
    features = set(delta.protocol().reader_features or ())
    mapping = delta.metadata().configuration.get("delta.columnMapping.mode", "none")
    return (
        not features & {"deletionVectors", "columnMapping"}
        and mapping == "none"
        and not delta.metadata().partition_columns
    )


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
        delta: Any = None,
        arrays: str = "lists",
    ) -> None:
        lake_names = naming.column_names(table.column_names)
        self.name = name
        self.present = present
        self.delta = delta  # the DeltaTable, on Delta
        self.columns = [lake_names[c] for c in table.column_names]
        keys = {lake_names[k] for k in table.primary_key}
        self.values = [c for c in self.columns if c not in keys]
        # The table's metadata columns: rows marked deleted, and (no key) how many rows a row is.
        self.deleted = table.lake_columns.deleted_ts
        self.count = table.lake_columns.row_count
        self.counted = table.keyless_full and self.count in present
        self.arrays = {lake_names[c.name] for c in table.columns if c.is_array and not c.as_text}
        self._unpack = {"json": _from_json, "numpy": _from_numpy}.get(arrays)

    def values_of(self, stored: Mapping[str, Sequence[Any]], n: int) -> list[Sequence[Any]]:
        """Columns in source column order (a column the table lacks: NULL), arrays unpacked."""
        columns: list[Sequence[Any]] = []
        for c in self.columns:
            values = stored.get(c)
            if values is None:
                values = [None] * n
            elif self._unpack is not None and c in self.arrays:
                values = [None if v is None else self._unpack(v) for v in values]
            columns.append(values)
        return columns


def _from_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _from_numpy(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return value if tolist is None else tolist()
