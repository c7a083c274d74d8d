"""Every PostgreSQL type, by snapshot and by CDC, compared value by value with the lake.

One table holds a column per type (or per policy) and three rows: ordinary and extreme values,
special values (NaN, infinities, JSON null, ...), and SQL NULLs. The rows are snapshotted; then
copies are inserted and the NULL row is updated to the special values, and CDC applies both.
Each lake row must equal the expected Python value exactly, whichever way it travelled.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any, NamedTuple

import attrs
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import SourceSchemaError
from tests.integration.helpers import cdc, snapshot
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

UTC = dt.UTC
INF = math.inf
NAN = math.nan
TS_MAX = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
TS_MIN = dt.datetime(1, 1, 1)


class Col(NamedTuple):
    """A column: its type, the SQL literals of rows 1 and 2, and the lake values expected."""

    name: str
    pg_type: str
    literals: tuple[str, str]
    expected: tuple[Any, Any]


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE DOMAIN price AS numeric(8,3);
CREATE DOMAIN int_list AS integer[];
"""
TINY = "0." + "0" * 299 + "1"
HUGE_TEXT = "1234567890123456789012345678901234567890.0123456789"

COLUMNS = [
    # 1. numeric without typmod, and with precision > 38: the exact text
    Col("n_free", "numeric", (f"'{TINY}'", "'NaN'"), (TINY, "NaN")),
    Col("n_free_inf", "numeric", ("'1e300'", "'-Infinity'"), ("1" + "0" * 300, "-Infinity")),
    Col("n_huge", "numeric(50,10)", (f"'{HUGE_TEXT}'", "'-0.0000000001'"),
        (HUGE_TEXT, "-0.0000000001")),
    # 2. numeric(p<=38,s): decimal; with the column in text_columns, NaN lands as text
    Col("n_dec", "numeric(38,10)", ("'9999999999999999999999999999.9999999999'", "'-0.5'"),
        (Decimal("9999999999999999999999999999.9999999999"), Decimal("-0.5000000000"))),
    Col("n_nan", "numeric(10,2)", ("'12.5'", "'NaN'"), ("12.50", "NaN")),
    # 3. floats: NaN and the infinities arrive as themselves
    Col("f4", "real", ("'3.4028235e38'", "'NaN'"), (3.4028234663852886e38, NAN)),
    Col("f4_inf", "real", ("'Infinity'", "'-Infinity'"), (INF, -INF)),
    Col("f8", "double precision", ("'5e-324'", "'NaN'"), (5e-324, NAN)),
    Col("f8_inf", "double precision", ("'Infinity'", "'-Infinity'"), (INF, -INF)),
    # 4. dates and timestamps: year 1 and 9999 exactly; infinities clamped to the same bounds
    Col("d", "date", ("'0001-01-01'", "'infinity'"), (dt.date(1, 1, 1), dt.date(9999, 12, 31))),
    Col("d_low", "date", ("'9999-12-31'", "'-infinity'"),
        (dt.date(9999, 12, 31), dt.date(1, 1, 1))),
    Col("ts", "timestamp", ("'9999-12-31 23:59:59.999999'", "'infinity'"), (TS_MAX, TS_MAX)),
    Col("ts_low", "timestamp", ("'0001-01-01 00:00:00'", "'-infinity'"), (TS_MIN, TS_MIN)),
    Col("tstz", "timestamptz", ("'2024-06-01 12:00:00.000001+05:30'", "'infinity'"),
        (dt.datetime(2024, 6, 1, 6, 30, 0, 1, tzinfo=UTC), TS_MAX.replace(tzinfo=UTC))),
    Col("tstz_low", "timestamptz", ("'0001-01-01 00:00:00+00'", "'-infinity'"),
        (TS_MIN.replace(tzinfo=UTC), TS_MIN.replace(tzinfo=UTC))),
    # ... and, listed in text_columns, what no Delta date can hold lands as its text
    Col("d_bc", "date", ("'0044-03-15 BC'", "'infinity'"), ("0044-03-15 BC", "infinity")),
    Col("ts_far", "timestamptz", ("'10000-01-01 00:00:00+00'", "'-infinity'"),
        ("10000-01-01 00:00:00+00", "-infinity")),
    # 5. everything Delta has no type for: PostgreSQL's text output, exactly
    Col("t", "time", ("'24:00:00'", "'00:00:00.000001'"), ("24:00:00", "00:00:00.000001")),
    Col("ttz", "timetz", ("'23:59:59.999999+14:59'", "'00:00:00-15:59'"),
        ("23:59:59.999999+14:59", "00:00:00-15:59")),
    Col("iv", "interval", ("'1 year 2 months -3 days 04:05:06.789'", "'-178000000 years'"),
        ("P1Y2M-3DT4H5M6.789S", "P-178000000Y")),
    Col("u", "uuid", ("'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "'00000000-0000-0000-0000-000000000000'"),
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000")),
    Col("ip", "inet", ("'::1'", "'192.168.0.1/24'"), ("::1", "192.168.0.1/24")),
    Col("net", "cidr", ("'10.0.0.0/8'", "'2001:db8::/32'"), ("10.0.0.0/8", "2001:db8::/32")),
    Col("mac", "macaddr", ("'08:00:2B:01:02:03'", "'ff:ff:ff:ff:ff:ff'"),
        ("08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff")),
    Col("cash", "money", ("'-1234.56'", "'92233720368547758.07'"),
        ("-$1,234.56", "$92,233,720,368,547,758.07")),
    Col("bits", "bit(4)", ("B'1010'", "B'0000'"), ("1010", "0000")),
    Col("vbits", "varbit", ("B''", "B'1'"), ("", "1")),
    Col("feeling", "mood", ("'happy'", "'sad'"), ("happy", "sad")),
    Col("pos", "posint", ("2147483647", "1"), (2147483647, 1)),
    Col("lbl", "label", ("'héllo ✓'", "''"), ("héllo ✓", "")),
    Col("cost", "price", ("'99999.999'", "'-0.001'"), (Decimal("99999.999"), Decimal("-0.001"))),
    Col("doc", "xml", ("'<a b=\"1\">t &amp; u</a>'", "'plain'"), ('<a b="1">t &amp; u</a>', "plain")),
    Col("tsv", "tsvector", ("'a fat cat'", "''"), ("'a' 'cat' 'fat'", "")),
    Col("r4", "int4range", ("'[1,10)'", "'empty'"), ("[1,10)", "empty")),
    Col("rtz", "tstzrange", ("'[2024-01-01 00:00:00+00,infinity)'", "'(,)'"),
        ('["2024-01-01 00:00:00+00",infinity)', "(,)")),
    Col("pr", "pair", ("ROW(1, 'x y')", "ROW(NULL, '')"), ('(1,"x y")', '(,"")')),
    Col("flag", "boolean", ("true", "false"), (True, False)),
    Col("fixed", "char(5)", ("'ab'", "''"), ("ab   ", "     ")),
    Col("blob", "bytea", ("'\\x00ff'", "''"), (b"\x00\xff", b"")),
    Col("js", "json", ("'{\"a\": 1,  \"b\": [1, null]}'", "'null'"), ('{"a": 1,  "b": [1, null]}', "null")),
    Col("jsb", "jsonb", ("'{\"z\": null, \"a\": \"x\"}'", "'null'"), ('{"a": "x", "z": null}', "null")),
    # 6. arrays: 1-D as lists, NULL elements kept; multi-dimensional as text when listed
    Col("ints", "int[]", ("'{1,NULL,3}'", "'{}'"), ([1, None, 3], [])),
    Col("texts", "text[]", ("'{\"a,b\",NULL,\"\",\"NULL\"}'", "'[0:1]={x,y}'"),
        (["a,b", None, "", "NULL"], ["x", "y"])),
    Col("days", "date[]", ("'{2024-02-29,NULL}'", "'{infinity,-infinity}'"),
        ([dt.date(2024, 2, 29), None], [dt.date(9999, 12, 31), dt.date(1, 1, 1)])),
    Col("stamps", "timestamptz[]", ("'{\"2024-01-01 10:00:00+00\"}'", "'{infinity}'"),
        ([dt.datetime(2024, 1, 1, 10, tzinfo=UTC)], [TS_MAX.replace(tzinfo=UTC)])),
    Col("f8s", "float8[]", ("'{1.5,NULL}'", "'{NaN,Infinity,-Infinity}'"), ([1.5, None], [NAN, INF, -INF])),
    Col("nums", "numeric[]", ("'{1.50,NULL}'", "'{NaN}'"), (["1.50", None], ["NaN"])),
    Col("ips", "inet[]", ("'{::1,NULL}'", "'{10.0.0.1/8}'"), (["::1", None], ["10.0.0.1/8"])),
    Col("moods", "mood[]", ("'{ok,NULL}'", "'{}'"), (["ok", None], [])),
    Col("flags", "boolean[]", ("'{t,NULL,f}'", "'{}'"), ([True, None, False], [])),
    Col("dom_ints", "int_list", ("'{7,NULL}'", "'{}'"), ([7, None], [])),
    Col("grid", "int[]", ("'{{1,2},{3,4}}'", "'{1,NULL}'"), ("{{1,2},{3,4}}", "{1,NULL}")),
]  # fmt: skip
TEXT_COLUMNS = ("types.n_nan", "public.types.d_bc", "types.ts_far", "*.types.grid")


def _create_table(execute: Any) -> None:
    columns = ", ".join(f"{c.name} {c.pg_type}" for c in COLUMNS)
    rows = [f"({i + 1}, " + ", ".join(c.literals[i] for c in COLUMNS) + ")" for i in range(2)]
    execute(
        f"{TYPES} CREATE TABLE types (id integer PRIMARY KEY, {columns});"
        f"INSERT INTO types VALUES {', '.join(rows)}, (3{', NULL' * len(COLUMNS)})"
    )


def _expected(row: int) -> dict[str, Any]:
    """Row 1 or 2 as the lake must hold it; row 3 is every column NULL."""
    if row == 3:
        return {c.name: None for c in COLUMNS}
    return {c.name: c.expected[row - 1] for c in COLUMNS}


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(map(_same, actual, expected))
    return type(actual) is type(expected) and actual == expected


def assert_lake_rows(lake: LakeSettings, expected: dict[int, dict[str, Any]]) -> None:
    rows = {r["id"]: r for r in delta_rows(lake, "types")}
    assert sorted(rows) == sorted(expected)
    for key, values in expected.items():
        for name, value in values.items():
            actual = rows[key][name]
            assert _same(actual, value), f"row {key} column {name}: {actual!r} != {value!r}"


class TestEveryTypeBySnapshotAndCdc:
    def test_each_value_lands_exactly_and_the_same_both_ways(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        pg = attrs.evolve(pg_settings, text_columns=TEXT_COLUMNS)
        _create_table(execute)

        snapshot(pg, delta_settings)
        assert_lake_rows(delta_settings, {i: _expected(i) for i in (1, 2, 3)})

        names = ", ".join(c.name for c in COLUMNS)
        execute(f"INSERT INTO types SELECT id + 100, {names} FROM types")
        execute(
            f"UPDATE types SET ({names}) = (SELECT {names} FROM types WHERE id = 2) WHERE id = 3"
        )
        cdc(pg, delta_settings)

        expected = {i: _expected(i) for i in (1, 2)} | {3: _expected(2)}
        expected |= {100 + i: _expected(i) for i in (1, 2, 3)}
        assert_lake_rows(delta_settings, expected)

    def test_lake_types(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        from deltalake import DeltaTable

        execute(
            "CREATE DOMAIN price AS numeric(8,3);"
            "CREATE TABLE types (id int PRIMARY KEY, a numeric(10,2), b numeric(10,2), c price,"
            " d numeric(2,5), e numeric, f int[], g int[], h date, i timestamptz)"
        )
        pg = attrs.evolve(pg_settings, text_columns=("types.b", "types.g"))
        snapshot(pg, delta_settings)

        schema = DeltaTable(f"{delta_settings.bucket_url}/bronze/types").schema()
        types = {f.name: str(f.type) for f in schema.fields}
        # Room for widening ALTERs: numeric(p,s) is decimal(38,s), every integer a long.
        assert types["a"] == 'PrimitiveType("decimal(38,2)")'
        assert types["b"] == 'PrimitiveType("string")'  # in text_columns
        assert types["c"] == 'PrimitiveType("decimal(38,3)")'  # a domain: its base type
        assert types["d"] == 'PrimitiveType("string")'  # scale > precision: Delta has none
        assert types["e"] == 'PrimitiveType("string")'
        assert types["f"].startswith('ArrayType(PrimitiveType("long")')
        assert types["g"] == 'PrimitiveType("string")'
        assert types["h"] == 'PrimitiveType("date")'
        assert types["i"] == 'PrimitiveType("timestamp")'


class TestValuesDeltaCannotHold:
    """Without ``text_columns`` such a value stops the run, by snapshot and by CDC alike, with
    one message that names the column and the fix; nothing is rounded, nulled or flattened."""

    @pytest.mark.parametrize(
        ("pg_type", "literal", "what"),
        [
            ("numeric(10,2)", "'NaN'", "the value NaN"),
            ("date", "'0044-03-15 BC'", "a value before 0001-01-01 or after 9999-12-31"),
            ("timestamp", "'4713-01-01 00:00:00 BC'", "a value before 0001-01-01"),
            ("timestamptz", "'10000-01-01 00:00:00+00'", "or after 9999-12-31"),
            ("date[]", "'{2024-01-01,0001-01-01 BC}'", "a value before 0001-01-01"),
            ("int[]", "'{{1,2},{3,NULL}}'", "the multi-dimensional array {{1,2},{3,NULL}}"),
            ("text[]", "'{{a,b},{c,d}}'", "the multi-dimensional array {{a,b},{c,d}}"),
        ],
    )
    def test_fails_the_same_way_naming_text_columns(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
        pg_type: str,
        literal: str,
        what: str,
    ) -> None:
        execute(
            f"CREATE TABLE odd (id int PRIMARY KEY, v {pg_type}); INSERT INTO odd VALUES (1, NULL)"
        )
        snapshot(pg_settings, delta_settings)
        execute(f"INSERT INTO odd VALUES (2, {literal})")

        with pytest.raises(SourceSchemaError) as by_cdc:
            cdc(pg_settings, delta_settings)
        with pytest.raises(SourceSchemaError) as by_snapshot:
            snapshot(pg_settings, delta_settings)

        assert str(by_cdc.value) == str(by_snapshot.value)
        message = str(by_snapshot.value)
        assert message.startswith("public.odd.v: ") and what in message
        assert "[sources.pg_replication] text_columns" in message
        assert delta_rows(delta_settings, "odd") == [{"id": 1, "v": None}]  # the lake untouched
