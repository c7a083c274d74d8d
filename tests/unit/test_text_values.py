"""CDC text values -> the snapshot's Arrow types."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa
import pytest

from replicator.adapters.postgres.arrow_types import ColumnTransport
from replicator.adapters.postgres.text_values import column_from_text, parse_array
from replicator.domain.errors import SourceReadError


def convert(arrow_type: pa.DataType, values: list[object]) -> list[object]:
    return column_from_text(ColumnTransport("c", "c", arrow_type), values).to_pylist()  # type: ignore[arg-type]


class TestScalars:
    def test_integers_floats_and_special_floats(self) -> None:
        assert convert(pa.int64(), [b"-9223372036854775808", None]) == [-(2**63), None]
        floats = convert(pa.float64(), [b"2.718281828459045", b"Infinity", b"-Infinity", b"NaN"])
        assert floats[:3] == [2.718281828459045, math.inf, -math.inf]
        assert math.isnan(floats[3])  # type: ignore[arg-type]

    def test_decimal_date_and_timestamps(self) -> None:
        assert convert(pa.decimal128(12, 2), [b"1234567890.12"]) == [Decimal("1234567890.12")]
        assert convert(pa.date32(), [b"2024-02-29"]) == [dt.date(2024, 2, 29)]
        assert convert(pa.timestamp("us"), [b"2024-01-02 03:04:05.123456"]) == [
            dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
        ]
        (aware,) = convert(pa.timestamp("us", "UTC"), [b"2024-01-02 01:04:05.5+00"])
        assert aware == dt.datetime(2024, 1, 2, 1, 4, 5, 500000, tzinfo=dt.UTC)

    def test_boolean_bytea_and_unicode_text(self) -> None:
        assert convert(pa.bool_(), [b"t", b"f", None]) == [True, False, None]
        assert convert(pa.binary(), [b"\\xdeadbeef00", b"\\x", None]) == [
            b"\xde\xad\xbe\xef\x00",
            b"",
            None,
        ]
        assert convert(pa.string(), ["héllo ✓".encode(), b""]) == ["héllo ✓", ""]

    def test_invalid_utf8_or_number_is_a_clear_error(self) -> None:
        with pytest.raises(SourceReadError, match="column c"):
            convert(pa.string(), [b"\xff\xfe"])
        with pytest.raises(SourceReadError, match="does not convert to decimal"):
            convert(pa.decimal128(5, 2), [b"NaN"])


class TestArrays:
    def test_parse_array_literals(self) -> None:
        assert parse_array("{1,NULL,3}") == ["1", None, "3"]
        assert parse_array('{"x",NULL,"","ünï","a \\\\ b","q\\"uote","NULL"}') == [
            "x", None, "", "ünï", "a \\ b", 'q"uote', "NULL",
        ]  # fmt: skip
        assert parse_array("{}") == []
        assert parse_array("[0:1]={7,8}") == ["7", "8"]

    def test_multidimensional_arrays_are_refused_clearly(self) -> None:
        with pytest.raises(SourceReadError, match="multi-dimensional"):
            parse_array("{{1,2},{3,4}}")

    def test_array_columns(self) -> None:
        assert convert(pa.list_(pa.int32()), [b"{1,NULL,3}", None, b"{}"]) == [
            [1, None, 3],
            None,
            [],
        ]
        assert convert(pa.list_(pa.string()), [b'{"a,b",c}']) == [["a,b", "c"]]
