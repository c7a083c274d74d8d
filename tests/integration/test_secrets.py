"""Secrets never appear in output, at any log level, whatever fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration

PASSWORD = "hunter2-Sup3r-s3cret"
TOKEN = "dapi0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_passwords_and_tokens_never_reach_stdout_or_stderr(
    level: str, execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute(
        f"CREATE ROLE rep LOGIN REPLICATION PASSWORD '{PASSWORD}'; CREATE TABLE t (id int PRIMARY KEY)"
    )
    good = (
        make_url(pg_dsn)
        .set(username="rep", password=PASSWORD)
        .render_as_string(hide_password=False)
    )
    unreachable = make_url(good).set(port=1).render_as_string(hide_password=False)
    databricks = {
        "DESTINATION__DATABRICKS__CREDENTIALS__SERVER_HOSTNAME": "127.0.0.1",
        "DESTINATION__DATABRICKS__CREDENTIALS__HTTP_PATH": "/sql/1.0/warehouses/x",
        "DESTINATION__DATABRICKS__CREDENTIALS__CATALOG": "main",
        "DESTINATION__DATABRICKS__CREDENTIALS__ACCESS_TOKEN": TOKEN,
        "DATABRICKS_SQL_CONNECTOR_RETRY_STOP_AFTER_ATTEMPTS_COUNT": "1",
        # Give up on the unreachable workspace after 3 s of retries, not the default 30 s.
        "DESTINATION__DATABRICKS__CREDENTIALS__CONNECTION_PARAMETERS": (
            '{"_retry_stop_after_attempts_duration": 3.0, "_retry_delay_max": 1.0}'
        ),
    }
    runs = [
        (["--mode", "snapshot"], {"SOURCES__PG_REPLICATION__CREDENTIALS": good}),
        (["--mode", "cdc"], {"SOURCES__PG_REPLICATION__CREDENTIALS": good}),
        (["--mode", "snapshot"], {"SOURCES__PG_REPLICATION__CREDENTIALS": unreachable}),
        (["status"], {"SOURCES__PG_REPLICATION__CREDENTIALS": good}),
        (
            ["--mode", "cdc", "--destination", "databricks"],
            {"SOURCES__PG_REPLICATION__CREDENTIALS": good, **databricks},
        ),
    ]
    try:
        for args, env in runs:
            result = run_cli(args, tmp_path, {"LOG_LEVEL": level, **env}, timeout=120)
            output = result.stdout + result.stderr
            assert PASSWORD not in output, (args, "password leaked")
            assert TOKEN not in output, (args, "token leaked")
    finally:
        execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
        execute("DROP OWNED BY rep; DROP ROLE rep")
