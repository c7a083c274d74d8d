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
    from tests.integration.helpers import assert_lake_equals_source

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


def _as(dsn: str, role: str) -> str:
    return make_url(dsn).set(username=role).render_as_string(hide_password=False)


def _fixes(stdout: str) -> list[str]:
    """The statements of every failed check in `check`'s job-log output (one line each)."""
    statements = []
    for line in stdout.splitlines():
        if line.startswith("fail ") and " -> " in line:
            fix = line.split(" -> ", 1)[1]
            statements += fix.split(": ", 1)[1].split("; ")
    return statements


def test_check_predicts_the_privileges_the_snapshot_needs_and_its_fixes_work(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    """The README's kind of role: REPLICATION, SELECT on some tables, owner of none."""
    import uuid

    from replicator.adapters.lake.settings import LakeSettings
    from tests.integration.helpers import assert_lake_equals_source

    role = f"app_{uuid.uuid4().hex[:8]}"
    execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');"
        "CREATE TABLE secret (id int PRIMARY KEY); INSERT INTO secret VALUES (7);"
        f"CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON t TO {role}"
    )
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": _as(pg_dsn, role),
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    try:
        check = run_cli(["check"], tmp_path, env)
        assert check.returncode == 2, check.stdout + check.stderr
        failed = [line for line in check.stdout.splitlines() if line.startswith("fail ")]
        assert failed == [
            f"fail privileges: this role may not read 1 table: public.secret -> as their owner "
            f'or a superuser: GRANT SELECT ON "public"."secret" TO "{role}"',
            "fail publication dlt_cdc_pub: does not exist yet, and this role may not create it: "
            "another role owns public.secret, public.t (publishing a table takes its owner) -> "
            'as a superuser (or the tables\' owner): CREATE PUBLICATION "dlt_cdc_pub" FOR TABLE '
            '"public"."secret", "public"."t" WITH (publish = \'insert, update, delete, '
            "truncate', publish_via_partition_root = true)",
        ]
        snapshot = run_cli(["--mode", "snapshot"], tmp_path, env)
        assert snapshot.returncode == 2, snapshot.stderr  # as predicted; a setting, not "retry"

        for statement in _fixes(check.stdout):
            execute(statement)
        again = run_cli(["check"], tmp_path, env)
        assert again.returncode == 0, again.stdout
        assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
        execute("INSERT INTO t VALUES (3, 'c'); UPDATE secret SET id = 8")
        assert run_cli(["--mode", "cdc"], tmp_path, env).returncode == 0
        lake = LakeSettings(bucket_url=str(tmp_path / "lake"))
        assert_lake_equals_source(execute, lake, "t")
        assert_lake_equals_source(execute, lake, "secret")

        # drop-slot does what the role may (the slot), says what is left (the publication, owned
        # by the superuser who created it), and succeeds: the slot, which pins WAL, is gone.
        dropped = run_cli(["drop-slot"], tmp_path, env)
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
        assert "replication slot dlt_cdc_slot: dropped; publication dlt_cdc_pub: left" in (
            dropped.stdout
        )
        assert 'run: DROP PUBLICATION "dlt_cdc_pub"' in dropped.stdout
        assert execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'dlt_cdc_slot'"
        ) == [(0,)]
        assert execute("SELECT count(*) FROM pg_publication") == [(1,)]
    finally:
        execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_a_role_owning_its_tables_needs_create_on_the_database_and_replication_for_cdc(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    import uuid

    role = f"own_{uuid.uuid4().hex[:8]}"
    execute(
        f"CREATE ROLE {role} LOGIN; GRANT CREATE ON SCHEMA public TO {role};"
        f"SET ROLE {role}; CREATE TABLE mine (id int PRIMARY KEY); INSERT INTO mine VALUES (1)"
    )
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": _as(pg_dsn, role),
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    database = make_url(pg_dsn).database
    try:
        check = run_cli(["check"], tmp_path, env)
        assert check.returncode == 2
        assert (
            f"fail publication dlt_cdc_pub: does not exist yet, and this role may not create it "
            f"(no CREATE on database {database}) -> as a superuser: GRANT CREATE ON DATABASE "
            f'"{database}" TO "{role}", or create it yourself: CREATE PUBLICATION'
        ) in check.stdout
        assert (
            f'fail role: {role} lacks the REPLICATION attribute -> ALTER ROLE "{role}" WITH REPLICATION'
            in check.stdout
        )
        execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')

        # Without REPLICATION the snapshot still loads (no CDC hand-off, it warns); once granted,
        # CDC says what happened and what to run.
        snapshot = run_cli(["--mode", "snapshot"], tmp_path, env)
        assert snapshot.returncode == 0, snapshot.stderr
        assert "snapshot taken without a CDC hand-off" in snapshot.stderr
        execute(f"ALTER ROLE {role} REPLICATION")
        cdc = run_cli(["--mode", "cdc"], tmp_path, env)
        assert cdc.returncode == 1
        assert "the last one ran without a replication slot" in cdc.stderr
        assert "Run `replicator --mode snapshot`, then `replicator --mode cdc`" in cdc.stderr
        assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
        assert run_cli(["--mode", "cdc"], tmp_path, env).returncode == 0
    finally:
        execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()"
        )


@pytest.fixture(scope="module")
def server_without_logical_decoding() -> Any:
    from replicator.demo.embedded import EmbeddedPostgres

    with EmbeddedPostgres(settings={"wal_level": "replica"}) as pg:
        yield pg.dsn


def test_a_server_without_logical_decoding_is_a_setting_to_fix_not_a_retry(
    server_without_logical_decoding: str, tmp_path: Path
) -> None:
    """Exit 75 would make a scheduler retry forever; wal_level needs an operator: exit 2."""
    import psycopg2

    conn = psycopg2.connect(server_without_logical_decoding)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
    conn.close()
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": server_without_logical_decoding,
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
    }
    check = run_cli(["check"], tmp_path, env)
    assert check.returncode == 2
    assert (
        "fail wal_level: is 'replica', not 'logical' -> ALTER SYSTEM SET wal_level" in check.stdout
    )
    for mode in ("snapshot", "cdc"):
        result = run_cli(["--mode", mode], tmp_path, env)
        assert result.returncode == 2, (mode, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "wal_level" in errors[0], (mode, result.stderr)


def test_check_passes_after_a_snapshot_with_insert_only_tables(
    execute: Any, pg_dsn: str, tmp_path: Path
) -> None:
    execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE lines (line text)")
    env = {
        "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
        "DESTINATION__FILESYSTEM__BUCKET_URL": str(tmp_path / "lake"),
        "SOURCES__PG_REPLICATION__KEYLESS_TABLES": "insert_only",
    }
    assert run_cli(["--mode", "snapshot"], tmp_path, env).returncode == 0
    check = run_cli(["check"], tmp_path, env)
    assert check.returncode == 0, check.stdout
    assert "ok   publication dlt_cdc_pub_inserts: covers every selected table" in check.stdout
    execute("ALTER PUBLICATION dlt_cdc_pub_inserts SET (publish = 'insert, update, truncate')")
    check = run_cli(["check"], tmp_path, env)
    assert check.returncode == 2
    assert (
        "fail publication dlt_cdc_pub_inserts: must publish inserts and truncates only -> "
        "ALTER PUBLICATION \"dlt_cdc_pub_inserts\" SET (publish = 'insert, truncate')"
    ) in check.stdout
