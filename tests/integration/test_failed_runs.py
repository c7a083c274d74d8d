"""A failed or misconfigured run never harms a working pipeline, and the embedded default never
stands in for a real source where it could surprise: real processes, a real PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.integration.helpers import SHOP
from tests.integration.processes import BIN
from tests.integration.test_cli import run_cli
from tests.integration.test_kill9_torture import _in_a_load, _packages
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration


def slots(execute: Any) -> dict[str, tuple[str, bool]]:
    rows = execute(
        "SELECT slot_name, confirmed_flush_lsn::text, temporary FROM pg_replication_slots"
    )
    return {name: (lsn, temporary) for name, lsn, temporary in rows}


def assert_orders_exact(execute: Any, workdir: Path) -> None:
    lake = delta_rows(_lake(workdir), "orders")
    assert [(r["id"], r["status"]) for r in lake] == execute(
        "SELECT id, status FROM orders ORDER BY id"
    )


def _lake(workdir: Path) -> Any:
    from replicator.adapters.lake.settings import LakeSettings

    return LakeSettings(bucket_url=str(workdir / "lakehouse"))


@pytest.fixture
def healthy(execute: Any, pg_dsn: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A working local Delta pipeline: snapshot, then CDC."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn}
    execute(SHOP)
    for args in (["--mode", "snapshot"], ["--mode", "cdc"]):
        result = run_cli(args, workdir, env)
        assert result.returncode == 0, result.stderr
    return workdir, env


class TestAFailedSnapshotLeavesTheWorkingPipelineAlone:
    def test_a_misconfigured_destination_touches_nothing_on_the_source(
        self, execute: Any, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        workdir, env = healthy
        before = slots(execute)
        execute("UPDATE orders SET status = 'changed' WHERE id <= 5")

        result = run_cli(["--mode", "snapshot", "--destination", "databricks"], workdir, env)

        assert result.returncode == 2, result.stderr
        assert (
            "catalog" in result.stderr and "DESTINATION__DATABRICKS__CREDENTIALS" in result.stderr
        )
        assert slots(execute) == before  # not dropped, not recreated
        result = run_cli(["--mode", "cdc"], workdir, env)  # the healthy pipeline goes on
        assert result.returncode == 0, result.stderr
        assert_orders_exact(execute, workdir)

    def test_a_snapshot_failing_mid_read_keeps_slot_lake_and_checkpoint(
        self, execute: Any, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        workdir, env = healthy
        execute("CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,2));"
                "INSERT INTO prices VALUES (1, 'NaN')")  # fmt: skip
        before = slots(execute)

        result = run_cli(["--mode", "snapshot"], workdir, env)

        assert result.returncode == 1 and "NaN" in result.stderr, result.stderr
        assert slots(execute) == before  # the snapshot's temporary slot is gone with it
        execute("DROP TABLE prices; UPDATE orders SET status = 'after' WHERE id % 4 = 0")
        result = run_cli(["--mode", "cdc"], workdir, env)
        assert result.returncode == 0, result.stderr
        assert_orders_exact(execute, workdir)

    def test_a_snapshot_killed_while_loading_leaves_cdc_exact(
        self, execute: Any, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        workdir, env = healthy
        execute("INSERT INTO orders SELECT g, 1, g, 'bulk' FROM generate_series(1000, 60000) g")
        (old_slot,) = slots(execute)
        dlt_dir = workdir / ".dlt-data"
        process = subprocess.Popen(
            [str(BIN / "replicator"), "--mode", "snapshot"],
            cwd=workdir,
            env=_cli_env(workdir, env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = {p.name for p in _packages(dlt_dir).glob("*")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if _in_a_load(dlt_dir, before):  # a table committed, the checkpoint maybe not
                break
            time.sleep(0.002)
        assert process.poll() is None, "the snapshot finished before it could be killed"
        process.kill()
        process.wait()
        time.sleep(1)

        after = slots(execute)
        assert after[old_slot][1] is False  # the old slot: still there, lasting
        execute("UPDATE orders SET status = 'after the kill' WHERE id % 3 = 0;"
                "DELETE FROM orders WHERE id % 7 = 0")  # fmt: skip
        result = run_cli(["--mode", "cdc"], workdir, env)
        assert result.returncode == 0, result.stderr
        assert_orders_exact(execute, workdir)
        leftover = [n for n in after if n != old_slot]
        if leftover:  # the killed snapshot's new slot is reported, never dropped silently
            assert f"drop-slot --slot {leftover[0]}" in result.stderr

    def test_a_committed_snapshot_retires_the_old_slot(
        self, execute: Any, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        workdir, env = healthy
        (old_slot,) = slots(execute)

        result = run_cli(["--mode", "snapshot"], workdir, env)

        assert result.returncode == 0, result.stderr
        (new_slot,) = slots(execute)
        assert new_slot != old_slot and new_slot.startswith(old_slot.rstrip("_0123456789"))
        execute("UPDATE orders SET status = 'next' WHERE id = 1")
        assert run_cli(["--mode", "cdc"], workdir, env).returncode == 0
        assert_orders_exact(execute, workdir)
        status = run_cli(["status", "--json"], workdir, env)
        assert f'"name": "{new_slot}"' in status.stdout


def _cli_env(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    import os

    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))
    }
    clean.pop("PIPELINE_MODE", None)
    clean.update({"DLT_DATA_DIR": str(workdir / ".dlt-data"), **env})
    return clean


class TestTheEmbeddedDefaultOnlyWhereItCannotSurprise:
    def test_databricks_without_a_source_is_an_error_and_starts_nothing(
        self, tmp_path: Path
    ) -> None:
        embedded = tmp_path / "embedded-pg"
        for args in (["--mode", "snapshot", "--destination", "databricks"],
                     ["check", "--destination", "databricks"]):  # fmt: skip
            result = run_cli(args, tmp_path, {"REPLICATOR_EMBEDDED_DIR": str(embedded)})
            assert result.returncode == 2, result.stderr
            assert "SOURCES__PG_REPLICATION__CREDENTIALS" in result.stderr
            assert "[sources.pg_replication.credentials]" in result.stderr
        assert not embedded.exists()

    def test_inside_a_databricks_job_a_missing_source_is_an_error(self, tmp_path: Path) -> None:
        embedded = tmp_path / "embedded-pg"
        result = run_cli(
            ["--mode", "snapshot"],
            tmp_path,
            {"REPLICATOR_EMBEDDED_DIR": str(embedded), "DATABRICKS_RUNTIME_VERSION": "15.4"},
        )
        assert result.returncode == 2 and "DATABRICKS_RUNTIME_VERSION" in result.stderr
        assert not embedded.exists()

    def test_the_embedded_default_says_so_at_warning(self, tmp_path: Path) -> None:
        embedded = tmp_path / "embedded-pg"
        result = run_cli(
            ["check"], tmp_path, {"REPLICATOR_EMBEDDED_DIR": str(embedded), "LOG_LEVEL": "WARNING"}
        )
        assert "EMBEDDED sample PostgreSQL" in result.stderr, result.stderr

    def test_simulate_refuses_a_configured_source_unless_its_database_is_named(
        self, execute: Any, pg_dsn: str, tmp_path: Path
    ) -> None:
        from sqlalchemy import make_url

        execute(SHOP)
        env = {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn}
        before = execute("SELECT count(*), max(status) FROM orders")

        refused = run_cli(["simulate", "3", "0", "0"], tmp_path, env)
        wrong = run_cli(["simulate", "3", "0", "0", "--database", "other"], tmp_path, env)

        database = make_url(pg_dsn).database
        for result in (refused, wrong):
            assert result.returncode == 2 and f"--database {database}" in result.stderr
        assert execute("SELECT count(*), max(status) FROM orders") == before


class TestConcurrentRuns:
    def test_a_snapshot_refuses_while_cdc_follows_and_cdc_goes_on(
        self, execute: Any, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        from tests.integration.processes import start_follow, terminate, wait_for

        workdir, env = healthy
        follow = start_follow(workdir, _cli_env(workdir, env))
        try:
            execute("UPDATE orders SET status = 'while following' WHERE id = 1")
            wait_for(
                lambda: delta_rows(_lake(workdir), "orders")[0]["status"] == "while following",
                "the follow run to apply a change",
            )
            result = run_cli(["--mode", "snapshot"], workdir, env)
            assert result.returncode == 75, result.stderr
            assert "another run of this pipeline" in result.stderr
        finally:
            terminate(follow)
        assert_orders_exact(execute, workdir)


class TestTheSlotMovesPastAnIdleCheckpoint:
    def test_a_run_killed_while_idle_resumes_although_the_slot_moved_on(
        self, execute: Any, pg_server_dsn: str, healthy: tuple[Path, dict[str, str]]
    ) -> None:
        """psycopg2 confirms the server's WAL end from keepalives once everything received is
        confirmed; WAL of other databases then moves the slot past the lake's checkpoint."""
        from tests.integration.processes import start_follow, wait_for

        workdir, env = healthy
        follow = start_follow(workdir, _cli_env(workdir, env), quiet=True)
        try:
            execute("UPDATE orders SET status = 'seen' WHERE id = 2")
            wait_for(
                lambda: delta_rows(_lake(workdir), "orders")[1]["status"] == "seen",
                "the follow run to apply a change",
            )
            other = psycopg2.connect(pg_server_dsn)  # WAL that holds nothing of ours
            other.autocommit = True
            with other.cursor() as cur:
                cur.execute("CREATE TEMP TABLE noise AS SELECT g FROM generate_series(1, 1) g")
                for _ in range(20):
                    cur.execute("SELECT pg_logical_emit_message(false, 'noise', repeat('x', 9000))")
                    time.sleep(0.25)
            other.close()
        finally:
            follow.kill()
            follow.wait()
        time.sleep(1)

        result = run_cli(["--mode", "cdc"], workdir, env)

        assert result.returncode == 0, result.stderr
        assert_orders_exact(execute, workdir)
