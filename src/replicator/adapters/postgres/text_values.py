"""PostgreSQL text output -> Arrow columns, the same types the snapshot produces.

CDC values arrive as each type's text output (pgoutput's text mode), written under the fixed
session settings of ``SESSION_SETTINGS`` below. Conversion is columnar: a whole column of
strings is cast by Arrow's C++ parsers (integers, floats incl. NaN/Infinity, decimals, dates,
timestamps with offsets); only ``bytea``, ``boolean`` and arrays need a little Python.
Values a Delta type cannot hold fail with the snapshot's own error (``arrow_types``), and dates'
and timestamps' ``infinity``/``-infinity`` become the snapshot's sentinels.
"""

from __future__ import annotations

from binascii import a2b_hex
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from replicator.adapters.postgres.arrow_types import (
    ColumnTransport,
    decimal_from_text,
    multi_dimensional,
    temporal_range,
)
from replicator.domain.errors import SourceReadError


class MultiDimensionalArrayError(ValueError):
    """An array literal with nested braces: an Arrow list column cannot hold it."""


def parse_array(text: str, delimiter: str = ",") -> list[str | None]:
    """Elements of a one-dimensional array literal such as ``{1,NULL,"a \\"b\\"",""}``,
    separated by the element type's ``delimiter`` (``pg_type.typdelim``: ``;`` for ``box``).

    Bounds (``[0:1]={...}``) are dropped, as binary COPY drops them."""
    if not text.startswith("{"):
        # Arrays with explicit bounds print as '[0:1]={...}'.
        text = text[text.index("=") + 1 :]
    if text == "{}":
        return []
    if text[1:2] == "{":
        raise MultiDimensionalArrayError(text)
    out: list[str | None] = []
    i, end = 1, len(text) - 1
    while i < end:
        if text[i] == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            out.append("".join(chars))
            i += 1  # closing quote
        else:
            j = text.find(delimiter, i)
            j = end if j == -1 else j
            item = text[i:j]
            out.append(None if item == "NULL" else item)
            i = j
        i += 1  # the delimiter
    return out


Text = str | bytes  # text output, as str or as its UTF-8 bytes (the change stream's form)


def _strings(values: Sequence[Text | None]) -> pa.Array:
    """A string array; UTF-8 bytes are validated by Arrow in one pass."""
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bytes):
        return pc.cast(pa.array(values, pa.binary()), pa.string())
    return pa.array(values, pa.string())


def _temporal_array(strings: pa.Array, transport: ColumnTransport) -> pa.Array:
    """Dates and timestamps: ``infinity``/``-infinity`` clamped as the snapshot clamps them;
    a value Arrow cannot parse is one Delta cannot hold (a BC date, a year after 9999)."""
    temporal = temporal_range(transport.arrow_type)
    assert temporal is not None
    arrow_type = _element_type(transport.arrow_type)
    infinity, minus_infinity = pc.equal(strings, "infinity"), pc.equal(strings, "-infinity")
    special = pc.or_(infinity, minus_infinity)
    has_special = pc.any(special).as_py()
    if has_special:
        strings = pc.if_else(special, pa.scalar(None, pa.string()), strings)
    try:
        parsed = pc.cast(strings, arrow_type)
    except pa.ArrowInvalid as e:
        raise temporal.out_of_range(transport) from e
    if not has_special:
        return parsed
    ints = parsed.view(temporal.storage)
    ints = pc.if_else(infinity, temporal.high, pc.if_else(minus_infinity, temporal.low, ints))
    return ints.cast(temporal.storage).view(arrow_type)


def _element_type(arrow_type: pa.DataType) -> pa.DataType:
    return arrow_type.value_type if pa.types.is_list(arrow_type) else arrow_type


def _scalar_array(values: Sequence[Text | None], transport: ColumnTransport) -> pa.Array:
    arrow_type = _element_type(transport.arrow_type)
    if pa.types.is_binary(arrow_type):  # bytea's hex output: a backslash, 'x', hex digits
        return pa.array([None if v is None else a2b_hex(v[2:]) for v in values], pa.binary())
    strings = _strings(values)
    if pa.types.is_string(arrow_type):
        return strings
    if pa.types.is_boolean(arrow_type):
        return pc.equal(strings, "t")
    if pa.types.is_decimal(arrow_type):
        return decimal_from_text(strings, transport)
    if temporal_range(arrow_type) is not None:
        return _temporal_array(strings, transport)
    return pc.cast(strings, arrow_type)


def column_from_text(transport: ColumnTransport, values: Sequence[Text | None]) -> pa.Array:
    """One Arrow column of ``transport.arrow_type`` from the column's text values."""
    arrow_type = transport.arrow_type
    try:
        if pa.types.is_list(arrow_type):
            offsets = [0]
            flat: list[str | None] = []
            valid = []
            for value in values:
                if value is not None:
                    text = value.decode() if isinstance(value, bytes) else value
                    try:
                        flat.extend(parse_array(text, transport.delimiter))
                    except MultiDimensionalArrayError:
                        raise multi_dimensional(transport, text) from None
                valid.append(value is not None)
                offsets.append(len(flat))
            elements = _scalar_array(flat, transport)
            mask = pa.array([not v for v in valid], pa.bool_())
            return pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), elements, type=arrow_type, mask=mask
            )
        return _scalar_array(values, transport)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as e:
        raise SourceReadError(
            f"{transport.label}: a value does not convert to {arrow_type}: {e}"
        ) from e
