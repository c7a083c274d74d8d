"""The SQL a table's write costs on DuckDB and Databricks, and the position it commits with it.

On SQL destinations dlt loads each table's rows into the staging dataset (``bronze_staging``),
then runs a merge job: SQL it generates per table. For the replicator's tables the job runs the
statements below instead (``install()`` puts them in place of dlt's; dlt's own tables keep
dlt's), so that every write is one atomic statement whose effect replay cannot change:

- merge: one ``MERGE`` by key. A row marked deleted removes the stored row and is never
  inserted (dlt's upsert would insert a row of NULLs with ``_pg_deleted_ts`` set for a key the
  lake lacks: an insert and a delete of one key in a batch, or a replayed delete).
- append (tables without a key): one ``INSERT ... SELECT``.
- replace (a snapshot, or a TRUNCATE in the batch): DuckDB deletes and inserts inside the job's
  transaction, Databricks runs one ``INSERT OVERWRITE``. Readers never see the table empty.

The table's position (``load_plans.TablePlan.frontier``) is committed with the rows: on DuckDB
a row of ``_replicator_positions`` written in the same transaction, on Databricks the Delta
commit's ``userMetadata`` (``SET spark.databricks.delta.commitInfo.userMetadata`` just before
the write), read back with ``DESCRIBE HISTORY``. Statements are single lines without
semicolons inside, as dlt's SQL job runner splits them at both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from replicator.adapters.lake import load_plans
from replicator.adapters.lake.load_plans import TablePlan
from replicator.domain.model import Frontier

POSITIONS_TABLE = "_replicator_positions"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_TOKEN = re.compile(r"^'?replicator-(\d+)-(\d+)-(\d+)'?$")
_MARK = "_replicator_sql"
# DESCRIBE HISTORY rows looked at for the last replicator commit (later ones: OPTIMIZE, ...).
HISTORY_DEPTH = 50


def token(frontier: Frontier) -> str:
    """A position as commit metadata: ``replicator-<commit>-<change>-<same>`` (a bare word,
    as Databricks' ``SET key = value`` takes it)."""
    return f"replicator-{frontier.commit}-{frontier.change}-{frontier.same}"


def from_token(text: Any) -> Frontier | None:
    match = _TOKEN.match(str(text or "").strip())
    return Frontier(int(match[1]), int(match[2]), int(match[3])) if match else None


def is_databricks(sql_client: Any) -> bool:
    return "databricks" in type(sql_client).__module__


def statements(plan: TablePlan, table: Any, sql_client: Any) -> list[str]:
    """The merge job of one table: its rows from staging into the dataset, and its position."""
    name = table["name"]
    target, staging = sql_client.get_qualified_table_names(name)
    escape: Callable[[str], str] = sql_client.escape_column_name
    columns = [escape(c) for c in table["columns"]]
    listed = ", ".join(columns)
    databricks = is_databricks(sql_client)
    body: list[str]
    if plan.kind == "append":
        body = [f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {staging}"]
    elif plan.kind == "replace":
        if databricks:
            body = [f"INSERT OVERWRITE {target} ({listed}) SELECT {listed} FROM {staging}"]
        else:
            insert = f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {staging}"
            body = [f"DELETE FROM {target}", insert]
    else:
        body = [_merge(plan, target, staging, columns, escape)]
    if plan.frontier is None:
        return body
    if databricks:
        # The next write of this session (the MERGE) carries the position in its own commit.
        # Nothing after the write: a statement failing after it would make dlt retry the job,
        # and a retried INSERT appends twice (dlt gets no retries on Databricks, see
        # destinations.py). Later statements of the session (dlt's own tables) may carry the
        # token too; positions are only ever read from the replicator's tables.
        return [f"SET {USER_METADATA} = {token(plan.frontier)}", *body]
    positions = sql_client.make_qualified_table_name(POSITIONS_TABLE)
    literal = sql_client.capabilities.escape_literal
    return [
        *body,
        f"DELETE FROM {positions} WHERE table_name = {literal(name)}",
        f"INSERT INTO {positions} VALUES ({literal(name)}, {plan.frontier.commit}, "
        f"{plan.frontier.change}, {plan.frontier.same})",
    ]


def _merge(
    plan: TablePlan,
    target: str,
    staging: str,
    columns: Sequence[str],
    escape: Callable[[str], str],
) -> str:
    on = " AND ".join(f"d.{escape(k)} = s.{escape(k)}" for k in plan.keys)
    updates = ", ".join(f"{c} = s.{c}" for c in columns)
    values = ", ".join(f"s.{c}" for c in columns)
    deleted = f"s.{escape(plan.deleted)}"
    parts = [f"MERGE INTO {target} AS d USING {staging} AS s ON {on}"]
    if plan.hard_delete:
        parts.append(f"WHEN MATCHED AND {deleted} IS NOT NULL THEN DELETE")
    parts.append(f"WHEN MATCHED THEN UPDATE SET {updates}")
    inserted = f"WHEN NOT MATCHED AND {deleted} IS NULL" if plan.hard_delete else "WHEN NOT MATCHED"
    parts.append(f"{inserted} THEN INSERT ({', '.join(columns)}) VALUES ({values})")
    return " ".join(parts)


def prepare_positions(sql_client: Any) -> None:
    """DuckDB: create the positions table before a load (once), not in the merge jobs, which
    run in parallel transactions that would conflict on creating it."""
    if is_databricks(sql_client):
        return
    if not sql_client.has_dataset():
        sql_client.create_dataset()
    positions = sql_client.make_qualified_table_name(POSITIONS_TABLE)
    sql_client.execute_sql(
        f"CREATE TABLE IF NOT EXISTS {positions} (table_name VARCHAR NOT NULL, "
        "frontier_commit UBIGINT NOT NULL, frontier_change UBIGINT NOT NULL, "
        "frontier_same BIGINT NOT NULL)"
    )


def read_positions(sql_client: Any, tables: Sequence[str]) -> dict[str, Frontier]:
    """The positions the last write of each table recorded (tables without one left out)."""
    if is_databricks(sql_client):
        return _history_positions(sql_client, tables)
    from dlt.destinations.exceptions import DatabaseUndefinedRelation

    positions = sql_client.make_qualified_table_name(POSITIONS_TABLE)
    try:
        rows = sql_client.execute_sql(
            f"SELECT table_name, frontier_commit, frontier_change, frontier_same FROM {positions}"
        )
    except DatabaseUndefinedRelation:  # no write has recorded one yet
        return {}
    wanted = set(tables)
    return {str(n): Frontier(int(c), int(x), int(k)) for n, c, x, k in rows or [] if n in wanted}


def _history_positions(sql_client: Any, tables: Sequence[str]) -> dict[str, Frontier]:
    """Databricks: the newest ``userMetadata`` position in each table's Delta history (later
    commits without one, such as OPTIMIZE, are passed over)."""
    from dlt.destinations.exceptions import DatabaseUndefinedRelation

    found: dict[str, Frontier] = {}
    for name in tables:
        qualified = sql_client.make_qualified_table_name(name)
        try:
            with sql_client.execute_query(
                f"DESCRIBE HISTORY {qualified} LIMIT {HISTORY_DEPTH}"
            ) as cur:
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
        except DatabaseUndefinedRelation:  # not written yet
            continue
        column = names.index("userMetadata") if "userMetadata" in names else None
        for row in rows if column is not None else []:
            frontier = from_token(row[column])
            if frontier is not None:
                found[name] = frontier
                break
    return found


def install() -> None:
    """Idempotent: dlt's merge jobs run ``statements`` for tables with a plan."""
    from dlt.destinations.sql_jobs import SqlMergeFollowupJob

    current = SqlMergeFollowupJob.__dict__.get("generate_sql")
    original = getattr(current, "__func__", None)
    if original is None:
        raise RuntimeError(
            "dlt's SqlMergeFollowupJob.generate_sql is gone: review adapters/lake/sql_merge.py"
        )
    if getattr(original, _MARK, False):
        return

    def generate_sql(cls: Any, table_chain: Sequence[Any], sql_client: Any) -> list[str]:
        plan = load_plans.plan_for(table_chain[0]["name"])
        if plan is None:
            result: list[str] = original(cls, table_chain, sql_client)
            return result
        return statements(plan, table_chain[0], sql_client)

    setattr(generate_sql, _MARK, True)
    SqlMergeFollowupJob.generate_sql = classmethod(generate_sql)  # type: ignore[method-assign,assignment]
