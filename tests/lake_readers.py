"""Read lake tables back for value-by-value comparison in tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from replicator.adapters.lake.settings import LakeSettings

META_COLUMNS = ("_pg_lsn", "_pg_commit_ts", "_pg_deleted_ts")


def name_tag(source: str, digits: int = 6) -> str:
    """The suffix that tells a lake name apart, computed independently of naming.py: the first
    hex digits of the SHA-1 of the exact source spelling."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:digits]


def delta_rows(
    settings: LakeSettings, table: str, order_by: str = "id", *, meta: bool = False
) -> list[dict[str, Any]]:
    """Rows of a lake table sorted by ``order_by``; the replicator's ``_pg_*`` columns only
    with ``meta=True``."""
    from deltalake import DeltaTable

    path = Path(settings.bucket_url) / settings.dataset / table
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    if not meta:
        rows = [{k: v for k, v in r.items() if k not in META_COLUMNS} for r in rows]
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
        rows = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    return [{k: v for k, v in r.items() if k not in META_COLUMNS} for r in rows]
