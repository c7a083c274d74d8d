"""Delta tables (local or in a bucket) read and reshaped with delta-rs: stored rows, row counts,
positions (``delta_commits``), schema changes (``evolution``), the checkpoint's history files."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dlt

from replicator.adapters.lake import delta_commits, evolution
from replicator.adapters.lake.destinations import is_local_path, local_bucket
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.table_access import TableAccess
from replicator.domain.model import Frontier, LakeTableInfo, TableId


def location(settings: LakeSettings, name: str) -> str:
    """Where a lake table lives in the bucket, as configured (``./lakehouse/bronze/t``)."""
    return f"{settings.bucket_url.rstrip('/')}/{settings.dataset}/{name}"


def open_table(settings: LakeSettings, name: str) -> Any:
    """The Delta table of a lake table, or None before its first load."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    where = location(settings, name)
    path = str(local_bucket(where)) if is_local_path(where) else where
    try:
        return DeltaTable(path)
    except TableNotFoundError:
        return None


class DeltaTables(TableAccess):
    def __init__(self, settings: LakeSettings, pipeline: Callable[[], dlt.Pipeline]) -> None:
        self._settings = settings
        self._pipeline = pipeline

    def rows_where(
        self, name: str, column: str, values: Sequence[Any], columns: list[str] | None = None
    ) -> list[dict[str, Any]]:
        if not values:
            return []
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        delta = open_table(self._settings, name)
        if delta is None:
            return []
        dataset = delta.to_pyarrow_dataset()
        wanted = pa.array(values).cast(dataset.schema.field(column).type)
        read = None if columns is None else list(dict.fromkeys([column, *columns]))
        parts = []
        # File by file: delta-rs writes strings as string_view in some files and as string in
        # others, and pyarrow can neither compare the two when it prunes row groups by their
        # statistics nor filter string_view values. Files storing the column as a view type are
        # read (only these columns) and matched in memory; the others are pruned as usual.
        for fragment in dataset.get_fragments():
            stored = fragment.physical_schema.field(column).type
            if pa.types.is_string_view(stored) or pa.types.is_binary_view(stored):
                part = fragment.to_table(schema=dataset.schema, columns=read)
                part = part.filter(pc.is_in(part.column(column), value_set=wanted))
            else:
                match = ds.field(column).isin(wanted.cast(stored))
                part = fragment.to_table(schema=dataset.schema, columns=read, filter=match)
            parts.append(part if columns is None else part.select(columns))
        if not parts:
            return []
        rows: list[dict[str, Any]] = pa.concat_tables(parts).to_pylist()
        return rows

    def describe(
        self, names: Mapping[TableId, str], lsn: Mapping[TableId, str] | None
    ) -> list[LakeTableInfo]:
        return [self._describe(t, n, None if lsn is None else lsn[t]) for t, n in names.items()]

    def _describe(self, table: TableId, name: str, lsn: str | None) -> LakeTableInfo:
        where = location(self._settings, name)
        delta = open_table(self._settings, name)
        if delta is None:
            return LakeTableInfo(table, name, 0, None, where)
        dataset = delta.to_pyarrow_dataset()  # counting rows reads only Parquet footers
        last = None
        if lsn is not None and lsn in dataset.schema.names:
            import pyarrow.compute as pc

            last = pc.max(dataset.to_table(columns=[lsn]).column(0)).as_py()
        return LakeTableInfo(table, name, dataset.count_rows(), delta.version(), where, last)

    def positions(self, names: Mapping[TableId, str]) -> dict[TableId, Frontier]:
        found = {}
        for table, name in names.items():
            delta = open_table(self._settings, name)
            frontier = delta_commits.position(delta) if delta is not None else None
            if frontier is not None:
                found[table] = frontier
        return found

    def holds_other_types(self, name: str, fields: Any) -> bool:
        """The Delta log is read: dlt's stored schema can be ahead of the table (a replace
        that started anew failed after normalize)."""
        from deltalake import Schema

        table = open_table(self._settings, name)
        if table is None:
            return False
        held = {f.name: f.type for f in table.schema().fields}
        wanted = Schema.from_arrow(fields).fields
        return any(f.name in held and held[f.name] != f.type for f in wanted)

    def evolve(self, name: str, plan: evolution.Plan) -> None:
        delta = open_table(self._settings, name)
        if delta is not None:
            evolution.evolve_delta(delta, plan)

    def start_anew(self, names: Sequence[str]) -> None:
        """Nothing to drop: the replace's commit overwrites the schema, the history stays."""

    def prepare_positions(self) -> None:
        """Nothing: the position travels in each commit's txn action."""

    def tidy_state(self, keep: int) -> None:
        pipeline = self._pipeline()
        with pipeline.destination_client() as destination:
            client: Any = destination  # dlt's filesystem client
            state_files = sorted(
                (parts[1], path)
                for path, parts in client._list_dlt_table_files(  # dlt's own reader lists them so
                    client.schema.state_table_name, pipeline.pipeline_name
                )
            )
            for _, path in state_files[:-keep]:
                client.fs_client.rm(path)
