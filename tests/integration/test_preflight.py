"""`replicator check` and the preflight run before CDC, against a real PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from replicator.domain.lsn import Lsn
from tests.integration.test_cli import run_cli

pytestmark = pytest.mark.integration


def test_check_passes_on_a_ready_source(execute: Any, pg_dsn: str, tmp_path: Path) -> None:
    execute("CREATE TABLE t (id int PRIMARY KEY)")
    result = run_cli(["check"], tmp_path, {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wal_level" in result.stdout and "logical" in result.stdout


def test_check_names_the_fix_for_a_role_and_a_keyless_table(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute(
        'CREATE TABLE "log lines" (line text); CREATE ROLE reader LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader'
    )
    dsn = make_url(pg_dsn).set(username="reader").render_as_string(hide_password=False)

    result = run_cli(["check"], tmp_path, {"SOURCES__PG_REPLICATION__CREDENTIALS": dsn})

    assert result.returncode == 2
    assert 'ALTER ROLE "reader" WITH REPLICATION' in result.stdout
    plain = " ".join(re.sub(r"\x1b\[[0-9;]*m|[│┃]", " ", result.stdout).split())
    assert '"public"."log lines" REPLICA IDENTITY FULL' in plain
    execute("DROP OWNED BY reader; DROP ROLE reader")


def test_cdc_stops_before_streaming_when_preflight_fails(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute(
        "CREATE TABLE t (id int PRIMARY KEY);"
        "CREATE PUBLICATION dlt_cdc_pub FOR TABLE t WITH (publish = 'insert')"
    )
    result = run_cli(["--mode", "cdc"], tmp_path, {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: preflight failed: publication dlt_cdc_pub")
    assert "SET (publish = 'insert, update, delete, truncate')" in errors[0]


def test_status_json_reports_slot_checkpoint_and_tables(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    import json

    execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    execute("INSERT INTO t VALUES (3, 'c')")
    assert run_cli(["--mode", "cdc"], tmp_path, env).returncode == 0

    result = run_cli(["status", "--json"], tmp_path, env)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["slot"]["name"] == "dlt_cdc_slot"
    # The slot is confirmed one byte before the checkpoint (see ChangeStream.acknowledge).
    checkpoint = Lsn.parse(status["lake"]["checkpoint_lsn"])
    assert Lsn.parse(status["slot"]["confirmed_flush_lsn"]) == Lsn(int(checkpoint) - 1)
    assert status["lake"]["lag_bytes"] >= 0
    (table,) = status["tables"]
    assert (table["lake_table"], table["rows"]) == ("t", 3)
    assert table["last_change_lsn"] is not None


def test_lost_slot_fails_with_the_remedy_or_resnapshots_on_request(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    from replicator.adapters.lake.settings import LakeSettings
    from tests.integration.test_cdc import assert_lake_equals_source

    execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    execute("SELECT pg_drop_replication_slot('dlt_cdc_slot')")  # lost: say, by an operator
    execute("UPDATE t SET v = 'changed while the slot was gone'; INSERT INTO t VALUES (2, 'b')")

    failed = run_cli(["--mode", "cdc"], tmp_path, env)
    assert failed.returncode != 0
    assert "re-run `replicator --mode snapshot`" in failed.stderr

    healed = run_cli(["--mode", "cdc", "--on-lost-slot=resnapshot"], tmp_path, env)
    assert healed.returncode == 0, healed.stderr
    assert "taking a new snapshot" in healed.stderr
    assert_lake_equals_source(execute, LakeSettings(bucket_url=str(tmp_path / "lake")), "t")


def test_verify_proves_equality_even_with_writers_running_and_finds_tampering(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    import threading

    import psycopg2
    from deltalake import DeltaTable

    execute(
        "CREATE TABLE acct (id int PRIMARY KEY, balance numeric(12,2), tags text[]);"
        "INSERT INTO acct SELECT g, g, ARRAY['x'] FROM generate_series(1, 500) g"
    )
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    stop = threading.Event()

    def write() -> None:
        conn = psycopg2.connect(pg_dsn)
        n = 0
        try:
            while not stop.is_set():
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "UPDATE acct SET balance = balance + 1 WHERE id = %s", (1 + n % 500,)
                    )
                    cur.execute("INSERT INTO acct VALUES (%s, 0, NULL)", (1000 + n,))
                n += 1
        finally:
            conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        busy = run_cli(["verify"], tmp_path, env)  # the source keeps changing meanwhile
    finally:
        stop.set()
        writer.join()
    assert busy.returncode == 0, busy.stdout + busy.stderr
    assert "lake equal to the source" in busy.stdout

    assert run_cli(["--mode", "cdc"], tmp_path, env).returncode == 0  # nothing left pending
    table = DeltaTable(str(tmp_path / "lake" / "bronze" / "acct"))
    table.delete("id = 7")
    table.update(predicate="id = 9", updates={"balance": "cast(-1 as decimal(12,2))"})

    tampered = run_cli(["verify"], tmp_path, env)
    assert tampered.returncode == 1
    assert "DIFFERENT" in tampered.stdout
    assert "7, 9" in tampered.stdout
