"""The Delta reader's bulk rendering of Arrow columns equals ``verify_values``' rendering of
each value, for every type it renders (seeded random values; REPLICATOR_TEST_SEED replays)."""

from __future__ import annotations

import datetime as dt
import os
import random
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from replicator.adapters.lake.lake_rows import pg_text
from replicator.domain.model import ColumnSchema, TableId, TableSchema
from replicator.domain.verify_values import lake_canons

SEED = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
ROWS = 2000


def _stamp(rng: random.Random, first_year: int = 1000) -> dt.datetime:
    start = dt.datetime(first_year, 1, 1)
    span = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999) - start) // dt.timedelta(microseconds=1)
    value = start + dt.timedelta(microseconds=rng.randrange(span))
    return value.replace(microsecond=rng.choice([0, value.microsecond, 500000, 10]))


def _decimal(rng: random.Random, scale: int) -> Decimal:
    digits = rng.choice([0, 1, rng.randrange(10**12), rng.randrange(10**37)])
    return Decimal(digits * rng.choice([1, -1])).scaleb(-scale)


CASES: dict[str, tuple[pa.DataType, str, Any]] = {
    "int64": (pa.int64(), "int8", lambda r: r.randrange(-(2**63), 2**63)),
    "string": (pa.string(), "text", lambda r: "".join(r.choice("aé ✓,{}") for _ in range(5))),
    "bool": (pa.bool_(), "bool", lambda r: r.random() < 0.5),
    "decimal(38,2)": (pa.decimal128(38, 2), "numeric", lambda r: _decimal(r, 2)),
    "decimal(38,12)": (pa.decimal128(38, 12), "numeric", lambda r: _decimal(r, 12)),
    "decimal(38,0)": (pa.decimal128(38, 0), "numeric", lambda r: _decimal(r, 0)),
    "date32": (pa.date32(), "date", lambda r: _stamp(r).date()),
    "timestamp": (pa.timestamp("us"), "timestamp", _stamp),
    "timestamptz": (
        pa.timestamp("us", tz="UTC"), "timestamptz", lambda r: _stamp(r).replace(tzinfo=dt.UTC)
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bulk_rendering_equals_the_value_by_value_rendering(case: str) -> None:
    print(f"seed {SEED} (replay with REPLICATOR_TEST_SEED={SEED})")
    arrow_type, base, make = CASES[case]
    rng = random.Random(f"{SEED}-{case}")
    values = [None if rng.random() < 0.05 else make(rng) for _ in range(ROWS)]
    array = pa.array(values, arrow_type)
    column = ColumnSchema("c", base, 0, base_type=base)
    (canon,) = lake_canons(TableSchema(TableId("public", "t"), (column,)))
    rendered = pg_text(array)
    assert rendered is not None
    expected = canon(array.to_pylist())
    mismatches = [(v, r, e) for v, r, e in zip(values, rendered, expected, strict=True) if r != e]
    assert not mismatches, f"seed {SEED}: {mismatches[:5]}"


def test_what_arrow_cannot_render_goes_value_by_value() -> None:
    assert pg_text(pa.array([1.5], pa.float64())) is None  # floats: repr, by Python
    assert pg_text(pa.array([b"\x00"], pa.binary())) is None
    assert pg_text(pa.array([[1]], pa.list_(pa.int64()))) is None
    assert pg_text(pa.array([dt.date(44, 3, 15)], pa.date32())) is None  # years before 1000
