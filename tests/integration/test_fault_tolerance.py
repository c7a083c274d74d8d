"""Faults with real processes: the source restarting under --follow, an unwritable lake."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.demo.embedded import EmbeddedPostgres
from tests.integration.helpers import SHOP, Sql, assert_lake_equals_source, cdc, snapshot
from tests.integration.processes import BIN, free_port, replicator_env, start_follow, wait_for
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration


def test_follow_reconnects_after_the_source_restarts(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedPostgres(tmp_path / "pg", port=port).start()
    process = None
    try:
        execute = Sql(server.dsn)
        execute(SHOP)
        pg = PostgresSettings(dsn=server.dsn)
        lake = LakeSettings(bucket_url=str(tmp_path / "lake"), pipelines_dir=str(tmp_path / "dlt"))
        snapshot(pg, lake)
        env = replicator_env(
            server.dsn, lake.bucket_url, tmp_path / "follow-dlt", batch_max_seconds="0.5"
        )
        process = start_follow(tmp_path, env)
        execute("UPDATE orders SET status = 'before restart' WHERE id = 1")
        wait_for(
            lambda: delta_rows(lake, "orders")[0]["status"] == "before restart",
            "timed out waiting for the first change",
            timeout=90,
            retrying=(Exception,),  # the lake may be mid-commit
        )

        server.stop()  # the source goes away under the running replicator...
        time.sleep(2)
        server = EmbeddedPostgres(tmp_path / "pg", port=port).start()  # ...and comes back
        execute = Sql(server.dsn)
        execute(
            "UPDATE orders SET status = 'after restart' WHERE id = 2; DELETE FROM orders WHERE id = 3"
        )
        wait_for(
            lambda: delta_rows(lake, "orders")[1]["status"] == "after restart",
            "timed out waiting for the change after the restart",
            timeout=90,
            retrying=(Exception,),
        )

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "reconnecting in" in stderr
        cdc(pg, lake)
        assert_lake_equals_source(execute, lake, "orders")
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        server.stop()
        subprocess.run(["rm", "-rf", str(tmp_path / "pg")], check=False)


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i: not even root may write (a read-only lake for a replicator running as root)."""
    flag = "+i" if on else "-i"
    result = subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True, check=False)
    return result.returncode == 0


def test_unwritable_lake_fails_clearly_and_the_next_run_ends_exact(
    execute: Any, pg_dsn: str, pg_settings: PostgresSettings, tmp_path: Path
) -> None:
    execute(SHOP)
    lake = LakeSettings(bucket_url=str(tmp_path / "lake"), pipelines_dir=str(tmp_path / "dlt"))
    snapshot(pg_settings, lake)
    execute("UPDATE orders SET status = 'blocked' WHERE id = 1; DELETE FROM orders WHERE id = 2")
    (slot_before,) = execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0]
    bronze = tmp_path / "lake" / "bronze"
    if not _immutable(bronze, True):
        pytest.skip("chattr +i is not available on this file system")
    try:
        env = replicator_env(pg_dsn, lake.bucket_url, tmp_path / "cli-dlt")
        result = subprocess.run(
            [str(BIN / "replicator"), "--mode", "cdc"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        _immutable(bronze, False)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert (
        execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots")[0][0] == slot_before
    )
    cdc(pg_settings, lake)  # the fault fixed: the next run ends exact
    assert_lake_equals_source(execute, lake, "orders")


def test_kill_9_at_random_moments_then_a_normal_run_ends_exact(
    execute: Any, pg_dsn: str, pg_settings: PostgresSettings, tmp_path: Path
) -> None:
    import random

    from tests.integration.test_cdc_random import TABLES, RandomWorkload

    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
    print(f"kill -9 schedule seed: {seed} (rerun with REPLICATOR_TEST_SEED={seed})")
    rng = random.Random(seed)
    execute(TABLES)
    RandomWorkload(seed, 0).run(pg_dsn, 100)
    lake = LakeSettings(bucket_url=str(tmp_path / "lake"), pipelines_dir=str(tmp_path / "dlt"))
    snapshot(pg_settings, lake)
    env = replicator_env(
        pg_dsn, lake.bucket_url, tmp_path / "killed-dlt",
        batch_max_changes="40", batch_max_seconds="0.3",
    )  # fmt: skip
    kills = 0
    for round_ in range(6):
        RandomWorkload(seed, 1 + round_).run(pg_dsn, 60)
        process = start_follow(tmp_path, env, quiet=True)
        time.sleep(rng.uniform(1.5, 6.0))  # the schedule is the seed's, the moment lands anywhere
        if process.poll() is None:
            process.kill()  # SIGKILL: no cleanup of any kind
            kills += 1
        process.wait()
        wait_for(
            lambda: execute(
                "SELECT coalesce(bool_and(NOT active), true) FROM pg_replication_slots"
                " WHERE database = current_database()"
            )[0][0],
            "timed out waiting for the server to notice the dead consumer",
            timeout=90,
            retrying=(Exception,),
        )
    assert kills >= 4

    cdc(pg_settings, lake)

    for table, key in (("accounts", "id"), ("events", "id"), ("pairs", "a, b")):
        assert_lake_equals_source(execute, lake, table, key)
