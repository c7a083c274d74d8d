"""The Prometheus endpoint of a `--follow` run, scraped as Prometheus would, while it runs."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.processes import BIN, free_port, replicator_env, terminate, wait_for
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration


def _started(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "replicator"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_follow_run_serves_what_it_applies_and_how_far_behind_it_is(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY);"
        "INSERT INTO a VALUES (1, 'x')"
    )
    env = replicator_env(pg_dsn, str(tmp_path / "lake"), tmp_path / "dlt", batch_max_seconds="0.5")
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    port = free_port()
    follow = _started(["--mode", "cdc", "--follow", "--metrics-port", str(port)], tmp_path, env)
    try:

        def serving() -> bool:
            try:
                return ("replicator_lag_seconds", ()) in scrape(port)
            except OSError:
                return False

        wait_for(serving, "the metrics endpoint never answered")
        assert scrape(port)[("replicator_lag_seconds", ())] == 0.0  # idle: caught up
        execute("INSERT INTO a SELECT g, 'y' FROM generate_series(2, 11) g")  # 10 changes, 1 tx
        execute("UPDATE a SET v = 'z' WHERE id = 1; INSERT INTO b VALUES (1)")  # 1 tx, 2 tables
        execute("DELETE FROM b")

        def applied() -> bool:
            return (
                scrape(port).get(("replicator_changes_applied_total", (("table", "public.b"),)))
                == 2.0
                and scrape(port).get(("replicator_lag_seconds", ())) == 0.0
            )

        wait_for(applied, "the changes never showed in the metrics")
        samples = scrape(port)
        assert samples[("replicator_changes_applied_total", (("table", "public.a"),))] == 11.0
        assert samples[("replicator_transactions_applied_total", (("table", "public.a"),))] == 2.0
        assert samples[("replicator_transactions_applied_total", (("table", "public.b"),))] == 2.0
        assert samples[("replicator_batch_seconds_count", ())] >= 1
        assert samples[("replicator_lake_position_bytes", ())] > 0
        assert samples[("replicator_slot_retained_wal_bytes", ())] >= 0
        assert samples[("replicator_last_commit_timestamp_seconds", ())] > 1.7e9
        assert ("replicator_lag_bytes", ()) in samples
    finally:
        stderr = terminate(follow)
    assert follow.returncode == 0, stderr
    assert f"serving Prometheus metrics on http://0.0.0.0:{port}/metrics" in stderr


def test_metrics_port_goes_with_cdc_and_a_taken_port_is_one_line(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute("CREATE TABLE a (id int PRIMARY KEY)")
    env = replicator_env(pg_dsn, str(tmp_path / "lake"), tmp_path / "dlt")
    wrong = run_cli(["--mode", "snapshot", "--metrics-port", "9100"], tmp_path, env)
    assert wrong.returncode == 2
    assert "--metrics-port goes with --mode cdc" in wrong.stderr
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # noqa: S104
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli(["--mode", "cdc", "--metrics-port", str(port)], tmp_path, env)
    assert busy.returncode == 2
    assert [line for line in busy.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --metrics-port {port}: cannot listen there ([Errno 98] Address already in use)"
    ]


def test_status_watch_refreshes_until_sigterm(execute: Any, pg_dsn: str, tmp_path: Path) -> None:
    import json
    import time

    execute("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1)")
    env = replicator_env(pg_dsn, str(tmp_path / "lake"), tmp_path / "dlt")
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    watch = _started(["status", "--json", "--watch", "0.3"], tmp_path, env)
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        execute("INSERT INTO a VALUES (2)")  # WAL moves: the lake is behind now
        deadline = time.monotonic() + 30
        later = first
        while later["lake"]["lag_bytes"] == 0 and time.monotonic() < deadline:
            later = json.loads(watch.stdout.readline())
    finally:
        stderr = terminate(watch)
    assert watch.returncode == 0, stderr
    assert "lag_seconds" in first["lake"]  # 0 while the server has written nothing since
    assert later["lake"]["lag_bytes"] > 0
    assert [t["rows"] for t in later["tables"]] == [1]
