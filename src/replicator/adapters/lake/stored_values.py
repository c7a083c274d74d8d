"""What a CDC batch takes from the rows the lake already holds, before it is merged.

- ``keep_stored_values``: columns a change leaves out (unchanged TOAST values, the values of a
  soft-deleted row known only by its key) filled from the stored row.
- ``count_rows``: a keyless FULL table's changes in row counts turned into the new counts.

Both read the lake by key through the destination's ``TableAccess``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from replicator.adapters.lake import naming
from replicator.adapters.lake.table_access import TableAccess
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import TableSchema


def keep_stored_values(tables: TableAccess, schema: TableSchema, name: str, batch: Any) -> Any:
    """Fill the columns each row lists in the ``unchanged`` staging column from the row
    stored in the lake (unchanged TOAST values, soft-deleted rows known only by their key),
    then drop the staging columns."""
    import pyarrow as pa

    meta = schema.lake_columns
    keeps = batch.column(batch.schema.get_field_index(meta.unchanged)).to_pylist()
    stored_keys = [meta.stored_key(i) for i in range(len(schema.primary_key))]
    helpers = [n for n in stored_keys if n in batch.schema.names]
    moved = [batch.column(batch.schema.get_field_index(n)).to_pylist() for n in helpers]
    batch = batch.drop_columns([meta.unchanged, *helpers])
    wanted = [i for i, k in enumerate(keeps) if k]
    key_cols = [batch.column(batch.schema.get_field_index(k)) for k in schema.primary_key]
    keys = []
    for i in wanted:
        if moved and moved[0][i] is not None:  # the row's key moved: read the old key's row
            keys.append(tuple(column[i] for column in moved))
        else:
            keys.append(tuple(col[i].as_py() for col in key_cols))
    lake_names = naming.column_names(schema.column_names)
    columns = {n for i in wanted for n in keeps[i]}
    needed = sorted(lake_names[c] for c in columns)
    stored = _stored_rows(tables, name, naming.lake_key(schema), keys, needed)
    arrays = batch.columns
    for column in columns:
        index = batch.schema.get_field_index(column)
        values = batch.column(index).to_pylist()
        lake_name = lake_names[column]
        for i, key in zip(wanted, keys, strict=True):
            if column in keeps[i]:
                row = stored.get(key)
                values[i] = row.get(lake_name) if row is not None else None
        arrays[index] = pa.array(values, batch.schema.field(index).type)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def count_rows(
    tables: TableAccess, schema: TableSchema, name: str, batch: Any, truncated: bool
) -> Any:
    """Turn the batch's changes in row counts into counts: the stored count (none after a
    TRUNCATE) plus the change; a row whose count reaches 0 is deleted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    meta = schema.lake_columns
    keys = batch.column(batch.schema.get_field_index(meta.row_key)).to_pylist()
    index = batch.schema.get_field_index(meta.row_count)
    deltas = batch.column(index).to_pylist()
    stored = {} if truncated else _stored_counts(tables, meta, name, keys)
    # Typed: a batch whose changes cancel out has no rows, and an untyped empty array is null.
    totals = pa.array([stored.get(k, 0) + d for k, d in zip(keys, deltas, strict=True)], pa.int64())
    batch = batch.set_column(index, batch.schema.field(index), pc.max_element_wise(totals, 0))
    gone = pc.less_equal(totals, 0)
    if truncated:  # the table is replaced: rows counted down to nothing are just left out
        return batch.filter(pc.invert(gone))
    at = batch.schema.get_field_index(meta.deleted_ts)
    committed = batch.column(batch.schema.get_field_index(meta.commit_ts))
    deleted = pc.if_else(gone, committed, pa.nulls(len(keys), committed.type))
    return batch.set_column(at, batch.schema.field(at), deleted)


def _stored_counts(
    tables: TableAccess, meta: LakeColumns, name: str, keys: list[str]
) -> dict[str, int]:
    key, count = meta.counted
    rows = tables.rows_where(name, key, keys, [key, count])
    return {r[key]: int(r[count] or 0) for r in rows}


def _stored_rows(
    tables: TableAccess,
    name: str,
    lake_keys: Sequence[str],
    keys: list[tuple[Any, ...]],
    columns: Sequence[str],
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The stored rows of ``keys``: their key columns and ``columns`` only."""
    first = sorted({k[0] for k in keys}, key=repr)
    wanted = set(keys)
    found = {}
    read = list(dict.fromkeys([*lake_keys, *columns]))
    for row in tables.rows_where(name, lake_keys[0], first, read):
        key = tuple(row[k] for k in lake_keys)
        if key in wanted:
            found[key] = row
    return found
