"""Tables without a key, under REPLICA IDENTITY FULL: a row is identified by all its values.

Such a table may hold identical rows, so the lake keeps one row per distinct row image with a
count: the row key (``_pg_row_key`` by default; a digest of the values, as PostgreSQL prints
them) is the lake's key and the row count (``_pg_row_count``) says how many identical rows the
source has (see domain/lake_columns.py). The snapshot reads the table
grouped by its values (each column as its text output, exactly what logical decoding sends);
CDC adds one per insert and takes one per delete, an update does both; a count reaching 0
removes the row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pyarrow as pa

from replicator.adapters.postgres.arrow_types import ColumnTransport, output_text, quote_ident
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import TableSchema


def fields(columns: LakeColumns) -> tuple[pa.Field, pa.Field]:
    """The row key and count columns, under the table's names for them."""
    return (
        pa.field(columns.row_key, pa.string(), nullable=False),
        pa.field(columns.row_count, pa.int64()),
    )


def row_key(values: Sequence[bytes | str | None]) -> str:
    """A digest of a row's text values; NULL and every string stay distinct (length-prefixed)."""
    digest = hashlib.sha256()
    for value in values:
        if value is None:
            digest.update(b"-1:")
            continue
        data = value.encode() if isinstance(value, str) else value
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()[:32]


def grouped_select(table: TableSchema) -> str:
    """Each distinct row image once, as text, with how many rows have it."""
    source = f"{quote_ident(table.table_id.schema)}.{quote_ident(table.table_id.name)}"
    texts = [output_text(quote_ident(c.name)) for c in table.columns]
    groups = ", ".join(str(i) for i in range(1, len(texts) + 1))
    return f"SELECT {', '.join(texts)}, count(*) FROM {source} GROUP BY {groups}"


def snapshot_batch(
    batch: pa.RecordBatch,
    transports: list[ColumnTransport],
    meta: list[pa.Array],
    schema: pa.Schema,
    from_text: Callable[[ColumnTransport, list[str | None]], pa.Array],
) -> pa.RecordBatch:
    """A batch of ``grouped_select`` rows (text columns, then the count) in the lake's shape."""
    texts = [batch.column(i).to_pylist() for i in range(len(transports))]
    arrays = [from_text(t, values) for t, values in zip(transports, texts, strict=True)]
    keys = [row_key(row) for row in zip(*texts, strict=True)] if texts else []
    counts = batch.column(len(transports)).cast(pa.int64())
    return pa.RecordBatch.from_arrays(
        [*arrays, *meta, pa.array(keys, pa.string()), counts], schema=schema
    )
