"""CDC text values -> the snapshot's Arrow types."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal

import pyarrow as pa
import pytest

from replicator.adapters.postgres.arrow_types import ColumnTransport
from replicator.adapters.postgres.connection import SESSION_SETTINGS
from replicator.adapters.postgres.text_values import (
    MultiDimensionalArrayError,
    Text,
    column_from_text,
    parse_array,
)
from replicator.domain.errors import SourceReadError, SourceSchemaError

UTC = dt.UTC
TEXT_COLUMNS_FIX = "list the column in [sources.pg_replication] text_columns"


def convert(arrow_type: pa.DataType, values: Sequence[Text | None]) -> list[object]:
    transport = ColumnTransport("c", "c", arrow_type, label="public.t.c")
    converted: list[object] = column_from_text(transport, values).to_pylist()
    return converted


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

    def test_invalid_utf8_is_a_clear_error(self) -> None:
        with pytest.raises(SourceReadError, match=r"public\.t\.c"):
            convert(pa.string(), [b"\xff\xfe"])

    @pytest.mark.parametrize(("text", "shown"), [(b"NaN", "NaN"), (b"-Infinity", "-Infinity")])
    def test_numeric_specials_in_a_decimal_name_text_columns(self, text: bytes, shown: str) -> None:
        with pytest.raises(SourceSchemaError) as error:
            convert(pa.decimal128(5, 2), [b"1.00", text])
        assert str(error.value).startswith(f"public.t.c: the value {shown} cannot be stored as")
        assert TEXT_COLUMNS_FIX in str(error.value)

    def test_huge_and_tiny_decimals_stay_exact(self) -> None:
        assert convert(pa.decimal128(38, 10), [b"9999999999999999999999999999.9999999999"]) == [
            Decimal("9999999999999999999999999999.9999999999")
        ]
        assert convert(pa.decimal128(38, 38), [b"0.00000000000000000000000000000000000001"]) == [
            Decimal("1E-38")
        ]

    def test_money_prints_the_same_in_every_session(self) -> None:
        assert SESSION_SETTINGS["lc_monetary"] == "C"


class TestDatesAndTimestamps:
    def test_infinities_become_the_sentinels(self) -> None:
        values = [b"infinity", b"-infinity", b"2024-02-29", None]
        assert convert(pa.date32(), values) == [
            dt.date(9999, 12, 31), dt.date(1, 1, 1), dt.date(2024, 2, 29), None,
        ]  # fmt: skip
        assert convert(pa.timestamp("us"), [b"infinity", b"-infinity"]) == [
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            dt.datetime(1, 1, 1),
        ]
        assert convert(pa.timestamp("us", "UTC"), [b"-infinity", b"infinity"]) == [
            dt.datetime(1, 1, 1, tzinfo=UTC),
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]

    def test_year_1_and_year_9999_are_exact(self) -> None:
        assert convert(pa.timestamp("us", "UTC"), [b"0001-01-01 00:00:00+00"]) == [
            dt.datetime(1, 1, 1, tzinfo=UTC)
        ]
        assert convert(pa.timestamp("us"), [b"9999-12-31 23:59:59.999999"]) == [
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
        ]

    @pytest.mark.parametrize("text", [b"0044-03-15 BC", b"10000-01-01", b"4713-01-01 00:00:00 BC"])
    def test_bc_and_after_9999_fail_naming_text_columns(self, text: bytes) -> None:
        with pytest.raises(SourceSchemaError, match="before 0001-01-01 or after 9999-12-31"):
            convert(pa.date32(), [text])

    def test_infinities_inside_arrays(self) -> None:
        assert convert(pa.list_(pa.date32()), [b"{infinity,NULL,-infinity}"]) == [
            [dt.date(9999, 12, 31), None, dt.date(1, 1, 1)]
        ]


class TestArrays:
    def test_parse_array_literals(self) -> None:
        assert parse_array("{1,NULL,3}") == ["1", None, "3"]
        assert parse_array('{"x",NULL,"","ünï","a \\\\ b","q\\"uote","NULL"}') == [
            "x", None, "", "ünï", "a \\ b", 'q"uote', "NULL",
        ]  # fmt: skip
        assert parse_array("{}") == []
        assert parse_array("[0:1]={7,8}") == ["7", "8"]

    def test_multidimensional_arrays_are_refused_clearly(self) -> None:
        with pytest.raises(MultiDimensionalArrayError):
            parse_array("{{1,2},{3,4}}")
        with pytest.raises(SourceSchemaError) as error:
            convert(pa.list_(pa.int32()), [b"{1}", b"{{1,2},{3,4}}"])
        assert str(error.value).startswith(
            "public.t.c: the multi-dimensional array {{1,2},{3,4}} cannot be stored as"
        )
        assert TEXT_COLUMNS_FIX in str(error.value)

    def test_array_columns(self) -> None:
        assert convert(pa.list_(pa.int32()), [b"{1,NULL,3}", None, b"{}"]) == [
            [1, None, 3],
            None,
            [],
        ]
        assert convert(pa.list_(pa.string()), [b'{"a,b",c}']) == [["a,b", "c"]]
