import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from replicator.adapters.postgres.arrow_types import (
    ColumnTransport,
    conform_batch,
    quote_ident,
    select_list,
    target_schema,
    transport_for,
    transports_for,
)
from replicator.adapters.postgres.catalog import is_text_column
from replicator.adapters.postgres.text_values import column_from_text
from replicator.domain.errors import SourceSchemaError
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import ColumnSchema, TableId, TableSchema


def col(
    name: str, pg_type: str, base: str, *, array: bool = False, kind: str = "b", text: bool = False
) -> ColumnSchema:
    return ColumnSchema(
        name, pg_type, 0, base_type=base, is_array=array, type_kind=kind, as_text=text
    )


def conform(transports: list[ColumnTransport], *columns: pa.Array) -> pa.RecordBatch:
    raw = pa.record_batch(list(columns), [f"c{i}" for i in range(len(columns))])
    schema = target_schema(transports, LakeColumns())
    return conform_batch(raw, transports, schema, from_text=column_from_text)


def in_table(*columns: ColumnSchema) -> list[ColumnTransport]:
    return transports_for(TableSchema(TableId("public", "t"), columns))


class TestTransport:
    @pytest.mark.parametrize(
        ("column", "arrow_type", "as_text"),
        [
            (col("a", "integer", "int4"), pa.int64(), False),
            (col("a", "numeric(12,2)", "numeric"), pa.decimal128(38, 2), False),
            (col("a", "numeric(40,2)", "numeric"), pa.string(), True),
            (col("a", "numeric(2,5)", "numeric"), pa.string(), True),
            (col("a", "numeric(5,-2)", "numeric"), pa.string(), True),
            (col("a", "numeric(12,2)", "numeric", text=True), pa.string(), True),
            (col("a", "integer[]", "int4", array=True, text=True), pa.string(), True),
            (col("a", "date", "date", text=True), pa.string(), True),
            (col("a", "numeric", "numeric"), pa.string(), True),
            (col("a", "timestamp with time zone", "timestamptz"), pa.timestamp("us", "UTC"), False),
            (col("a", "timestamp without time zone", "timestamp"), pa.timestamp("us"), False),
            (col("a", "interval", "interval"), pa.string(), True),
            (col("a", "time without time zone", "time"), pa.string(), True),
            (col("a", "uuid", "uuid"), pa.string(), True),
            (col("a", "jsonb", "jsonb"), pa.string(), False),
            (col("a", "mood", "mood", kind="e"), pa.string(), True),
            (col("a", "integer[]", "int4", array=True), pa.list_(pa.int64()), False),
            (col("a", "uuid[]", "uuid", array=True), pa.list_(pa.string()), True),
            (col("a", "inet", "inet"), pa.string(), True),
            (col("a", "tsvector", "tsvector"), pa.string(), True),
        ],
    )
    def test_maps_each_type_to_an_exact_arrow_type(
        self, column: ColumnSchema, arrow_type: pa.DataType, as_text: bool
    ) -> None:
        transport = transport_for(column)
        assert transport.arrow_type == arrow_type
        assert ("format('%s'" in transport.select_sql) is as_text

    def test_quotes_identifiers(self) -> None:
        assert quote_ident('we"ird; DROP') == '"we""ird; DROP"'
        assert transport_for(col('Sel"ect', "uuid", "uuid")).select_sql == (
            """CASE WHEN "Sel""ect" IS NULL THEN NULL ELSE format('%s', "Sel""ect") END"""
            ' AS "Sel""ect"'
        )

    def test_native_arrays_select_a_multi_dimension_check_after_the_columns(self) -> None:
        transports = in_table(col("a", "integer[]", "int4", array=True), col("b", "int", "int4"))
        assert select_list(transports) == (
            '"a", "b", CASE WHEN array_ndims("a") > 1 THEN left("a"::text, 60) END'
        )


class TestTextColumns:
    @pytest.mark.parametrize(
        ("pattern", "matches"),
        [
            ("orders.amount", True),
            ("public.orders.amount", True),
            ("*.amount", True),
            ("public.*.*", True),
            ("sales.orders.amount", False),
            ("orders.amounts", False),
            ("amount", False),
        ],
    )
    def test_patterns_name_table_column_or_schema_table_column(
        self, pattern: str, matches: bool
    ) -> None:
        assert is_text_column(TableId("public", "orders"), "amount", [pattern]) is matches


class TestConformBatch:
    def test_casts_numeric_text_to_exact_decimal(self) -> None:
        transports = [transport_for(col("amount", "numeric(38,10)", "numeric"))]
        out = conform(transports, pa.array(["12345678901234567890.0123456789", None]))
        assert out.column(0).to_pylist() == [Decimal("12345678901234567890.0123456789"), None]

    def test_numeric_nan_fails_loudly_naming_text_columns(self) -> None:
        transports = in_table(col("amount", "numeric(10,2)", "numeric"))
        with pytest.raises(SourceSchemaError) as error:
            conform(transports, pa.array(["1.00", "nan"]))  # the driver's spelling
        assert str(error.value) == (
            "public.t.amount: the value NaN cannot be stored as decimal128(38, 2) in Delta; "
            "list the column in [sources.pg_replication] text_columns to replicate it as "
            "PostgreSQL's text"
        )

    def test_driver_infinities_become_the_sentinels(self) -> None:
        transports = in_table(
            col("d", "date", "date"),
            col("ts", "timestamp with time zone", "timestamptz"),
            col("ds", "date[]", "date", array=True),
        )
        # What binary COPY delivers: PostgreSQL's int max/min shifted to the Unix epoch.
        days = pa.array([-2147472692, -2147472691, 0, None], pa.int32()).view(pa.date32())
        micros = pa.array([-9222425352054775809, -9222425352054775808, 0, None], pa.int64())
        lists = pa.array([[0, -2147472692], None, [], [None]], pa.list_(pa.int32()))
        out = conform(
            transports,
            days,
            micros.view(pa.timestamp("us", "UTC")),
            lists.cast(pa.list_(pa.date32())),
            pa.nulls(4, pa.string()),
        )
        epoch, utc = dt.date(1970, 1, 1), dt.UTC
        assert out.column(0).to_pylist() == [dt.date(9999, 12, 31), dt.date(1, 1, 1), epoch, None]
        assert out.column(1).to_pylist() == [
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
            dt.datetime(1, 1, 1, tzinfo=utc),
            dt.datetime(1970, 1, 1, tzinfo=utc),
            None,
        ]
        assert out.column(2).to_pylist() == [[epoch, dt.date(9999, 12, 31)], None, [], [None]]

    def test_a_bc_date_fails_loudly_naming_text_columns(self) -> None:
        transports = in_table(col("d", "date", "date"))
        days = pa.array([-2440550], pa.int32()).view(pa.date32())  # 4713-01-01 BC
        with pytest.raises(SourceSchemaError, match=r"public\.t\.d: a value before 0001-01-01"):
            conform(transports, days)

    def test_a_flagged_multi_dimensional_array_fails_instead_of_flattening(self) -> None:
        transports = in_table(col("a", "integer[]", "int4", array=True))
        flattened = pa.array([[1, 2, 3, 4]], pa.list_(pa.int32()))
        with pytest.raises(SourceSchemaError, match=r"multi-dimensional array \{\{1,2\},\{3,4\}\}"):
            conform(transports, flattened, pa.array(["{{1,2},{3,4}}"]))

    def test_arrays_of_other_types_are_parsed_from_their_text_output(self) -> None:
        transports = in_table(col("a", "inet[]", "inet", array=True))
        out = conform(transports, pa.array(['{::1,NULL,"a b"}', None]))
        assert out.column(0).to_pylist() == [["::1", None, "a b"], None]
