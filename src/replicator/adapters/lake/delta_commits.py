"""Delta tables record their position in the commit that writes their rows.

Delta's own mechanism for idempotent writers: a commit may carry ``txn`` actions (application
transactions, an application id and a version), which the log keeps, through later commits and
checkpoints, as the latest version per id. Each replicator write adds three: the frontier's
commit position and its place in a transaction written in parts (``domain.model.Frontier``),
so a table's position is committed atomically with its data, whatever happens before the
checkpoint's own commit.

dlt makes the commit (``dlt.common.libs.deltalake``: ``write_delta_table`` for appends and
replaces, ``merge_delta_table`` for upserts); ``install()`` wraps both, once, so the commit gets
the txn actions of the table's plan in the load in progress (``load_plans``). If a dlt upgrade
renames them, ``install()`` raises at start-up (and a unit test fails) instead of writing
commits without positions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from replicator.adapters.lake import load_plans
from replicator.domain.model import Frontier

COMMIT_APP_ID = "replicator:frontier-commit"
CHANGE_APP_ID = "replicator:frontier-change"
SAME_APP_ID = "replicator:frontier-same"
_APP_IDS = (COMMIT_APP_ID, CHANGE_APP_ID, SAME_APP_ID)
_MARK = "_replicator_positions"


def transactions(frontier: Frontier) -> list[Any]:
    """The txn actions that record ``frontier``: every id in every commit (a later commit that
    set only some would leave the others from an earlier one)."""
    from deltalake import Transaction

    values = (frontier.commit, frontier.change, frontier.same)
    return [Transaction(app_id=a, version=v) for a, v in zip(_APP_IDS, values, strict=True)]


def position(table: Any) -> Frontier | None:
    """The position a Delta table's last replicator commit recorded (None: never one)."""
    commit = table.transaction_version(COMMIT_APP_ID)
    if commit is None:
        return None
    change, same = (int(table.transaction_version(a) or 0) for a in _APP_IDS[1:])
    return Frontier(int(commit), change, same)


def _commit_properties(table_name: str) -> Any:
    from deltalake import CommitProperties

    plan = load_plans.plan_for(table_name)
    if plan is None or plan.frontier is None:
        return None
    return CommitProperties(app_transactions=transactions(plan.frontier))


def _already_written(table: Any, table_name: str) -> bool:
    """The table's last commit already holds this write: a job dlt runs again after a failure
    that came after the commit. Skipped, as Delta's idempotent writers do (a merge would only
    be redone, an append would be doubled). Replaces are never skipped: a table snapshotted
    on its own may have to be loaded again at the same checkpoint."""
    plan = load_plans.plan_for(table_name)
    if plan is None or plan.frontier is None or plan.kind == "replace":
        return False
    held = position(table) if hasattr(table, "transaction_version") else None
    return held is not None and held >= plan.frontier


def _table_name(table_or_uri: Any) -> str:
    """dlt keeps a Delta table in ``<bucket>/<dataset>/<table>``: its last path segment."""
    uri = getattr(table_or_uri, "table_uri", table_or_uri)
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


class _CommittingTable:
    """A DeltaTable whose ``merge`` commits with the table's position; all else passes through."""

    def __init__(self, table: Any, properties: Any) -> None:
        self._table = table
        self._properties = properties

    def merge(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("commit_properties", self._properties)
        return self._table.merge(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _wrap_write(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def write_deltalake(*args: Any, **kwargs: Any) -> None:
        target = kwargs.get("table_or_uri", args[0] if args else None)
        if _already_written(target, _table_name(target)):
            return
        name = _table_name(target)
        properties = _commit_properties(name)
        if properties is not None:
            kwargs.setdefault("commit_properties", properties)
        plan = load_plans.plan_for(name)
        if plan is not None and plan.kind == "replace" and plan.new_schema:
            kwargs["schema_mode"] = "overwrite"  # the table's columns become the rows'
        original(*args, **kwargs)

    setattr(write_deltalake, _MARK, True)
    return write_deltalake


def _wrap_merge(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def merge_delta_table(
        table: Any, data: Any, schema: Any, load_table_name: str, *args: Any, **kwargs: Any
    ) -> None:
        if _already_written(table, load_table_name):
            return
        properties = _commit_properties(load_table_name)
        if properties is not None:
            table = _CommittingTable(table, properties)
        original(table, data, schema, load_table_name, *args, **kwargs)

    setattr(merge_delta_table, _MARK, True)
    return merge_delta_table


def install() -> None:
    """Idempotent: make dlt's Delta commits carry the positions of ``load_plans``."""
    from dlt.common.libs import deltalake as dlt_delta

    for name, wrap in (("write_deltalake", _wrap_write), ("merge_delta_table", _wrap_merge)):
        current = getattr(dlt_delta, name, None)
        if current is None:
            raise RuntimeError(
                f"dlt.common.libs.deltalake.{name} is gone: review adapters/lake/delta_commits.py"
            )
        if not getattr(current, _MARK, False):
            setattr(dlt_delta, name, wrap(current))
