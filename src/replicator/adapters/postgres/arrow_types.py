"""How each PostgreSQL type travels into Arrow (and from there into Delta): one table, one place.

Every column gets a *transport* (how the snapshot SELECT reads it) and a target Arrow type.
Types with an exact Arrow/Delta counterpart travel natively through binary COPY; types Delta
cannot hold (``interval``, ``time``, ``uuid``, ``inet``, ranges, ...) are read as PostgreSQL's
own text output, so no value is ever rounded or dropped. The README's type table mirrors this.
"""

from __future__ import annotations

import re

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from replicator.domain.errors import SourceSchemaError
from replicator.domain.model import ColumnSchema, TableId, TableSchema

# Delta's decimal holds at most 38 digits.
MAX_DECIMAL_PRECISION = 38

_NATIVE: dict[str, pa.DataType] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    # JSON keeps its text; binary COPY of jsonb returns the normalised jsonb text.
    "json": pa.string(),
    "jsonb": pa.string(),
}
# Element types an array may have and still travel natively as an Arrow list.
_NATIVE_ELEMENTS = {k: v for k, v in _NATIVE.items() if k not in ("json", "jsonb")}

_NUMERIC_TYPMOD = re.compile(r"^numeric\((\d+),(\d+)\)$")


def quote_ident(name: str) -> str:
    """PostgreSQL's identifier quoting: wrap in double quotes, double any inside."""
    return '"' + name.replace('"', '""') + '"'


@attrs.frozen
class ColumnTransport:
    """How one column is selected and what Arrow type it lands as."""

    name: str
    select_sql: str
    arrow_type: pa.DataType
    nullable: bool = True
    # numeric(p,s): arrives as exact decimal text, cast to decimal128(p,s) in Arrow.
    cast_from_text: bool = False


def _decimal_of(column: ColumnSchema) -> pa.DataType | None:
    match = _NUMERIC_TYPMOD.match(column.pg_type.replace(" ", ""))
    if not match:
        return None
    precision, scale = int(match.group(1)), int(match.group(2))
    if precision > MAX_DECIMAL_PRECISION:
        return None
    return pa.decimal128(precision, scale)


def transport_for(column: ColumnSchema, *, nullable: bool = True) -> ColumnTransport:
    return attrs.evolve(_transport_for(column), nullable=nullable)


def transports_for(table: TableSchema) -> list[ColumnTransport]:
    """The table's columns in source order. Only primary key columns are NOT NULL in the lake:
    a delete travels as its key with every other column NULL."""
    keys = set(table.primary_key)
    return [transport_for(c, nullable=c.name not in keys) for c in table.columns]


def _transport_for(column: ColumnSchema) -> ColumnTransport:
    ident = quote_ident(column.name)
    base = column.base_type
    if column.is_array:
        element = _NATIVE_ELEMENTS.get(base) if column.type_kind != "e" else None
        if element is not None:
            return ColumnTransport(column.name, ident, pa.list_(element))
        return ColumnTransport(column.name, f"{ident}::text[] AS {ident}", pa.list_(pa.string()))
    if base == "numeric":
        decimal = _decimal_of(column)
        if decimal is not None:
            return ColumnTransport(column.name, ident, decimal, cast_from_text=True)
        # Unconstrained numeric, or precision above Delta's 38: exact decimal text.
        return ColumnTransport(column.name, f"{ident}::text AS {ident}", pa.string())
    native = _NATIVE.get(base)
    if native is not None and column.type_kind != "e":
        return ColumnTransport(column.name, ident, native)
    # Enums, uuid, time, timetz, interval (ISO 8601), inet, money, bit, ranges, xml, ...
    return ColumnTransport(column.name, f"{ident}::text AS {ident}", pa.string())


# The replicator's own columns, on every lake table (snapshot and CDC alike).
LSN_COLUMN = "_pg_lsn"
COMMIT_TS_COLUMN = "_pg_commit_ts"
DELETED_TS_COLUMN = "_pg_deleted_ts"
META_FIELDS = (
    pa.field(LSN_COLUMN, pa.int64()),
    pa.field(COMMIT_TS_COLUMN, pa.timestamp("us", tz="UTC")),
    pa.field(DELETED_TS_COLUMN, pa.timestamp("us", tz="UTC")),
)


def target_schema(transports: list[ColumnTransport]) -> pa.Schema:
    """Source columns in order, then the metadata columns."""
    fields = [pa.field(t.name, t.arrow_type, nullable=t.nullable) for t in transports]
    return pa.schema([*fields, *META_FIELDS])


def conform_batch(
    table_id: TableId,
    batch: pa.RecordBatch,
    transports: list[ColumnTransport],
    schema: pa.Schema,
    lsn: int | None = None,
) -> pa.RecordBatch:
    """Turn a batch as the driver delivered it into the target schema, column by column.

    Zero-copy where the driver's type is already right; extension types (json, opaque numeric)
    give up their storage array; numeric(p,s) text is cast to decimal exactly (a value that does
    not fit, such as ``NaN``, fails loudly instead of being rounded or nulled).
    """
    arrays = []
    for i, transport in enumerate(transports):
        array = batch.column(i)
        if isinstance(array, pa.ExtensionArray):
            array = array.storage
        if transport.cast_from_text:
            try:
                array = pc.cast(array, transport.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SourceSchemaError(
                    f"{table_id}.{transport.name}: a value does not fit "
                    f"{transport.arrow_type} ({e}); numeric NaN/Infinity need an unconstrained "
                    "numeric column, which is replicated as exact text"
                ) from e
        elif array.type != transport.arrow_type:
            array = array.cast(transport.arrow_type)
        arrays.append(array)
    rows = batch.num_rows
    # Snapshot rows carry the snapshot's position; they have no commit time and are not deleted.
    position = pa.scalar(lsn, pa.int64())
    arrays.append(pa.repeat(position, rows) if lsn is not None else pa.nulls(rows, pa.int64()))
    arrays.append(pa.nulls(rows, META_FIELDS[1].type))
    arrays.append(pa.nulls(rows, META_FIELDS[2].type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
