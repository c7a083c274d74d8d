"""Source table shapes kept with the checkpoint, as plain JSON-able lists.

The lake's columns follow the source as of the checkpoint, which may be behind the catalog (an
ALTER TABLE committed since): a restart compares the stream's Relation messages with these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import ColumnSchema, ReplicaIdentity, TableId, TableSchema

_COLUMN_FIELDS = [f.name for f in attrs.fields(ColumnSchema)]
_META_FIELDS = {f.name for f in attrs.fields(LakeColumns)}


def dump_shapes(schemas: Mapping[TableId, TableSchema]) -> list[dict[str, Any]]:
    return [
        {
            "table": [table.schema, table.name],
            "key": list(schema.primary_key),
            "identity": schema.replica_identity.value,
            "columns": [[getattr(c, f) for f in _COLUMN_FIELDS] for c in schema.columns],
            "meta": attrs.asdict(schema.lake_columns),
        }
        for table, schema in sorted(schemas.items())
    ]


def load_shapes(value: Any) -> dict[TableId, TableSchema]:
    """The shapes written by ``dump_shapes``; columns of fields added since get defaults, and
    so do the metadata names of shapes written before they were kept (the names those lakes
    were written with)."""
    shapes: dict[TableId, TableSchema] = {}
    for item in value or []:
        table = TableId(*item["table"])
        columns = tuple(
            ColumnSchema(**dict(zip(_COLUMN_FIELDS, c, strict=False))) for c in item["columns"]
        )
        meta = {k: v for k, v in (item.get("meta") or {}).items() if k in _META_FIELDS}
        shapes[table] = TableSchema(
            table,
            columns,
            tuple(item["key"]),
            ReplicaIdentity(item["identity"]),
            lake_columns=LakeColumns(**meta),
        )
    return shapes
