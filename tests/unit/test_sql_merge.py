"""The SQL the replicator makes dlt run on DuckDB and Databricks, checked offline: rendered by
dlt's own SQL clients (no connection), parsed by sqlglot in each destination's dialect."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from replicator.adapters.lake import sql_merge
from replicator.adapters.lake.load_plans import TablePlan
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.domain.model import Frontier
from tests.unit.test_databricks_config import CREDENTIALS

TABLE = {
    "name": "orders",
    "columns": {
        name: {"name": name}
        for name in ("id", "status", "_pg_lsn", "_pg_commit_ts", "_pg_deleted_ts")
    },
}
DIALECTS = {"duckdb": "duckdb", "databricks": "databricks"}


@pytest.fixture(params=sorted(DIALECTS))
def client(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "x.duckdb"))
    writer = DltLakeWriter(LakeSettings(destination=request.param, pipelines_dir=str(tmp_path)))
    yield writer.pipeline().destination_client().sql_client


def parsed(client: Any, statements: list[str]) -> list[exp.Expression]:
    dialect = "databricks" if sql_merge.is_databricks(client) else "duckdb"
    out = []
    for statement in statements:
        assert "\n" not in statement and ";" not in statement  # dlt splits jobs at both
        tree = sqlglot.parse_one(statement, read=dialect)
        assert not isinstance(tree, exp.Command), f"not parsed, only passed through: {statement}"
        out.append(tree)
    return out


class TestMerge:
    def test_one_merge_that_never_inserts_a_row_marked_deleted(self, client: Any) -> None:
        plan = TablePlan("merge", Frontier(1000, 0), keys=("id",))
        trees = parsed(client, sql_merge.statements(plan, TABLE, client))

        (merge,) = [t for t in trees if isinstance(t, exp.Merge)]
        whens = merge.args["whens"].expressions
        kinds = [(w.args.get("matched"), type(w.args["then"]).__name__) for w in whens]
        assert kinds == [(True, "Var"), (True, "Update"), (False, "Insert")]  # DELETE is a Var
        # sqlglot spells "x IS NOT NULL" as "NOT x IS NULL"
        deleted, inserted = whens[0].args["condition"], whens[-1].args["condition"]
        assert isinstance(deleted, exp.Not) and isinstance(deleted.this, exp.Is)
        assert isinstance(inserted, exp.Is) and "_pg_deleted_ts" in inserted.sql()

    def test_soft_delete_keeps_rows_marked_deleted(self, client: Any) -> None:
        plan = TablePlan("merge", Frontier(1000, 0), keys=("id",), hard_delete=False)
        (merge,) = [
            t
            for t in parsed(client, sql_merge.statements(plan, TABLE, client))
            if isinstance(t, exp.Merge)
        ]
        assert [w.args.get("condition") for w in merge.args["whens"].expressions] == [None, None]

    def test_append_and_replace_are_one_statement_on_databricks(self, client: Any) -> None:
        for kind in ("append", "replace"):
            statements = sql_merge.statements(TablePlan(kind, Frontier(7, 2)), TABLE, client)  # type: ignore[arg-type]
            writes = [
                t
                for t in parsed(client, statements)
                if isinstance(t, exp.Insert | exp.Delete) and t.find(exp.Table).name == "orders"  # type: ignore[union-attr]
            ]
            if sql_merge.is_databricks(client):
                assert len(writes) == 1
                if kind == "replace":
                    assert writes[0].args.get("overwrite")
            else:  # DuckDB: inside the job's transaction
                assert len(writes) == (1 if kind == "append" else 2)


class TestPositions:
    def test_the_position_is_committed_with_the_rows(self, client: Any) -> None:
        frontier = Frontier(123456789, 123450000, 3)
        statements = sql_merge.statements(TablePlan("append", frontier), TABLE, client)
        parsed(client, statements)
        if sql_merge.is_databricks(client):
            # The commit of the write right after it carries the position as userMetadata.
            assert statements[0] == (
                "SET spark.databricks.delta.commitInfo.userMetadata = replicator-123456789-123450000-3"
            )
            assert statements[-1].startswith("INSERT INTO")  # nothing after the write
            assert sql_merge.from_token("replicator-123456789-123450000-3") == frontier
        else:
            assert "_replicator_positions" in statements[-1]
            assert "123456789, 123450000, 3" in statements[-1]

    def test_tokens_round_trip_and_others_are_not_positions(self) -> None:
        frontier = Frontier(2**40 + 5, 2**40 + 1, 7)
        assert sql_merge.from_token(sql_merge.token(frontier)) == frontier
        assert sql_merge.from_token("'replicator-1-2-3'") == Frontier(1, 2, 3)
        for other in (
            None,
            "",
            "replicator-none",
            "some-comment",
            "replicator-1",
            "replicator-1-2",
        ):
            assert sql_merge.from_token(other) is None


class TestOneTransactionPerJob:
    def test_dlt_runs_each_merge_job_of_ours_in_one_transaction_on_duckdb(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # dlt leaves supports_transactions unset for DuckDB and then runs non-DDL SQL jobs in
        # autocommit, statement by statement (a replaced table was seen empty by a reader).
        from dlt.destinations.job_client_impl import SqlLoadJob

        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "x.duckdb"))
        writer = DltLakeWriter(LakeSettings(destination="duckdb", pipelines_dir=str(tmp_path)))
        client = writer.pipeline().destination_client()
        plan = TablePlan("replace", Frontier(5), keys=("id",))
        sql = "\n".join(sql_merge.statements(plan, TABLE, client.sql_client))
        job = SqlLoadJob.__new__(SqlLoadJob)
        job._job_client = client
        began: list[bool] = []

        class Recording:
            def begin_transaction(self) -> Any:
                began.append(True)
                return contextlib.nullcontext()

        job._sql_client = Recording()  # type: ignore[assignment]
        with job.maybe_transaction(sql):
            pass
        assert began == [True]
