import itertools

from hypothesis import given
from hypothesis import strategies as st

from replicator.adapters.lake import naming
from replicator.adapters.lake.settings import MAX_IDENTIFIER_LENGTH
from replicator.domain.model import TableId
from tests.lake_readers import name_tag

LONG = "a_rather_long_column_name_that_uses_all_sixty_three_bytes_xxxxx"
# Any text PostgreSQL takes as an identifier: up to 63 bytes, no NUL.
identifiers = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=63
).filter(lambda s: len(s.encode()) <= 63)


class TestColumnNames:
    def test_ordinary_names_are_kept(self) -> None:
        assert naming.column_names(["id", "order_items", "select", "from", LONG]) == {
            "id": "id",
            "order_items": "order_items",
            "select": "select",
            "from": "from",
            LONG: LONG,
        }

    def test_a_name_alone_is_only_normalised(self) -> None:
        assert naming.column_names(["AccountId", "first name", 'we"ird', "café", "2fa"]) == {
            "AccountId": "accountid",
            "first name": "first_name",
            'we"ird': "we_ird",
            "café": "cafe",
            "2fa": "_2fa",
        }

    def test_the_canonical_spelling_keeps_the_name_the_others_get_a_suffix(self) -> None:
        names = naming.column_names(["ID", "id", "café", "cafe", "Cafe", "order items"])
        assert names == {
            "id": "id",
            "ID": f"id_{name_tag('ID')}",
            "cafe": "cafe",
            "café": f"cafe_{name_tag('café')}",
            "Cafe": f"cafe_{name_tag('Cafe')}",
            "order items": "order_items",
        }

    def test_a_clash_without_a_canonical_spelling_suffixes_every_name(self) -> None:
        assert naming.column_names(["Orders", "ORDERS"]) == {
            "Orders": f"orders_{name_tag('Orders')}",
            "ORDERS": f"orders_{name_tag('ORDERS')}",
        }

    def test_names_without_an_ascii_form_always_get_a_suffix(self) -> None:
        assert naming.column_names(["数据", "价格 price", "straße"]) == {
            "数据": f"_{name_tag('数据')}",
            "价格 price": f"_price_{name_tag('价格 price')}",
            "straße": f"stra_e_{name_tag('straße')}",
        }

    def test_names_come_back_in_the_given_order(self) -> None:
        columns = ["数据", "ID", "b", "id", "a"]
        assert list(naming.column_names(columns)) == columns

    def test_the_result_does_not_depend_on_the_order(self) -> None:
        columns = ["ID", "id", "Id", "数据", "cafe", "café"]
        results = [naming.column_names(p) for p in itertools.permutations(columns)]
        assert all(r == results[0] for r in results)

    def test_a_literal_name_that_looks_like_a_suffixed_one_still_does_not_clash(self) -> None:
        literal = f"id_{name_tag('ID')}"
        names = naming.column_names(["id", "ID", literal])
        assert names["id"] == "id"
        assert names[literal] == literal
        assert names["ID"] == "id_" + name_tag("ID", 8)

    @given(st.lists(identifiers, unique=True, max_size=8))
    def test_lake_names_are_unique_valid_and_stable_under_dlt(self, columns: list[str]) -> None:
        names = naming.column_names(columns)
        assert len(set(names.values())) == len(columns)
        for lake in names.values():
            assert len(lake) <= MAX_IDENTIFIER_LENGTH
            assert naming.convention().normalize_identifier(lake) == lake


class TestTableNames:
    def test_public_tables_keep_their_name_others_get_the_schema_prefix(self) -> None:
        names = naming.table_names([TableId("public", "orders"), TableId("sales", "orders")])
        assert names == {
            TableId("public", "orders"): "orders",
            TableId("sales", "orders"): "sales_orders",
        }

    def test_case_and_spaces_are_normalised(self) -> None:
        assert naming.table_names([TableId("public", "Mixed Case")]) == {
            TableId("public", "Mixed Case"): "mixed_case"
        }

    def test_a_public_table_keeps_its_name_before_a_prefixed_one(self) -> None:
        names = naming.table_names([TableId("public", "sales_orders"), TableId("sales", "orders")])
        assert names == {
            TableId("public", "sales_orders"): "sales_orders",
            TableId("sales", "orders"): "sales_orders_" + name_tag('"sales"."orders"'),
        }

    def test_two_prefixed_tables_on_one_name_both_get_a_suffix(self) -> None:
        names = naming.table_names([TableId("a_b", "c"), TableId("a", "b_c")])
        assert names == {
            TableId("a_b", "c"): "a_b_c_" + name_tag('"a_b"."c"'),
            TableId("a", "b_c"): "a_b_c_" + name_tag('"a"."b_c"'),
        }

    def test_the_suffix_hashes_the_quoted_schema_and_name(self) -> None:
        # "a.b"."c" and "a"."b.c" would be one string if joined by a dot alone.
        names = naming.table_names([TableId("a.b", "c"), TableId("a", "b.c")])
        assert len(set(names.values())) == 2

    def test_longest_names_stay_within_the_limit(self) -> None:
        schema, name = "s" * 63, "T" * 63
        names = naming.table_names([TableId(schema, name), TableId(schema, name.lower())])
        assert names[TableId(schema, name.lower())] == f"{schema}_{name.lower()}"
        assert len(names[TableId(schema, name)]) == 63 + 1 + 63 + 7

    @given(st.lists(st.tuples(identifiers, identifiers), unique=True, max_size=8))
    def test_lake_names_are_unique_and_valid(self, pairs: list[tuple[str, str]]) -> None:
        names = naming.table_names(TableId(s, n) for s, n in pairs)
        assert len(set(names.values())) == len(pairs)
        for lake in names.values():
            assert len(lake) <= MAX_IDENTIFIER_LENGTH
            assert naming.convention().normalize_identifier(lake) == lake
