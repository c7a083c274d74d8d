"""A partitioned table lands as one lake table, and same-named tables of several schemas land
apart, through snapshot and CDC, compared with the source row by row."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import assert_lake_equals_source, cdc, snapshot
from tests.lake_readers import name_tag

pytestmark = pytest.mark.integration


class TestPartitionedTable:
    def test_partitions_land_as_one_table_through_snapshot_and_cdc(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(
            """
            CREATE TABLE events (id int, at date NOT NULL, note text, PRIMARY KEY (id, at))
                PARTITION BY RANGE (at);
            CREATE TABLE events_2023 PARTITION OF events
                FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
            CREATE TABLE events_2024 PARTITION OF events
                FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
            CREATE TABLE events_2025 PARTITION OF events
                FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            INSERT INTO events VALUES (1, '2023-03-01', 'a'), (2, '2024-03-01', 'b'),
                                      (3, '2025-03-01', 'c'), (4, '2024-06-01', 'd');
            """
        )

        report = snapshot(pg_settings, delta_settings)

        assert [(i.lake_name, i.rows) for i in report.tables] == [("events", 4)]
        assert_lake_equals_source(execute, delta_settings, "events", key="id, at")

        execute(
            """
            INSERT INTO events VALUES (5, '2023-12-31', 'into 2023'), (6, '2025-01-01', 'into 2025');
            UPDATE events SET at = '2025-07-01', note = 'moved 2023 -> 2025' WHERE id = 1;
            UPDATE events SET note = 'stayed' WHERE id = 2;
            DELETE FROM events WHERE id = 4;
            """
        )

        cdc(pg_settings, delta_settings)

        assert_lake_equals_source(execute, delta_settings, "events", key="id, at")
        published = execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'dlt_cdc_pub'"
        )
        assert published == [("events",)]


class TestSeveralSchemas:
    def test_same_names_in_several_schemas_land_apart(
        self, execute: Any, pg_dsn: str, delta_settings: LakeSettings
    ) -> None:
        execute(
            """
            CREATE SCHEMA sales;
            CREATE TABLE public.orders (id int PRIMARY KEY, note text);
            CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric(8,2));
            CREATE TABLE public.sales_orders (id int PRIMARY KEY, flag boolean);
            INSERT INTO public.orders VALUES (1, 'public');
            INSERT INTO sales.orders VALUES (1, 1.50), (2, 2.50);
            INSERT INTO public.sales_orders VALUES (1, true), (2, false), (3, NULL);
            """
        )
        settings = PostgresSettings(dsn=pg_dsn, schemas=("public", "sales"))
        lake = {
            "public.orders": "orders",
            "sales.orders": "sales_orders_" + name_tag('"sales"."orders"'),
            "public.sales_orders": "sales_orders",
        }

        report = snapshot(settings, delta_settings)

        assert {str(i.table_id): i.lake_name for i in report.tables} == lake
        self.assert_lake_equals_source(execute, delta_settings, lake)

        execute(
            """
            INSERT INTO public.orders VALUES (2, 'public two');
            INSERT INTO sales.orders VALUES (3, 3.50);
            UPDATE sales.orders SET total = 9.99 WHERE id = 1;
            DELETE FROM sales.orders WHERE id = 2;
            UPDATE public.sales_orders SET flag = true WHERE id = 2;
            DELETE FROM public.sales_orders WHERE id = 3;
            """
        )

        report_cdc = cdc(settings, delta_settings)

        assert report_cdc.transactions == 1
        self.assert_lake_equals_source(execute, delta_settings, lake)

    @staticmethod
    def assert_lake_equals_source(execute: Any, lake: LakeSettings, names: dict[str, str]) -> None:
        for source, lake_table in names.items():
            assert_lake_equals_source(execute, lake, source, lake_table=lake_table)
