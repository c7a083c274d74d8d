import pytest

from replicator.adapters.lake.writer import lake_table_names
from replicator.domain.errors import ConfigurationError
from replicator.domain.model import TableId


class TestLakeTableNames:
    def test_public_tables_keep_their_name_others_get_the_schema_prefix(self) -> None:
        names = lake_table_names([TableId("public", "orders"), TableId("sales", "orders")])
        assert names == {
            TableId("public", "orders"): "orders",
            TableId("sales", "orders"): "sales_orders",
        }

    def test_case_and_spaces_are_normalised(self) -> None:
        assert lake_table_names([TableId("public", "Mixed Case")]) == {
            TableId("public", "Mixed Case"): "mixed_case"
        }

    def test_two_tables_landing_on_one_name_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="both land as lake table 'sales_orders'"):
            lake_table_names([TableId("public", "sales_orders"), TableId("sales", "orders")])
