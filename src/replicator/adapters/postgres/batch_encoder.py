"""Encoding: one table's compacted changes -> the lake's columnar batch.

The batch speaks the lake's column protocol (``domain.lake_columns``): the table's columns in
their lake types (``arrow_types``: the same conversion as the snapshot's), then the table's
position, commit time and delete mark, and, for the lake writer only, the staging columns that
say which stored values a row keeps (unchanged TOAST values, soft deletes) and where a moved
key's stored values are. Keyless REPLICA IDENTITY FULL tables carry each row image's digest
and change in count instead (``full_rows``). Generated columns the WAL lacks are computed by
PostgreSQL, on the stream's catalog session (``generated``).
"""

from __future__ import annotations

import operator
from typing import Any

import pyarrow as pa

from replicator.adapters.postgres import full_rows
from replicator.adapters.postgres import generated as generated_columns
from replicator.adapters.postgres.arrow_types import (
    ColumnTransport,
    target_schema,
    transports_for,
)
from replicator.adapters.postgres.catalog import PostgresTableCatalog
from replicator.adapters.postgres.pgoutput import UNCHANGED
from replicator.adapters.postgres.text_values import column_from_text
from replicator.domain.compaction import CompactedTable, Removal
from replicator.domain.model import RowBatch, TableSchema
from replicator.domain.ports import BatchEncoder


class PgBatchEncoder(BatchEncoder):
    def __init__(self, catalog: PostgresTableCatalog) -> None:
        self._catalog = catalog
        self._transports: dict[TableSchema, list[ColumnTransport]] = {}

    def encode(self, schema: TableSchema, table: CompactedTable, soft_delete: bool) -> RowBatch:
        transports = self._transports.get(schema)
        if transports is None:
            transports = self._transports[schema] = transports_for(schema)
        if table.counted:
            return self._counted_batch(schema, transports, table)
        names = schema.column_names
        key_pos = {name: i for i, name in enumerate(schema.primary_key)}
        upserts = list(table.upserts.values())
        removals = list(table.removals.values())
        # Columns are pulled out with map(itemgetter) loops that run in C, not per value in Python.
        rows, lsns, stamps, unchanged, stored_keys = (
            list(map(operator.itemgetter(i), upserts)) for i in range(5)
        )
        for removal in removals:
            if removal.row is not None:
                rows.append(removal.row)
            else:
                rows.append(tuple(
                    removal.key[key_pos[n]] if n in key_pos else None for n in names
                ))  # fmt: skip
        if any(c.generated for c in schema.columns):
            rows, kept = self._generated(schema, rows)
            unchanged = [u | k for u, k in zip(unchanged, kept, strict=False)]
        columns = [list(map(operator.itemgetter(i), rows)) for i in range(len(names))]
        arrays = []
        for transport, values in zip(transports, columns, strict=True):
            if UNCHANGED in values:
                values = [None if v is UNCHANGED else v for v in values]
            arrays.append(column_from_text(transport, values))
        utc = pa.timestamp("us", tz="UTC")
        arrays.append(pa.array(lsns + [r.lsn for r in removals], pa.int64()))
        arrays.append(pa.array(stamps + [r.commit_ts for r in removals], utc))
        arrays.append(pa.array([None] * len(upserts) + [r.commit_ts for r in removals], utc))
        meta = schema.lake_columns
        fields = list(target_schema(transports, meta))
        keep = self._keep_lists(names, key_pos, unchanged, removals, soft_delete)
        if keep is not None:
            # Staging columns, read and dropped by the lake writer: per row, the columns whose
            # stored lake value must stay; per key column, where those are stored if it moved.
            arrays.append(pa.array(keep, pa.list_(pa.string())))
            fields.append(pa.field(meta.unchanged, pa.list_(pa.string())))
            if any(k is not None for k in stored_keys):
                blank = (None,) * len(schema.primary_key)
                stored = [k or blank for k in stored_keys] + [blank] * len(removals)
                for i, key_name in enumerate(schema.primary_key):
                    transport = transports[names.index(key_name)]
                    arrays.append(column_from_text(transport, [k[i] for k in stored]))
                    fields.append(pa.field(meta.stored_key(i), transport.arrow_type))
        batch: RowBatch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        return batch

    def _generated(
        self, schema: TableSchema, rows: list[tuple[Any, ...]]
    ) -> tuple[list[tuple[Any, ...]], list[frozenset[int]]]:
        """The rows with their stored generated columns computed by PostgreSQL."""

        def query(statement: Any, params: list[Any]) -> list[tuple[Any, ...]]:
            return self._catalog.query(
                statement, params, f"computing the generated columns of {schema.table_id}"
            )

        return generated_columns.compute(query, schema, rows)

    def _counted_batch(
        self, schema: TableSchema, transports: list[ColumnTransport], table: CompactedTable
    ) -> RowBatch:
        """Rows of a keyless table: each changed row image with the change in its count (the
        lake writer adds the stored count; a total of 0 removes the row)."""
        changed = [(row, entry) for row, entry in table.counts.items() if entry.delta]
        rows = [row for row, _ in changed]
        if any(c.generated for c in schema.columns):
            rows, _ = self._generated(schema, rows)
        arrays = [
            column_from_text(transport, [row[i] for row in rows])
            for i, transport in enumerate(transports)
        ]
        utc = pa.timestamp("us", tz="UTC")
        arrays.append(pa.array([entry.lsn for _, entry in changed], pa.int64()))
        arrays.append(pa.array([entry.committed for _, entry in changed], utc))
        arrays.append(pa.nulls(len(rows), utc))
        arrays.append(pa.array([full_rows.row_key(row) for row in rows], pa.string()))
        arrays.append(pa.array([entry.delta for _, entry in changed], pa.int64()))
        meta = schema.lake_columns
        fields = [*target_schema(transports, meta), *full_rows.fields(meta)]
        batch: RowBatch = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        return batch

    @staticmethod
    def _keep_lists(
        names: tuple[str, ...],
        key_pos: dict[str, int],
        unchanged: list[frozenset[int]],
        removals: list[Removal],
        soft_delete: bool,
    ) -> list[list[str]] | None:
        """Per row, the columns whose stored value must stay; None when no row has any."""
        partial_removals = soft_delete and any(r.row is None for r in removals)
        if not partial_removals and not any(unchanged):
            return None
        keep = [[names[i] for i in sorted(u)] if u else [] for u in unchanged]
        non_key = [n for n in names if n not in key_pos]
        keep.extend(non_key if soft_delete and r.row is None else [] for r in removals)
        return keep
