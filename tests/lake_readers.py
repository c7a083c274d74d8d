"""Read lake tables back for value-by-value comparison in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replicator.adapters.lake.settings import LakeSettings


def delta_rows(settings: LakeSettings, table: str, order_by: str = "id") -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    path = Path(settings.bucket_url) / settings.dataset / table
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: r[order_by])


def delta_columns(settings: LakeSettings, table: str) -> list[str]:
    from deltalake import DeltaTable

    path = Path(settings.bucket_url) / settings.dataset / table
    return [f.name for f in DeltaTable(str(path)).schema().fields]


def duckdb_rows(database: str, table: str, order_by: str = "id") -> list[dict[str, Any]]:
    import duckdb

    with duckdb.connect(database, read_only=True) as conn:
        result = conn.execute(f'SELECT * FROM bronze."{table}" ORDER BY "{order_by}"')
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
