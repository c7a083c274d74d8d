import pytest

from replicator.domain.errors import ConfigurationError
from replicator.entrypoints.parser import resolve_destination, resolve_mode


class TestModeResolution:
    def test_flag_gives_the_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PIPELINE_MODE", raising=False)
        assert resolve_mode("snapshot") == "snapshot"

    def test_env_var_gives_the_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PIPELINE_MODE", "CDC")
        assert resolve_mode(None) == "cdc"

    def test_flag_and_env_var_may_agree(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PIPELINE_MODE", "snapshot")
        assert resolve_mode("snapshot") == "snapshot"

    def test_conflicting_modes_are_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PIPELINE_MODE", "cdc")
        with pytest.raises(ConfigurationError, match="exactly one mode"):
            resolve_mode("snapshot")

    def test_no_mode_names_both_ways_to_give_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PIPELINE_MODE", raising=False)
        with pytest.raises(ConfigurationError, match=r"--mode snapshot\|cdc or set PIPELINE_MODE"):
            resolve_mode(None)

    def test_unknown_mode_in_env_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PIPELINE_MODE", "full")
        with pytest.raises(ConfigurationError, match="not a mode"):
            resolve_mode(None)


class TestDestinationResolution:
    def test_defaults_to_local_delta(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("REPLICATOR_DESTINATION", raising=False)
        assert resolve_destination(None) == "delta"

    def test_env_var_and_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REPLICATOR_DESTINATION", "duckdb")
        assert resolve_destination(None) == "duckdb"
        assert resolve_destination("databricks") == "databricks"

    def test_unknown_destination_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REPLICATOR_DESTINATION", "snowflake")
        with pytest.raises(ConfigurationError, match="delta, duckdb, databricks"):
            resolve_destination(None)


class TestPipelineMain:
    """A Lakeflow wheel task calls the entry point function and ignores what it returns."""

    def test_a_failure_ends_the_process_with_its_code(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from replicator.entrypoints.cli import pipeline_main

        monkeypatch.delenv("PIPELINE_MODE", raising=False)
        with pytest.raises(SystemExit) as ended:
            pipeline_main([])  # no mode: a usage error
        assert ended.value.code == 2

    def test_success_returns_normally(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from replicator.entrypoints import cli

        monkeypatch.setattr(cli, "run", lambda argv, prog: cli.EXIT_OK)
        assert cli.pipeline_main(["--mode", "cdc"]) is None


class TestProcessEnd:
    """The commands end the process once their output is flushed, skipping native teardown."""

    # An exit hook that aborts stands in for Arrow's thread pools aborting the teardown.
    PROGRAM = (
        "import atexit, os, sys; atexit.register(os.abort); sys.argv = [{name!r}, *{args!r}];"
        "from replicator.entrypoints.cli import {entry}; {entry}()"
    )

    @pytest.mark.parametrize(
        ("entry", "args", "code", "last_line"),
        [
            ("console_main", ["--help"], 0, "  maintain "),
            ("console_main", ["--mode", "sideways"], 2, "invalid choice: 'sideways'"),
            ("pipeline_main", ["status", "--destination", "x"], 2, "invalid choice: 'x'"),
        ],
    )
    def test_the_code_and_all_output_arrive_and_no_teardown_runs(
        self, entry: str, args: list[str], code: int, last_line: str
    ) -> None:
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if k != "DATABRICKS_RUNTIME_VERSION"}
        program = self.PROGRAM.format(name=entry, args=args, entry=entry)
        ended = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
        )
        assert ended.returncode == code, ended.stderr
        assert last_line in ended.stdout + ended.stderr


class TestOutput:
    @pytest.mark.parametrize(
        ("key", "shown"),
        [
            (("7",), "7"),
            (("1", "2024-01-01"), "(1, 2024-01-01)"),
            (("a,b",), "'a,b'"),
            (("NULL",), "'NULL'"),
            ((None,), "NULL"),
            (("",), "''"),
            ((" x",), "' x'"),
        ],
    )
    def test_a_differing_key_is_shown_bare_unless_ambiguous(
        self, key: tuple[object, ...], shown: str
    ) -> None:
        from replicator.entrypoints.render import key_text as _key_text

        assert _key_text(key) == shown

    def test_outside_a_terminal_nothing_is_cut_at_80_columns(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from rich.table import Table

        from replicator.entrypoints.render import make_console

        monkeypatch.delenv("COLUMNS", raising=False)
        table = Table("path")
        long = "./lakehouse/" + "bronze/" * 20 + "order_items"
        table.add_row(long)
        make_console().print(table)
        assert long in capsys.readouterr().out


class TestJsonLogs:
    """LOG_FORMAT=json: every record on stderr one JSON object, the run's error line too."""

    def _run(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
    ) -> tuple[int, list[dict[str, object]]]:
        import json

        from replicator.entrypoints.cli import run

        monkeypatch.setenv("LOG_FORMAT", "json")
        monkeypatch.delenv("PIPELINE_MODE", raising=False)
        monkeypatch.delenv("RUNTIME__LOG_FORMAT", raising=False)  # set by the run, undone after
        code = run(list(argv), "replicator")
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        return code, [json.loads(line) for line in lines]

    def test_a_failed_run_ends_with_one_record_carrying_its_exit_code(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, records = self._run(monkeypatch, capsys, "--mode", "snapshot", "--follow")
        assert code == 2
        assert records[-1]["level"] == "ERROR"
        assert records[-1]["exit_code"] == 2
        assert records[-1]["message"] == "--follow, --soft-delete and --truncate go with --mode cdc"
        assert str(records[-1]["time"]).endswith("Z")

    def test_records_carry_time_level_logger_message_and_traceback(self) -> None:
        import json
        import logging
        import sys

        from replicator.entrypoints.logging_setup import JsonLines

        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "replicator.domain.cdc", logging.WARNING, "f", 1, "applied %d", (3,), sys.exc_info()
            )
        entry = json.loads(JsonLines().format(record))
        assert entry["level"] == "WARNING"
        assert entry["logger"] == "replicator.domain.cdc"
        assert entry["message"] == "applied 3"
        assert "ValueError: boom" in str(entry["exception"])
        assert "\n" not in JsonLines().format(record)
