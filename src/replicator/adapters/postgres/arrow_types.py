"""How each PostgreSQL type travels into Arrow (and from there into Delta): one table, one place.

Every column gets a *transport* (how the snapshot SELECT reads it) and a target Arrow type.
Types with an exact Arrow/Delta counterpart travel natively through binary COPY; types Delta
cannot hold (``interval``, ``time``, ``uuid``, ``inet``, ranges, ...) are read as PostgreSQL's
own text output, so no value is ever rounded or dropped. The README's type table mirrors this.

A value that has no place in its Delta type (numeric ``NaN`` in a ``decimal``, a BC date, a
multi-dimensional array in an ``array`` column) fails the run with one message, the same by
snapshot and by CDC, that names the fix: list the column in ``text_columns``. Dates and
timestamps ``infinity``/``-infinity`` are the exception: they become the sentinels
``9999-12-31 23:59:59.999999`` and ``0001-01-01 00:00:00`` (see ``TemporalRange``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from replicator.domain.errors import SourceSchemaError
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import ColumnSchema, TableSchema

# Delta's decimal holds at most 38 digits.
MAX_DECIMAL_PRECISION = 38
TEXT_COLUMNS_KEY = "[sources.pg_replication] text_columns"

# Lake types leave room for PostgreSQL's widening ALTERs, so a column that widens mid-stream
# needs no change in the lake: every integer is a long, every numeric(p,s) a decimal(38,s),
# every character type a string.
_NATIVE: dict[str, pa.DataType] = {
    "int2": pa.int64(),
    "int4": pa.int64(),
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
    # Arrays: an extra snapshot column, NULL unless the value is multi-dimensional (binary COPY
    # would flatten it silently), then the start of its text.
    check_sql: str | None = None
    # Arrays of non-native elements: arrive as the array's text output and are parsed exactly
    # as CDC parses it (a Python loop per value: correctness first for these rarer columns).
    parse_text: bool = False
    # Between an array's elements in its text: ',' but for a few types (``box``: ';').
    delimiter: str = ","
    # ``schema.table.column``, for error messages.
    label: str = attrs.field()

    @label.default
    def _label_default(self) -> str:
        return self.name


def unrepresentable(transport: ColumnTransport, what: str) -> SourceSchemaError:
    """The one error for a value its Delta type cannot hold, snapshot and CDC alike."""
    return SourceSchemaError(
        f"{transport.label}: {what} cannot be stored as {transport.arrow_type} in Delta; "
        f"list the column in {TEXT_COLUMNS_KEY} to replicate it as PostgreSQL's text"
    )


def multi_dimensional(transport: ColumnTransport, text: str) -> SourceSchemaError:
    return unrepresentable(transport, f"the multi-dimensional array {text[:_SHOWN_CHARS]}")


_SHOWN_CHARS = 60
# PostgreSQL's spelling of the special numerics (the driver prints them as nan and inf).
_PG_SPECIAL_NUMERIC = {
    "nan": "NaN",
    "inf": "Infinity",
    "-inf": "-Infinity",
    "infinity": "Infinity",
    "-infinity": "-Infinity",
}


def decimal_from_text(strings: pa.Array, transport: ColumnTransport) -> pa.Array:
    """Exact decimal text (either path's) -> the column's decimal128; NaN/Infinity fail."""
    try:
        return pc.cast(strings, transport.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        for value in strings.to_pylist():
            try:
                pc.cast(pa.array([value], pa.string()), transport.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                shown = _PG_SPECIAL_NUMERIC.get(value.lower(), value)
                raise unrepresentable(transport, f"the value {shown}") from e
        raise


@attrs.frozen
class TemporalRange:
    """What Delta (and Spark, Databricks) hold of a date/timestamp type, as Arrow integers.

    ``infinity``/``-infinity`` are clamped to ``high``/``low``; binary COPY delivers them as
    PostgreSQL's int max/min shifted to the Unix epoch (wrapping around), ``driver_*`` below.
    Any other value outside ``low..high`` (a BC date, a year after 9999) fails loudly.
    """

    storage: pa.DataType
    low: int
    high: int
    driver_infinity: int
    driver_minus_infinity: int

    def clamp(self, array: pa.Array, transport: ColumnTransport) -> pa.Array:
        """A driver-delivered column (or list of them) within range, infinities clamped."""
        if pa.types.is_list(array.type):
            values = self.clamp(array.values, transport)
            if values is array.values:
                return array
            return pa.ListArray.from_arrays(
                array.offsets, values, type=array.type, mask=array.is_null()
            )
        ints = array.view(self.storage)
        if self._within(ints):
            return array
        ints = pc.if_else(pc.equal(ints, self.driver_infinity), self.high, ints)
        ints = pc.if_else(pc.equal(ints, self.driver_minus_infinity), self.low, ints)
        if not self._within(ints):
            raise self.out_of_range(transport)
        return ints.cast(self.storage).view(array.type)

    def _within(self, ints: pa.Array) -> bool:
        bounds = pc.min_max(ints)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        return low is None or (low >= self.low and high <= self.high)

    @staticmethod
    def out_of_range(transport: ColumnTransport) -> SourceSchemaError:
        return unrepresentable(transport, "a value before 0001-01-01 or after 9999-12-31")


_PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400_000_000


def _wrap(value: int, bits: int) -> int:
    """Two's complement overflow, as the driver's C addition does it."""
    half: int = 1 << (bits - 1)
    return (value + half) % (2 * half) - half


_DATE_RANGE = TemporalRange(
    pa.int32(),
    low=-719_162,  # 0001-01-01
    high=2_932_896,  # 9999-12-31
    driver_infinity=_wrap(2**31 - 1 + _PG_EPOCH_DAYS, 32),
    driver_minus_infinity=-(2**31) + _PG_EPOCH_DAYS,
)
_TIMESTAMP_RANGE = TemporalRange(
    pa.int64(),
    low=-62_135_596_800_000_000,  # 0001-01-01 00:00:00
    high=253_402_300_799_999_999,  # 9999-12-31 23:59:59.999999
    driver_infinity=_wrap(2**63 - 1 + _PG_EPOCH_US, 64),
    driver_minus_infinity=-(2**63) + _PG_EPOCH_US,
)


def temporal_range(arrow_type: pa.DataType) -> TemporalRange | None:
    """The range of a date or timestamp type (or of a list's elements); None for others."""
    if pa.types.is_list(arrow_type):
        return temporal_range(arrow_type.value_type)
    if pa.types.is_date32(arrow_type):
        return _DATE_RANGE
    if pa.types.is_timestamp(arrow_type):
        return _TIMESTAMP_RANGE
    return None


def _decimal_of(column: ColumnSchema) -> pa.DataType | None:
    """decimal128(38,s) for numeric(p,s) with p <= 38 and 0 <= s <= p, as Delta requires: the
    full 38 digits, so a later ``numeric(p2,s)`` with p2 > p still fits."""
    match = _NUMERIC_TYPMOD.match(column.pg_type.replace(" ", ""))
    if not match:
        return None  # no typmod, or a negative scale (PostgreSQL 15+)
    precision, scale = int(match.group(1)), int(match.group(2))
    if precision > MAX_DECIMAL_PRECISION or scale > precision:
        return None
    return pa.decimal128(MAX_DECIMAL_PRECISION, scale)


def transport_for(column: ColumnSchema, *, nullable: bool = True) -> ColumnTransport:
    return attrs.evolve(_transport_for(column), nullable=nullable)


def transports_for(table: TableSchema) -> list[ColumnTransport]:
    """The table's columns in source order. Only primary key columns are NOT NULL in the lake:
    a delete travels as its key with every other column NULL."""
    keys = set(table.primary_key)
    return [
        attrs.evolve(
            transport_for(c, nullable=c.name not in keys), label=f"{table.table_id}.{c.name}"
        )
        for c in table.columns
    ]


def output_text(ident: str) -> str:
    """The value as its type's output function prints it, which is what pgoutput sends.
    Not ``::text``: some casts print differently (``inet`` adds ``/128``, ``boolean`` says
    ``true``, ``char(n)`` drops its padding). ``format`` prints NULL as '', hence the CASE."""
    return f"CASE WHEN {ident} IS NULL THEN NULL ELSE format('%s', {ident}) END AS {ident}"


def _transport_for(column: ColumnSchema) -> ColumnTransport:
    ident = quote_ident(column.name)
    base = column.base_type
    as_text = ColumnTransport(column.name, output_text(ident), pa.string())
    if column.as_text:
        return as_text
    if column.is_array:
        element = _NATIVE_ELEMENTS.get(base) if column.type_kind != "e" else None
        if element is None:
            return attrs.evolve(
                as_text,
                arrow_type=pa.list_(pa.string()),
                parse_text=True,
                delimiter=column.delimiter,
            )
        check = f"CASE WHEN array_ndims({ident}) > 1 THEN left({ident}::text, {_SHOWN_CHARS}) END"
        return ColumnTransport(column.name, ident, pa.list_(element), check_sql=check)
    if base == "numeric":
        decimal = _decimal_of(column)
        if decimal is not None:
            return ColumnTransport(column.name, ident, decimal, cast_from_text=True)
        # Unconstrained numeric, or precision above Delta's 38: exact decimal text.
        return as_text
    native = _NATIVE.get(base)
    if native is not None and column.type_kind != "e":
        return ColumnTransport(column.name, ident, native)
    # Enums, uuid, time, timetz, interval (ISO 8601), inet, money, bit, ranges, xml, ...
    return as_text


_UTC = pa.timestamp("us", tz="UTC")


def meta_fields(columns: LakeColumns) -> tuple[pa.Field, ...]:
    """The replicator's own columns, on every lake table (snapshot and CDC alike), under the
    table's names for them."""
    return (
        pa.field(columns.lsn, pa.int64()),
        pa.field(columns.commit_ts, _UTC),
        pa.field(columns.deleted_ts, _UTC),
    )


def select_list(transports: list[ColumnTransport]) -> str:
    """The snapshot SELECT's columns: each transport's, then the checks ``conform_batch`` reads."""
    checks = [t.check_sql for t in transports if t.check_sql is not None]
    return ", ".join([t.select_sql for t in transports] + checks)


def target_schema(transports: list[ColumnTransport], columns: LakeColumns) -> pa.Schema:
    """Source columns in order, then the metadata columns (``columns``: the table's names)."""
    fields = [pa.field(t.name, t.arrow_type, nullable=t.nullable) for t in transports]
    return pa.schema([*fields, *meta_fields(columns)])


def conform_batch(
    batch: pa.RecordBatch,
    transports: list[ColumnTransport],
    schema: pa.Schema,
    lsn: int | None = None,
    *,
    from_text: Callable[[ColumnTransport, list[str | None]], pa.Array],
) -> pa.RecordBatch:
    """Turn a batch as the driver delivered it into the target schema, column by column.

    The batch holds the transports' columns, then one column per transport with a
    ``check_sql``, in order (see :func:`select_list`). ``parse_text`` columns go through
    ``from_text``, CDC's own conversion (``text_values.column_from_text``). Zero-copy where
    the driver's type is already right; extension types (json, opaque numeric) give up their
    storage array; numeric(p,s) text is cast to decimal exactly; dates and timestamps get
    their infinities clamped. A value that does not fit (``NaN`` in a decimal, a BC date, a
    multi-dimensional array) fails loudly instead of being rounded, nulled or flattened.
    """
    checks = iter(range(len(transports), batch.num_columns))
    arrays = []
    for i, transport in enumerate(transports):
        if transport.check_sql is not None:
            flagged = batch.column(next(checks)).drop_null()
            if len(flagged):
                raise multi_dimensional(transport, flagged[0].as_py())
        array = batch.column(i)
        if isinstance(array, pa.ExtensionArray):
            array = array.storage
        if transport.parse_text:
            array = from_text(transport, array.to_pylist())
        elif transport.cast_from_text:
            array = decimal_from_text(array, transport)
        elif array.type != transport.arrow_type:
            array = array.cast(transport.arrow_type)
        if (temporal := temporal_range(transport.arrow_type)) is not None:
            array = temporal.clamp(array, transport)
        arrays.append(array)
    arrays.extend(meta_arrays(batch.num_rows, lsn))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def meta_arrays(rows: int, lsn: int | None) -> list[pa.Array]:
    """The metadata columns of snapshot rows: the snapshot's position, no commit time (the rows
    were not read from a change), not deleted."""
    position = pa.scalar(lsn, pa.int64())
    return [
        pa.repeat(position, rows) if lsn is not None else pa.nulls(rows, pa.int64()),
        pa.nulls(rows, _UTC),
        pa.nulls(rows, _UTC),
    ]
