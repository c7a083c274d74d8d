"""The one spelling both sides of ``verify`` are reduced to, value by value.

The source is read as PostgreSQL's own text output (each type's output function, under the
replicator's fixed session settings: ``DateStyle=ISO``, ``IntervalStyle=iso_8601``,
``TimeZone=UTC``, ``extra_float_digits=3``, ``bytea_output=hex``); the lake as its destination
returns it. This module decodes the source's text and renders the lake's values on its own: it
shares no code with the conversions that write the lake (``adapters/postgres/arrow_types.py``,
``text_values.py``), so a fault in those cannot hide itself (a ``box[]`` split at its commas
instead of its ``;`` gives other elements than PostgreSQL's text does).

Canonical values are strings (PostgreSQL's text where the lake can render it: integers,
numerics, booleans, ``bytea``, dates, timestamps; the float's shortest round-trip ``repr``,
which PostgreSQL's text reads back to exactly) and tuples of them for arrays. The documented
type policies (README, *Type policies*) apply to the source's side: date and timestamp
infinities become their sentinels, an array's lower bounds are dropped.
"""

from __future__ import annotations

import datetime as dt
import operator
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from replicator.domain.model import ColumnSchema, TableSchema

Canon = Callable[[Any], Any]  # one non-NULL value
ColumnCanon = Callable[[Sequence[Any]], Sequence[Any]]  # a batch's column, NULLs kept

_DATE_SENTINELS = {"infinity": "9999-12-31", "-infinity": "0001-01-01"}
_TS_SENTINELS = {"infinity": "9999-12-31 23:59:59.999999", "-infinity": "0001-01-01 00:00:00"}
_TSTZ_SENTINELS = {k: v + "+00" for k, v in _TS_SENTINELS.items()}
_SENTINELS = {"date": _DATE_SENTINELS, "timestamp": _TS_SENTINELS, "timestamptz": _TSTZ_SENTINELS}
_ARRAY_SPACE = " \t\n\r\v\f"


def source_canons(table: TableSchema) -> list[ColumnCanon | None]:
    """Per column, the canonical values of a column of source texts (None: the texts are)."""
    return [_source_column(c) for c in table.columns]


def lake_canons(table: TableSchema) -> list[ColumnCanon]:
    """Per column, the canonical values of a column of lake values."""
    return [_each(_lake_canon(c)) for c in table.columns]


def _each(canon: Canon) -> ColumnCanon:
    def column(values: Sequence[Any]) -> Sequence[Any]:
        return [None if v is None else canon(v) for v in values]

    return column


def _sentinels(sentinels: dict[str, str]) -> ColumnCanon:
    """Infinities as their sentinels; a column without any is returned as it is (a scan of
    the list in C, where a function call per value would cost ten times more)."""

    def column(values: Sequence[Any]) -> Sequence[Any]:
        if not any(s in values for s in sentinels):
            return values
        return [None if v is None else sentinels.get(v, v) for v in values]

    return column


def canonical_rows(
    rows: Sequence[tuple[Any, ...]], canons: Sequence[ColumnCanon | None]
) -> Sequence[tuple[Any, ...]]:
    """Rows with every non-NULL value through its column's canon. Rows whose columns the canons
    leave as they are (no infinities to clamp, say) are returned as they came."""
    if not rows or all(c is None for c in canons):
        return rows
    changed: dict[int, Sequence[Any]] = {}
    for i, canon in enumerate(canons):
        if canon is not None:
            column = list(map(operator.itemgetter(i), rows))
            converted = canon(column)
            if converted is not column:
                changed[i] = converted
    if not changed:
        return rows
    columns = [changed.get(i, c) for i, c in enumerate(zip(*rows, strict=True))]
    return list(zip(*columns, strict=True))


def canonical_columns(
    num_rows: int,
    columns: Sequence[Sequence[Any]],
    canons: Sequence[ColumnCanon | None],
    rendered: frozenset[int] = frozenset(),
) -> list[tuple[Any, ...]]:
    """Rows from columns, each column through its canon (but the columns already
    ``rendered``)."""
    if not columns:
        return [()] * num_rows
    converted = list(columns)
    for i, canon in enumerate(canons):
        if canon is not None and i not in rendered:
            converted[i] = canon(converted[i])
    return list(zip(*converted, strict=True))


# -- the source: PostgreSQL's text ---------------------------------------------------------


def _source_column(column: ColumnSchema) -> ColumnCanon | None:
    if column.as_text:
        return None
    sentinels = _SENTINELS.get(column.base_type)
    if sentinels is not None and not column.is_array:
        return _sentinels(sentinels)
    canon = _source_canon(column)
    return None if canon is None else _each(canon)


def _source_canon(column: ColumnSchema) -> Canon | None:
    if column.is_array:
        element = _source_scalar(column.base_type)
        delimiter = column.delimiter

        def array(text: str) -> Any:
            return _canon_parsed(parse_array(text, delimiter), element)

        return array
    return _source_scalar(column.base_type)


def _source_scalar(base: str) -> Canon | None:
    if base == "float8":
        return lambda text: repr(float(text))
    if base == "float4":
        return lambda text: repr(_single(float(text)))
    if base == "date":
        return lambda text: _DATE_SENTINELS.get(text, text)
    if base == "timestamp":
        return lambda text: _TS_SENTINELS.get(text, text)
    if base == "timestamptz":
        return lambda text: _TSTZ_SENTINELS.get(text, text)
    return None


def _single(value: float) -> float:
    """The float32 nearest ``value`` (as a Python float)."""
    packed: float = struct.unpack("f", struct.pack("f", value))[0]
    return packed


def _canon_parsed(parsed: list[Any], element: Canon | None) -> tuple[Any, ...]:
    return tuple(
        None
        if e is None
        else _canon_parsed(e, element)
        if isinstance(e, list)
        else e
        if element is None
        else element(e)
        for e in parsed
    )


def parse_array(text: str, delimiter: str = ",") -> list[Any]:
    """PostgreSQL's array text (``array_out``) as nested lists of element texts, NULL elements
    as None; lower bounds (``[0:1]={1,2}``) are dropped."""
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    stack: list[list[Any]] = []
    result: list[Any] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            stack.append([])
            i += 1
        elif c == "}":
            done = stack.pop()
            if stack:
                stack[-1].append(done)
            else:
                result = done
            i += 1
        elif c == delimiter or c in _ARRAY_SPACE:
            i += 1
        elif c == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            stack[-1].append("".join(chars))
            i += 1
        else:
            start = i
            while i < n and text[i] != delimiter and text[i] != "}":
                i += 1
            bare = text[start:i].strip(_ARRAY_SPACE)
            stack[-1].append(None if bare.upper() == "NULL" else bare)
    return result


# -- the lake: the destination's values ------------------------------------------------------


def _lake_canon(column: ColumnSchema) -> Canon:
    base = column.base_type
    aware = base == "timestamptz"

    def scalar(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return value
        if kind is bool:
            return "t" if value else "f"
        if kind is int:
            return str(value)
        if kind is float:
            return repr(value)
        if kind is Decimal:
            return format(value, "f")
        if kind is dt.datetime:
            return pg_timestamp(value, aware)
        if kind is dt.date:
            return value.isoformat()
        if kind is bytes or kind is bytearray or kind is memoryview:
            return "\\x" + bytes(value).hex()
        if isinstance(value, list | tuple):
            return tuple(None if e is None else scalar(e) for e in value)
        return str(value)

    if column.is_array and not column.as_text and base in ("timestamp", "timestamptz"):
        # DuckDB keeps arrays as JSON, where timestamps are ISO 8601 text
        def stamped(value: Any) -> Any:
            if isinstance(value, str):
                return pg_timestamp(dt.datetime.fromisoformat(value), aware)
            return scalar(value)

        def array(value: Any) -> Any:
            if isinstance(value, str):
                return value
            return tuple(None if e is None else stamped(e) for e in value)

        return array
    return scalar


def pg_timestamp(value: dt.datetime, aware: bool) -> str:
    """A datetime as PostgreSQL prints a ``timestamp`` (``aware``: a ``timestamptz`` in UTC,
    where a naive value is read as UTC): fractions without trailing zeros."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    text = value.isoformat(sep=" ")
    if value.microsecond:
        text = text.rstrip("0")
    return text + "+00" if aware else text


# -- keys for a sample: the source's text as the lake's typed values -------------------------

_KEY_TYPES: dict[str, Callable[[str], Any]] = {
    **dict.fromkeys(("int2", "int4", "int8", "oid"), int),
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "uuid", "citext"), str),
    "date": lambda text: dt.date.fromisoformat(_DATE_SENTINELS.get(text, text)),
    "timestamp": lambda text: dt.datetime.fromisoformat(_TS_SENTINELS.get(text, text)),
    "timestamptz": lambda text: dt.datetime.fromisoformat(_TSTZ_SENTINELS.get(text, text)),
    "bool": lambda text: text == "t",
}


def key_parser(table: TableSchema) -> Callable[[Sequence[str]], tuple[Any, ...]] | None:
    """Source key texts to the values the lake stores them as, for looking sampled rows up in
    the lake; None when a key column's type is not one a sample can look up by (the table is
    then verified whole)."""
    parsers = []
    for name in table.primary_key:
        column = table.column(name)
        parse = str if column.as_text else _KEY_TYPES.get(column.base_type)
        if parse is None or column.is_array:
            return None
        parsers.append(parse)

    def keyed(texts: Sequence[str]) -> tuple[Any, ...]:
        return tuple(p(t) for p, t in zip(parsers, texts, strict=True))

    return keyed if parsers else None
