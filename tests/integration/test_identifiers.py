"""Identifiers that are not lower-case snake case reach the lake under the documented names
(see adapters/lake/naming.py and the README's *Names*), with every value intact through
snapshot and CDC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import cdc, container, snapshot, source_rows
from tests.lake_readers import delta_columns, delta_rows, duckdb_rows, name_tag

pytestmark = pytest.mark.integration

LONG = "a_table_name_of_exactly_sixty_three_characters_for_the_limit_xx"
assert len(LONG) == 63


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


ODD_TABLES = f"""
CREATE TABLE "Orders" ("ID" int PRIMARY KEY, id int, "Total" numeric(8,2));
CREATE TABLE orders (id int PRIMARY KEY, "order items" text, "select" text, "from" text);
CREATE TABLE "we""ird" ("café" text, cafe text, "数据" text, k int PRIMARY KEY);
CREATE TABLE "数据" (id int PRIMARY KEY, "Select" text, {LONG} text, "{LONG.upper()}" text);
CREATE TABLE {LONG} (id int PRIMARY KEY, v text);
INSERT INTO "Orders" VALUES (1, 10, 1.50), (2, 20, 2.50), (3, NULL, NULL);
INSERT INTO orders VALUES (1, 'a b', 's', 'f'), (2, NULL, 'x', NULL);
INSERT INTO "we""ird" VALUES ('é', 'e', '字', 1), (NULL, NULL, NULL, 2);
INSERT INTO "数据" VALUES (1, 'S', 'lower', 'UPPER');
INSERT INTO {LONG} VALUES (1, 'long');
"""

# Source table -> (lake table, {source column: lake column}), as the rule promises.
EXPECTED = {
    "Orders": (
        "orders_" + name_tag('"public"."Orders"'),
        {"ID": "id_" + name_tag("ID"), "id": "id", "Total": "total"},
        "ID",
    ),
    "orders": (
        "orders",
        {"id": "id", "order items": "order_items", "select": "select", "from": "from"},
        "id",
    ),
    'we"ird': (
        "we_ird",
        {
            "café": "cafe_" + name_tag("café"),
            "cafe": "cafe",
            "数据": "_" + name_tag("数据"),
            "k": "k",
        },
        "k",
    ),
    "数据": (
        "_" + name_tag('"public"."数据"'),
        {
            "id": "id",
            "Select": "select",
            LONG: LONG,
            LONG.upper(): LONG + "_" + name_tag(LONG.upper()),
        },
        "id",
    ),
    LONG: (LONG, {"id": "id", "v": "v"}, "id"),
}


def assert_lake_matches(execute: Any, lake: LakeSettings) -> None:
    for table, (lake_table, columns, key) in EXPECTED.items():
        expected = sorted(
            (
                {columns[c]: v for c, v in row.items()}
                for row in source_rows(execute, quoted(table), key=quoted(key))
            ),
            key=lambda r: r[columns[key]],
        )
        assert delta_rows(lake, lake_table, order_by=columns[key]) == expected, table
        assert delta_columns(lake, lake_table)[: len(columns)] == list(columns.values()), table


class TestOddIdentifiers:
    def test_snapshot_then_cdc_land_under_the_promised_names(
        self, execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings
    ) -> None:
        execute(ODD_TABLES)

        report = snapshot(pg_settings, delta_settings)

        assert {i.table_id.name: i.lake_name for i in report.tables} == {
            t: lake for t, (lake, _, _) in EXPECTED.items()
        }
        assert_lake_matches(execute, delta_settings)

        execute(
            f"""
            INSERT INTO "Orders" VALUES (4, 40, 4.00);
            UPDATE "Orders" SET id = 99, "Total" = 9.99 WHERE "ID" = 1;
            DELETE FROM "Orders" WHERE "ID" = 2;
            INSERT INTO orders VALUES (3, 'new', 'n', 'n');
            UPDATE orders SET "order items" = 'changed' WHERE id = 1;
            DELETE FROM orders WHERE id = 2;
            UPDATE "we""ird" SET "café" = 'ç', "数据" = '数' WHERE k = 2;
            INSERT INTO "we""ird" VALUES ('x', 'y', 'z', 3);
            DELETE FROM "we""ird" WHERE k = 1;
            UPDATE "数据" SET "{LONG.upper()}" = 'changed', "Select" = NULL WHERE id = 1;
            INSERT INTO "数据" VALUES (2, 'two', 'l2', 'U2');
            INSERT INTO {LONG} VALUES (2, 'two');
            DELETE FROM {LONG} WHERE id = 1;
            """
        )

        cdc(pg_settings, delta_settings)

        assert_lake_matches(execute, delta_settings)
        # The reconciliation reader finds every table and column under the same names.
        verdicts = container(pg_settings, delta_settings).verify_service().run().tables
        assert [v for v in verdicts if not v.equal] == []

    def test_duckdb_lands_under_the_same_names(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        duckdb_settings: LakeSettings,
        tmp_path: Path,
    ) -> None:
        execute(
            """
            CREATE TABLE "Orders" ("ID" int PRIMARY KEY, id int, "café" text);
            CREATE TABLE orders (id int PRIMARY KEY);
            INSERT INTO "Orders" VALUES (1, 10, 'é');
            """
        )
        snapshot(pg_settings, duckdb_settings)
        execute("""INSERT INTO "Orders" VALUES (2, 20, 'è'); UPDATE "Orders" SET id = 11""")

        cdc(pg_settings, duckdb_settings)

        upper_id = "id_" + name_tag("ID")
        rows = duckdb_rows(
            str(tmp_path / "lake.duckdb"),
            "orders_" + name_tag('"public"."Orders"'),
            order_by=upper_id,
        )
        assert rows == [
            {upper_id: 1, "id": 11, "cafe": "é"},
            {upper_id: 2, "id": 11, "cafe": "è"},
        ]
