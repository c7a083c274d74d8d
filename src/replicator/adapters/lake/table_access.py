"""How the writer reads and reshapes one kind of destination's tables, behind one protocol.

One implementation per kind, chosen once by the writer: ``delta_tables.DeltaTables`` (Delta via
delta-rs, local or in a bucket) and ``sql_tables.SqlTables`` (DuckDB and Databricks via dlt's
SQL client). The writer itself switches on the destination name only where dlt's write differs
(``write_plan``, Databricks' table features).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from replicator.adapters.lake.evolution import Plan
from replicator.domain.model import Frontier, LakeTableInfo, TableId


class TableAccess(Protocol):
    @abstractmethod
    def rows_where(
        self, name: str, column: str, values: Sequence[Any], columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """The rows of a lake table whose ``column`` is one of ``values``, as dicts (none before
        the table's first load); only ``columns``, when given."""

    @abstractmethod
    def describe(
        self, names: Mapping[TableId, str], lsn: Mapping[TableId, str] | None
    ) -> list[LakeTableInfo]:
        """Row counts, versions and locations of the tables; ``lsn``: each table's WAL position
        column, to find its last change (None: not)."""

    @abstractmethod
    def positions(self, names: Mapping[TableId, str]) -> dict[TableId, Frontier]:
        """The position each table's last write recorded with its rows (see ``delta_commits``
        and ``sql_merge``)."""

    @abstractmethod
    def holds_other_types(self, name: str, fields: Any) -> bool:
        """Whether the stored table itself holds one of ``fields`` (an Arrow schema, lake
        names) under another type, whatever dlt's stored schema says."""

    @abstractmethod
    def evolve(self, name: str, plan: Plan) -> None:
        """Apply a schema change's plan (``evolution``) to a lake table."""

    @abstractmethod
    def start_anew(self, names: Sequence[str]) -> None:
        """Make way for tables whose columns change type: the replace that follows writes them
        with the rows' types."""

    @abstractmethod
    def prepare_positions(self) -> None:
        """Before a load that records the tables' positions: whatever the destination needs."""

    @abstractmethod
    def tidy_state(self, keep: int) -> None:
        """Keep only the newest ``keep`` versions of the checkpoint's table."""
