"""Snapshot mode against a real PostgreSQL into real local Delta tables, value by value."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.postgres.catalog import PostgresTableCatalog
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.snapshot import SqlDatabaseSnapshotSource
from replicator.domain.model import SnapshotReport
from replicator.domain.snapshot import SnapshotService
from tests.lake_readers import META_COLUMNS, delta_columns, delta_rows

pytestmark = pytest.mark.integration

UTC = dt.UTC


def J(value: Any) -> tuple[str, Any]:
    """A JSON value as read back from the lake (distinguishes JSON null from SQL NULL)."""
    return ("json", value)


ALL_TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
    id          integer PRIMARY KEY,
    i2          smallint,
    i8          bigint,
    amount      numeric(12,2),
    ratio       real,
    measure     double precision,
    flag        boolean,
    body        text,
    code        varchar(10),
    fixed       char(5),
    blob        bytea,
    day         date,
    clock       time,
    local_ts    timestamp,
    instant     timestamptz,
    span        interval,
    ident       uuid,
    doc         json,
    docb        jsonb,
    feeling     mood,
    ints        int[],
    texts       text[]
);
INSERT INTO all_types VALUES
 (1, -32768, 9223372036854775807, 1234567890.12, 1.5, 2.718281828459045, true,
  'héllo wörld ✓', 'abc', 'ab', '\\xdeadbeef00', '2024-02-29', '23:59:59.999999',
  '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02',
  '1 year 2 months 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": 1,  "nested": {"b": [1, 2, null]}}', '{"z": null, "a": "x"}', 'happy',
  '{1,NULL,3}', '{"x",NULL,"","ünï"}'),
 (2, 0, 0, -0.01, -0.0, -1e308, false, '', '', '', '\\x', '0001-01-01', '00:00:00',
  '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '-3 days', '00000000-0000-0000-0000-000000000000',
  'null', '[]', 'sad', '{}', '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL);
"""

EXPECTED_ALL_TYPES: list[dict[str, Any]] = [
    {
        "id": 1,
        "i2": -32768,
        "i8": 9223372036854775807,
        "amount": Decimal("1234567890.12"),
        "ratio": 1.5,
        "measure": 2.718281828459045,
        "flag": True,
        "body": "héllo wörld ✓",
        "code": "abc",
        "fixed": "ab   ",
        "blob": b"\xde\xad\xbe\xef\x00",
        "day": dt.date(2024, 2, 29),
        "clock": "23:59:59.999999",
        "local_ts": dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
        "instant": dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC),
        "span": "P1Y2M3DT4H5M6.5S",
        "ident": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "doc": J({"a": 1, "nested": {"b": [1, 2, None]}}),
        "docb": J({"a": "x", "z": None}),
        "feeling": "happy",
        "ints": [1, None, 3],
        "texts": ["x", None, "", "ünï"],
    },
    {
        "id": 2,
        "i2": 0,
        "i8": 0,
        "amount": Decimal("-0.01"),
        "ratio": -0.0,
        "measure": -1e308,
        "flag": False,
        "body": "",
        "code": "",
        "fixed": "     ",
        "blob": b"",
        "day": dt.date(1, 1, 1),
        "clock": "00:00:00",
        "local_ts": dt.datetime(1970, 1, 1),
        "instant": dt.datetime(1970, 1, 1, tzinfo=UTC),
        "span": "P-3D",
        "ident": "00000000-0000-0000-0000-000000000000",
        "doc": J(None),  # JSON null, not SQL NULL
        "docb": J([]),
        "feeling": "sad",
        "ints": [],
        "texts": [],
    },
    {"id": 3},  # every other column SQL NULL: completed below
]
EXPECTED_ALL_TYPES[2] = {**dict.fromkeys(EXPECTED_ALL_TYPES[0]), "id": 3}
JSON_COLUMNS = ("doc", "docb")


def normalise_lake_row(row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns compare as JSON values; timestamps without zone compare naive."""
    out = dict(row)
    for name in JSON_COLUMNS:
        if out.get(name) is not None:
            out[name] = J(json.loads(out[name]))
    if out.get("local_ts") is not None:
        assert out["local_ts"].tzinfo is None, "timestamp without time zone must stay naive"
    return out


def run_snapshot(pg: PostgresSettings, lake: LakeSettings) -> SnapshotReport:
    service = SnapshotService(
        PostgresTableCatalog(pg), SqlDatabaseSnapshotSource(pg), DltLakeWriter(lake)
    )
    return service.run()


class TestSnapshotIntoDelta:
    def test_every_type_lands_with_the_exact_value(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ALL_TYPES_DDL)

        report = run_snapshot(pg_settings, delta_settings)

        assert [(i.lake_name, i.rows, i.version) for i in report.tables] == [("all_types", 3, 0)]
        with_meta = delta_rows(delta_settings, "all_types", meta=True)
        assert report.position is not None
        assert {r["_pg_lsn"] for r in with_meta} == {int(report.position)}  # the slot's start
        assert {(r["_pg_commit_ts"], r["_pg_deleted_ts"]) for r in with_meta} == {(None, None)}
        rows = [normalise_lake_row(r) for r in delta_rows(delta_settings, "all_types")]
        assert len(rows) == len(EXPECTED_ALL_TYPES)
        for actual, expected in zip(rows, EXPECTED_ALL_TYPES, strict=True):
            for column, value in expected.items():
                assert actual[column] == value, f"row {expected['id']} column {column}"
        # one lake column per source column, in source order, then the replicator's own
        assert delta_columns(delta_settings, "all_types") == [*EXPECTED_ALL_TYPES[0], *META_COLUMNS]

    def test_delta_types_are_exact(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        from deltalake import DeltaTable

        execute(ALL_TYPES_DDL)
        run_snapshot(pg_settings, delta_settings)

        schema = DeltaTable(f"{delta_settings.bucket_url}/bronze/all_types").schema()
        types = {f.name: str(f.type) for f in schema.fields}
        # numeric(12,2) and smallint leave room for widening ALTERs (README, type mapping)
        assert types["amount"] == 'PrimitiveType("decimal(38,2)")'
        assert types["instant"] == 'PrimitiveType("timestamp")'
        assert types["local_ts"] == 'PrimitiveType("timestamp_ntz")'
        assert types["i2"] == 'PrimitiveType("long")'
        assert types["blob"] == 'PrimitiveType("binary")'
        assert types["ints"].startswith('ArrayType(PrimitiveType("long")')

    def test_second_schema_and_include_exclude(
        self, execute: Any, pg_dsn: str, delta_settings: LakeSettings
    ) -> None:
        execute(
            """
            CREATE SCHEMA sales;
            CREATE TABLE public.orders (id int PRIMARY KEY, note text);
            CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric(8,2));
            CREATE TABLE sales.refunds (id int PRIMARY KEY);
            CREATE TABLE public.audit_log (id int PRIMARY KEY);
            CREATE TABLE public._dlt_loads (id int);
            INSERT INTO public.orders VALUES (1, 'public one'), (2, 'public two');
            INSERT INTO sales.orders VALUES (1, 10.50), (7, 0.01);
            INSERT INTO sales.refunds VALUES (1);
            """
        )
        settings = PostgresSettings(
            dsn=pg_dsn, schemas=("public", "sales"), include=("*orders", "refunds"),
            exclude=("sales.refunds",),
        )  # fmt: skip

        report = run_snapshot(settings, delta_settings)

        assert sorted(i.lake_name for i in report.tables) == ["orders", "sales_orders"]
        assert delta_rows(delta_settings, "orders") == [
            {"id": 1, "note": "public one"},
            {"id": 2, "note": "public two"},
        ]
        assert delta_rows(delta_settings, "sales_orders") == [
            {"id": 1, "total": Decimal("10.50")},
            {"id": 7, "total": Decimal("0.01")},
        ]

    def test_mixed_case_and_spaces_in_names(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(
            """
            CREATE TABLE "Customer Accounts" ("AccountId" int PRIMARY KEY, "first name" text,
                                              "Select" boolean);
            INSERT INTO "Customer Accounts" VALUES (1, 'Ada', true), (2, 'Grace', NULL);
            """
        )

        report = run_snapshot(pg_settings, delta_settings)

        assert [i.lake_name for i in report.tables] == ["customer_accounts"]
        assert delta_rows(delta_settings, "customer_accounts", order_by="accountid") == [
            {"accountid": 1, "first_name": "Ada", "select": True},
            {"accountid": 2, "first_name": "Grace", "select": None},
        ]

    def test_empty_table_becomes_an_empty_delta_table_with_its_columns(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute("CREATE TABLE nothing_yet (id bigint PRIMARY KEY, label text, at timestamptz)")

        report = run_snapshot(pg_settings, delta_settings)

        assert [(i.lake_name, i.rows) for i in report.tables] == [("nothing_yet", 0)]
        assert delta_rows(delta_settings, "nothing_yet") == []
        assert delta_columns(delta_settings, "nothing_yet") == ["id", "label", "at", *META_COLUMNS]

    def test_more_tables_than_the_server_takes_connections_are_snapshotted(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        # Tables are read one after the other, each by one connection: read all at once,
        # they would need more connections than the server allows ("too many clients").
        (limit,) = execute("SHOW max_connections")[0]
        tables = int(limit) + 5
        execute(
            "".join(
                f"CREATE TABLE t{i} (id int PRIMARY KEY, v text); INSERT INTO t{i} VALUES ({i}, 'v{i}');"
                for i in range(tables)
            )
        )

        report = run_snapshot(pg_settings, delta_settings)

        assert sorted((i.lake_name, i.rows) for i in report.tables) == sorted(
            (f"t{i}", 1) for i in range(tables)
        )
        for i in (0, tables // 2, tables - 1):
            assert delta_rows(delta_settings, f"t{i}") == [{"id": i, "v": f"v{i}"}]

    def test_a_second_snapshot_replaces_the_first(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1,'a'),(2,'b')")
        run_snapshot(pg_settings, delta_settings)
        execute(
            "DELETE FROM t WHERE id = 1; UPDATE t SET v = 'B' WHERE id = 2; INSERT INTO t VALUES (3, 'c')"
        )

        report = run_snapshot(pg_settings, delta_settings)

        assert [(i.rows, i.version) for i in report.tables] == [(2, 1)]
        assert delta_rows(delta_settings, "t") == [{"id": 2, "v": "B"}, {"id": 3, "v": "c"}]

    def test_all_tables_come_from_one_point_in_time_despite_concurrent_writers(
        self, execute: Any, pg_dsn: str, pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
    ) -> None:  # fmt: skip
        # Money moves between two tables in transactions; any consistent snapshot sums to 1,000,000.
        execute(
            """
            CREATE TABLE account_a (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
            CREATE TABLE account_b (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
            INSERT INTO account_a SELECT g, 1000, repeat('x', 200) FROM generate_series(1, 500) g;
            INSERT INTO account_b SELECT g, 1000, repeat('y', 200) FROM generate_series(1, 500) g;
            """
        )
        stop = threading.Event()
        transfers = 0

        def transfer_money() -> None:
            nonlocal transfers
            conn = psycopg2.connect(pg_dsn)
            try:
                while not stop.is_set():
                    with conn, conn.cursor() as cur:
                        account = 1 + transfers % 500
                        cur.execute(
                            "UPDATE account_a SET balance = balance - 7 WHERE id = %s", (account,)
                        )
                        cur.execute(
                            "UPDATE account_b SET balance = balance + 7 WHERE id = %s", (account,)
                        )
                        transfers += 1
            finally:
                conn.close()

        writer = threading.Thread(target=transfer_money)
        writer.start()
        try:
            while transfers < 50:
                time.sleep(0.01)
            run_snapshot(pg_settings, delta_settings)
            during = transfers
        finally:
            stop.set()
            writer.join()

        total = sum(r["balance"] for r in delta_rows(delta_settings, "account_a")) + sum(
            r["balance"] for r in delta_rows(delta_settings, "account_b")
        )
        assert total == 1_000_000
        assert during > 50, "the writer must have been running during the snapshot"
