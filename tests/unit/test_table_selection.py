from replicator.adapters.postgres.catalog import select_tables
from replicator.domain.model import TableId

TABLES = [
    TableId("public", "customers"),
    TableId("public", "orders"),
    TableId("public", "order_items"),
    TableId("public", "_dlt_loads"),
    TableId("sales", "orders"),
]


def names(tables: list[TableId]) -> list[str]:
    return [str(t) for t in tables]


class TestSelectTables:
    def test_takes_everything_but_dlt_tables_by_default(self) -> None:
        assert names(select_tables(TABLES, (), ())) == [
            "public.customers",
            "public.orders",
            "public.order_items",
            "sales.orders",
        ]

    def test_include_matches_name_or_qualified_name_with_wildcards(self) -> None:
        assert names(select_tables(TABLES, ["order*"], ())) == [
            "public.orders",
            "public.order_items",
            "sales.orders",
        ]
        assert names(select_tables(TABLES, ["sales.orders"], ())) == ["sales.orders"]

    def test_exclude_applies_after_include(self) -> None:
        chosen = select_tables(TABLES, ["order*"], ["public.orders", "order_items"])
        assert names(chosen) == ["sales.orders"]

    def test_dlt_tables_are_skipped_even_when_included(self) -> None:
        assert select_tables(TABLES, ["_dlt*"], ()) == []
