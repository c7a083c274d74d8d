"""``verify`` on every destination: real schemas equal after snapshot and CDC, every tampered
value named, rows that should not be there counted apart, subsets and samples.

The source holds Debezium's own type-test tables (``tests/data``, see its README) and tables of
our own for what they lack; the lake is tampered with behind the replicator's back through the
destination's own writer (``StoredLake``), never through the replicator's code.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg2
import psycopg2.extras
import pytest

from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import ConfigurationError
from replicator.domain.verify import TableVerdict, VerifyReport
from tests.integration.helpers import cdc, snapshot
from tests.integration.test_lake_contract import _remove_stored_row, container
from tests.integration.test_lake_contract import lake as lake  # the parametrized fixture
from tests.stored_lake import StoredLake

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data"
EXTENSIONS = (
    "CREATE EXTENSION IF NOT EXISTS citext; CREATE EXTENSION IF NOT EXISTS ltree; "
    "CREATE EXTENSION IF NOT EXISTS isn; CREATE EXTENSION IF NOT EXISTS hstore;"
)
# What Delta cannot hold, as the README's type policies ask: PostgreSQL's text.
DEBEZIUM_TEXT_COLUMNS = (
    "time_table.ts_large*", "time_table.tz_large", "time_table.ts_max", "time_table.ts_min",
    "time_table.tz_max", "time_table.tz_min", "time_table.tz_zero", "numeric_decimal_table.*_nan",
)  # fmt: skip
# What Debezium's tables lack: arrays whose elements hold commas (box uses ';' between them),
# floats at the edges, quoting in arrays, timestamps with and without fractions.
OURS = r"""
CREATE TABLE shapes (id int PRIMARY KEY, boxes box[], points point[], words text[],
                     floats float8[], reals real[], stamps timestamptz[], days date[]);
INSERT INTO shapes VALUES
 (1, ARRAY['(1,2),(3,4)'::box, '(5,6),(7,8)'::box], ARRAY['(1,2)'::point, NULL],
  ARRAY['a,b', 'with "quote"', 'back\slash', '', 'NULL', NULL, ' lead', '{braces}'],
  ARRAY[0.1, -0.0, 1e-310, 1.7976931348623157e308, 'NaN', '-Infinity']::float8[],
  ARRAY[0.1, 3.4028235e38, 1e-45, 'Infinity']::real[],
  ARRAY['2024-01-02 03:04:05.5+02', 'infinity', '0001-01-01 00:00:00+00']::timestamptz[],
  '[0:1]={2024-02-29,-infinity}'),
 (2, '{}', NULL, '{}', NULL, NULL, NULL, NULL);
"""


def load_debezium(execute: Any) -> None:
    execute(EXTENSIONS)
    execute((DATA / "debezium-postgres_create_tables.ddl").read_text())
    execute((DATA / "debezium-inserts.sql").read_text())
    execute(OURS)
    # counted rows: its (1), (2), (2) are two identical rows and one other
    execute("ALTER TABLE table_without_pk REPLICA IDENTITY FULL")


def debezium_settings(pg: PostgresSettings) -> PostgresSettings:
    return attrs.evolve(
        pg, schemas=("public", 'Quoted_" . Schema'), text_columns=DEBEZIUM_TEXT_COLUMNS
    )


def insert_again(execute: Any) -> None:
    """Every Debezium insert once more (new keys from the serials), and our rows' twins."""
    execute((DATA / "debezium-inserts.sql").read_text())
    execute("INSERT INTO shapes SELECT id + 10, boxes, points, words, floats, reals, stamps, days "
            "FROM shapes")  # fmt: skip


def verify(pg: PostgresSettings, lake: StoredLake, **kwargs: Any) -> VerifyReport:
    report: VerifyReport = container(pg, lake).verify_service().run(**kwargs)
    return report


def verdict(report: VerifyReport, name: str) -> TableVerdict:
    (found,) = [v for v in report.tables if v.table_id.name == name]
    return found


def different(report: VerifyReport) -> dict[str, tuple[Any, ...]]:
    return {str(v.table_id): v.differing_keys for v in report.tables if not v.equal}


class TestRealSchemas:
    def test_debezium_type_tables_equal_after_snapshot_and_after_cdc(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        load_debezium(execute)
        pg = debezium_settings(pg_settings)
        snapshot(pg, lake.settings)
        report = verify(pg, lake)
        assert different(report) == {}
        assert len(report.tables) == 25
        assert verdict(report, "table_without_pk").lake_rows == 3
        assert sum(v.source_rows for v in report.tables) == sum(v.lake_rows for v in report.tables)
        insert_again(execute)
        cdc(pg, lake.settings)
        report = verify(pg, lake)
        assert different(report) == {}
        assert verdict(report, "shapes").source_rows == 4


TAMPERED = """
CREATE TABLE t (id int PRIMARY KEY, measure float8, body text, fixed char(5), local_ts timestamp,
                ints int[], n int);
INSERT INTO t SELECT g, 2.718281828459045, 'b' || g, 'ab', '2024-01-02 03:04:05.123456',
                     ARRAY[1, 2, 3], g FROM generate_series(1, 10) g;
"""
# One value changed per row, each as a faulty writer could have: a float one ulp off, a trailing
# space, lost padding, one microsecond, one array element; a key moved (7 missing, 1000 extra).
TAMPERS: list[tuple[int, str, dict[str, str]]] = [
    (1, "measure", {"delta": "2.7182818284590455", "duckdb": "2.7182818284590455::DOUBLE"}),
    (2, "body", {"delta": "concat(body, ' ')", "duckdb": "body || ' '"}),
    (3, "fixed", {"delta": "rtrim(fixed)", "duckdb": "rtrim(fixed)"}),
    (4, "local_ts", {"delta": "local_ts + INTERVAL '1 microsecond'",
                     "duckdb": "local_ts + INTERVAL 1 MICROSECOND"}),
    (5, "ints", {"delta": "array_replace(ints, 3, 4)", "duckdb": "'[1,2,4]'"}),
    (7, "id", {"delta": "1000", "duckdb": "1000"}),
]  # fmt: skip


class TestTampering:
    def test_every_changed_value_is_named_by_its_key(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(TAMPERED)
        snapshot(pg_settings, lake.settings)
        assert verify(pg_settings, lake).equal
        for key, column, expression in TAMPERS:
            lake.update("t", {column: expression[lake.destination]}, f"id = {key}")

        found = verdict(verify(pg_settings, lake), "t")
        assert not found.equal
        assert found.differing_keys == tuple(
            (k,) for k in sorted(["1", "2", "3", "4", "5", "7", "1000"], key=repr)
        )
        assert (found.source_rows, found.lake_rows) == (10, 10)

    def test_more_differences_than_listed_are_counted(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(TAMPERED)
        snapshot(pg_settings, lake.settings)
        lake.update("t", {"n": "n + 1"}, "id > 0")
        service = container(pg_settings, lake).verify_service(max_keys=3)
        (found,) = service.run(tables=["t"]).tables
        assert len(found.differing_keys) == 3 and found.more_differences == 7


class TestRowsThatShouldNotBeThere:
    def test_soft_deletes_ghosts_and_tombstones_are_counted_apart(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE s (id int PRIMARY KEY, v text, w int);"
            "INSERT INTO s SELECT g, 'v' || g, g FROM generate_series(1, 10) g;"
            "CREATE TABLE c (n int, at text); ALTER TABLE c REPLICA IDENTITY FULL;"
            "INSERT INTO c VALUES (1, 'a'), (2, 'b'), (2, 'b');"
        )
        snapshot(pg_settings, lake.settings)
        execute("DELETE FROM s WHERE id IN (1, 2, 3)")
        cdc(pg_settings, lake.settings, soft_delete=True)
        report = verify(pg_settings, lake)
        assert report.equal, different(report)
        assert verdict(report, "s").census.soft_deleted == 3
        assert verdict(report, "s").source_rows == 7

        # a ghost: marked deleted, every value but the key NULL (never written by a delete the
        # lake held); a tombstone: a counted row whose count fell to 0 and stayed
        lake.update("s", {"v": "NULL", "w": "NULL"}, "id = 1")
        lake.update("c", {"_pg_row_count": "0"}, "n = 1")
        report = verify(pg_settings, lake)
        s, c = verdict(report, "s"), verdict(report, "c")
        assert (s.census.soft_deleted, s.census.ghosts, s.census.tombstones) == (2, 1, 0)
        assert s.rows_equal and not s.equal
        assert (c.census.live, c.census.tombstones) == (2, 1)
        assert (c.source_rows, c.lake_rows) == (3, 2) and not c.equal
        assert c.differing_keys == (("1", "a"),)


class TestSubsets:
    def test_only_the_named_tables_and_an_unknown_name_is_one_clear_error(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(TAMPERED + "CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1);")
        snapshot(pg_settings, lake.settings)
        report = verify(pg_settings, lake, tables=["public.t*"])
        assert [str(v.table_id) for v in report.tables] == ["public.t"]
        with pytest.raises(ConfigurationError, match="--table 'nope' names no replicated table"):
            verify(pg_settings, lake, tables=["nope"])

    def test_a_sample_checks_random_rows_and_the_row_count(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text, at timestamptz);"
            "INSERT INTO big SELECT g, md5(g::text), '2024-01-01'::timestamptz + g * interval '1s'"
            " FROM generate_series(1, 20000) g; ANALYZE big;"
        )
        snapshot(pg_settings, lake.settings)
        (found,) = verify(pg_settings, lake, sample=1000, seed=7).tables
        assert found.equal and found.sample is not None
        assert 200 <= found.source_rows <= 2000 and found.lake_rows == found.source_rows
        assert (found.sample.source_rows, found.sample.lake_rows) == (20000, 20000)
        again = verify(pg_settings, lake, sample=1000, seed=7).tables[0]
        assert again.source_checksum == found.source_checksum  # the same seed, the same rows

        lake.update("big", {"v": "'changed'"}, "id % 2 = 0")
        (found,) = verify(pg_settings, lake, sample=1000, seed=7).tables
        assert not found.equal and found.differing_keys
        assert verify(pg_settings, lake).tables[0].more_differences == 10000 - 20

        _remove_stored_row(lake, "big", 1)
        (found,) = verify(pg_settings, lake, sample=1000, seed=7).tables
        assert found.sample is not None and found.sample.lake_rows == 19999 and not found.equal


RANDOM_TABLE = """
CREATE TABLE r (id int PRIMARY KEY, d float8, f real, m numeric(20,6), u numeric, s text,
                ss text[], ts timestamp, tz timestamptz, day date, b bytea, fs float8[],
                bx box[]);
"""
_CHARS = "ab,;{}\"\\ \t\n NULLé✓'()[]"


def _random_row(rng: random.Random, key: int) -> tuple[Any, ...]:
    def maybe(value: Any) -> Any:
        return None if rng.random() < 0.1 else value

    def text() -> str:
        return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 8)))

    def double() -> float:
        kind = rng.random()
        if kind < 0.1:
            return rng.choice([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308])
        bits = rng.getrandbits(64)
        value = struct.unpack("d", struct.pack("Q", bits))[0]
        return value if math.isfinite(value) else rng.uniform(-1e6, 1e6)

    stamp = dt.datetime(1, 1, 1) + dt.timedelta(microseconds=rng.randrange(315537897600000000))
    return (
        key,
        maybe(double()),
        maybe(float(struct.unpack("f", struct.pack("f", rng.uniform(-3e38, 3e38)))[0])),
        maybe(Decimal(rng.randrange(-10**20, 10**20)).scaleb(-6)),
        maybe(str(Decimal(rng.randrange(-10**30, 10**30)).scaleb(-rng.randrange(0, 40)))),
        maybe(text()),
        maybe([maybe(text()) for _ in range(rng.randint(0, 4))]),
        maybe(stamp),
        maybe(stamp.replace(tzinfo=dt.UTC)),
        maybe(stamp.date()),
        maybe(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 6)))),
        maybe([maybe(double()) for _ in range(rng.randint(0, 3))]),
        maybe("{" + ";".join(f"({rng.randint(-9, 9)},{rng.random()}),(0,0)"
                             for _ in range(rng.randint(0, 3))) + "}"),
    )  # fmt: skip


class TestRandomValues:
    def test_random_values_verify_equal_after_snapshot_and_cdc(
        self, execute: Any, pg_settings: PostgresSettings, lake: StoredLake
    ) -> None:
        seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
        print(f"random values seed: {seed} (replay with REPLICATOR_TEST_SEED={seed})")
        rng = random.Random(seed)
        execute(RANDOM_TABLE)
        insert = "INSERT INTO r VALUES (" + ", ".join(["%s"] * 13) + ")"
        with psycopg2.connect(execute.dsn) as conn, conn.cursor() as cur:
            psycopg2.extras.execute_batch(cur, insert, [_random_row(rng, k) for k in range(200)])
        snapshot(pg_settings, lake.settings)
        report = verify(pg_settings, lake)
        assert report.equal, f"seed {seed}: {different(report)}"

        with psycopg2.connect(execute.dsn) as conn, conn.cursor() as cur:
            psycopg2.extras.execute_batch(
                cur, insert, [_random_row(rng, k) for k in range(200, 400)]
            )
            cur.execute("DELETE FROM r WHERE id % 7 = 0")
            for key in rng.sample(range(400), 60):
                row = _random_row(rng, key)
                cur.execute(
                    "UPDATE r SET d = %s, f = %s, m = %s, u = %s, s = %s, ss = %s, ts = %s, "
                    "tz = %s, day = %s, b = %s, fs = %s, bx = %s WHERE id = %s",
                    (*row[1:], key),
                )
        cdc(pg_settings, lake.settings)
        report = verify(pg_settings, lake)
        assert report.equal, f"seed {seed}: {different(report)}"
        assert verdict(report, "r").source_rows == 400 - len(range(0, 400, 7))
