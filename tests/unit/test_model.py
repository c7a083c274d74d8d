"""Domain model rules that several services share."""

from __future__ import annotations

import attrs

from replicator.domain.model import ColumnSchema, TableId, TableSchema

T = TableId("public", "t")
ID = ColumnSchema("id", "integer", 23)
V = ColumnSchema("v", "integer", 23)
STORED = TableSchema(T, (ID, V), ("id",))


def test_a_column_retyped_or_now_replicated_as_text_is_retyped() -> None:
    assert TableSchema(T, (ID, ColumnSchema("v", "text", 25)), ("id",)).retyped_since(STORED)
    assert TableSchema(T, (ID, attrs.evolve(V, as_text=True)), ("id",)).retyped_since(STORED)
    numeric = ColumnSchema("v", "numeric(7,0)", 1700, typmod=458756)
    wider = attrs.evolve(numeric, pg_type="numeric(11,0)", typmod=720900)
    assert TableSchema(T, (ID, wider), ("id",)).retyped_since(TableSchema(T, (ID, numeric)))


def test_added_dropped_or_unchanged_columns_and_unknown_shapes_are_not() -> None:
    assert not STORED.retyped_since(STORED)
    assert not TableSchema(T, (ID, V, ColumnSchema("w", "text", 25)), ("id",)).retyped_since(STORED)
    assert not TableSchema(T, (ID,), ("id",)).retyped_since(STORED)
    assert not STORED.retyped_since(None)
