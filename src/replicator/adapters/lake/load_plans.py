"""What each table's write in the load in progress must do, for the hooks inside dlt's loader.

dlt writes each table in a job of its own (a Delta commit through delta-rs, or a SQL job on
DuckDB and Databricks), in worker threads, after the replicator handed it the data. The writer
registers here, for the duration of one load, the table's plan: how its rows are applied and
the frontier its commit must record as the table's position. The hooks (``delta_commits``,
``sql_merge``) read it; tables without a plan (dlt's own ``_dlt_*`` tables) are left to dlt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import attrs

from replicator.domain.lake_columns import DELETED_TS
from replicator.domain.model import Frontier

# merge: upserts and deletes by key; append: every row is a new one (tables without a key);
# replace: the rows become the table's whole content (a snapshot, a TRUNCATE in the batch).
PlanKind = Literal["merge", "append", "replace"]


@attrs.frozen
class TablePlan:
    kind: PlanKind
    # Recorded as the table's position in the same commit as its rows (None: a snapshot taken
    # without a replication slot, which CDC cannot continue anyway).
    frontier: Frontier | None
    # merge: the lake key columns, and whether rows marked deleted are removed (else kept, with
    # the ``deleted`` column set: soft delete).
    keys: tuple[str, ...] = ()
    hard_delete: bool = True
    # The table's column marking deleted rows (its ``LakeColumns.deleted_ts``).
    deleted: str = DELETED_TS
    # replace: the rows' columns become the table's (a column's type changed since the table
    # was written, which Delta's schema evolution cannot follow: it only adds columns).
    new_schema: bool = False


_lock = threading.Lock()
_plans: dict[str, TablePlan] = {}


@contextmanager
def active(plans: Mapping[str, TablePlan]) -> Iterator[None]:
    """Make ``plans`` (lake table name -> plan) visible to the loader's hooks for one load."""
    with _lock:
        if _plans:
            raise RuntimeError("a load is already in progress in this process")
        _plans.update(plans)
    try:
        yield
    finally:
        with _lock:
            _plans.clear()


def plan_for(table: str) -> TablePlan | None:
    """The plan of a table in the load in progress (called from dlt's worker threads)."""
    with _lock:
        return _plans.get(table)
