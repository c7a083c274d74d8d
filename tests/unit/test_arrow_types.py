from decimal import Decimal

import pyarrow as pa
import pytest

from replicator.adapters.postgres.arrow_types import (
    conform_batch,
    quote_ident,
    target_schema,
    transport_for,
)
from replicator.domain.errors import SourceSchemaError
from replicator.domain.model import ColumnSchema, TableId


def col(
    name: str, pg_type: str, base: str, *, array: bool = False, kind: str = "b"
) -> ColumnSchema:
    return ColumnSchema(name, pg_type, 0, base_type=base, is_array=array, type_kind=kind)


class TestTransport:
    @pytest.mark.parametrize(
        ("column", "arrow_type", "as_text"),
        [
            (col("a", "integer", "int4"), pa.int32(), False),
            (col("a", "numeric(12,2)", "numeric"), pa.decimal128(12, 2), False),
            (col("a", "numeric(40,2)", "numeric"), pa.string(), True),
            (col("a", "numeric", "numeric"), pa.string(), True),
            (col("a", "timestamp with time zone", "timestamptz"), pa.timestamp("us", "UTC"), False),
            (col("a", "timestamp without time zone", "timestamp"), pa.timestamp("us"), False),
            (col("a", "interval", "interval"), pa.string(), True),
            (col("a", "time without time zone", "time"), pa.string(), True),
            (col("a", "uuid", "uuid"), pa.string(), True),
            (col("a", "jsonb", "jsonb"), pa.string(), False),
            (col("a", "mood", "mood", kind="e"), pa.string(), True),
            (col("a", "integer[]", "int4", array=True), pa.list_(pa.int32()), False),
            (col("a", "uuid[]", "uuid", array=True), pa.list_(pa.string()), True),
            (col("a", "tsvector", "tsvector"), pa.string(), True),
        ],
    )
    def test_maps_each_type_to_an_exact_arrow_type(
        self, column: ColumnSchema, arrow_type: pa.DataType, as_text: bool
    ) -> None:
        transport = transport_for(column)
        assert transport.arrow_type == arrow_type
        assert ("::text" in transport.select_sql) is as_text

    def test_quotes_identifiers(self) -> None:
        assert quote_ident('we"ird; DROP') == '"we""ird; DROP"'
        assert transport_for(col('Sel"ect', "uuid", "uuid")).select_sql == (
            '"Sel""ect"::text AS "Sel""ect"'
        )


class TestConformBatch:
    def test_casts_numeric_text_to_exact_decimal(self) -> None:
        transports = [transport_for(col("amount", "numeric(38,10)", "numeric"))]
        raw = pa.record_batch([pa.array(["12345678901234567890.0123456789", None])], ["amount"])
        out = conform_batch(TableId("public", "t"), raw, transports, target_schema(transports))
        assert out.column(0).to_pylist() == [Decimal("12345678901234567890.0123456789"), None]

    def test_numeric_nan_fails_loudly_instead_of_rounding(self) -> None:
        transports = [transport_for(col("amount", "numeric(10,2)", "numeric"))]
        raw = pa.record_batch([pa.array(["NaN"])], ["amount"])
        with pytest.raises(SourceSchemaError, match=r"public\.t\.amount"):
            conform_batch(TableId("public", "t"), raw, transports, target_schema(transports))
