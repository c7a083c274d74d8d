"""What the integration modules share: the composition of one run, the source as psycopg2 reads
it, and the whole-table comparison of a Delta lake with the source."""

from __future__ import annotations

import json
from typing import Any

import psycopg2
import psycopg2.extras

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.cdc import BatchLimits
from replicator.domain.model import CdcReport, SnapshotReport
from replicator.entrypoints.containers import Container
from tests.lake_readers import delta_rows


def container(pg: PostgresSettings, lake: LakeSettings, **limits: Any) -> Container:
    c = Container(postgres_settings=pg, lake_settings=lake)
    if limits:
        c.batch_limits.override(BatchLimits(**limits))
    return c


def snapshot(pg: PostgresSettings, lake: LakeSettings) -> SnapshotReport:
    report: SnapshotReport = container(pg, lake).snapshot_service().run()
    return report


def cdc(pg: PostgresSettings, lake: LakeSettings, **kwargs: Any) -> CdcReport:
    soft = kwargs.pop("soft_delete", False)
    report: CdcReport = container(pg, lake, **kwargs).cdc_service(soft_delete=soft).run()
    return report


class Sql:
    """Runs SQL against one database, each statement in a connection of its own (autocommit);
    what the ``execute`` fixture gives a test."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __call__(
        self, statement: str, params: tuple[object, ...] | None = None
    ) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


def source_rows(execute: Any, table: str, key: str = "id") -> list[dict[str, Any]]:
    """The source table as psycopg2 types it (Decimal, aware datetime, lists); JSON as text,
    so a JSON null ('null') stays apart from SQL NULL."""
    conn = psycopg2.connect(execute.dsn)
    psycopg2.extras.register_default_json(conn, loads=lambda text: text)
    psycopg2.extras.register_default_jsonb(conn, loads=lambda text: text)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} ORDER BY {key}")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def comparable(lake_value: Any, source_value: Any) -> Any:
    # json/jsonb: psycopg2 parses them, the lake keeps the JSON text.
    if (
        isinstance(lake_value, str)
        and source_value is not None
        and not isinstance(source_value, str)
    ):
        return json.loads(lake_value)
    return lake_value


def assert_lake_equals_source(
    execute: Any, lake: LakeSettings, table: str, key: str = "id", lake_table: str | None = None
) -> None:
    expected = source_rows(execute, table, key)
    first_key = key.split(",")[0].strip()
    actual = delta_rows(lake, lake_table or table, order_by=first_key)
    if "," in key:
        names = [k.strip() for k in key.split(",")]
        actual.sort(key=lambda r: tuple(r[n] for n in names))
    assert len(actual) == len(expected), (
        f"{table}: {len(actual)} lake rows, {len(expected)} source rows"
    )
    for lake_row, source_row in zip(actual, expected, strict=True):
        as_source = {k: comparable(lake_row.get(k), v) for k, v in source_row.items()}
        assert as_source == source_row, f"{table} differs at {first_key}={source_row[first_key]}"
        assert set(lake_row) == set(source_row), f"{table}: columns differ"


SHOP = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, score numeric(8,2), seen date);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, total numeric(12,2), status text);
INSERT INTO customers SELECT g, 'c' || g, g * 1.5, date '2024-01-01' + g FROM generate_series(1, 20) g;
INSERT INTO orders SELECT g, 1 + g % 20, g * 10.25, 'new' FROM generate_series(1, 50) g;
"""
