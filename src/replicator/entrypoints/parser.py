"""The command line's options and subcommands, and the settings that fall back to env vars
(``PIPELINE_MODE``, ``REPLICATOR_DESTINATION``)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any

from replicator.adapters.lake.settings import DESTINATIONS
from replicator.domain.errors import ConfigurationError

MODES = ("snapshot", "cdc")
MODE_ENV = "PIPELINE_MODE"
DESTINATION_ENV = "REPLICATOR_DESTINATION"
_HELP_WIDTH = 92


CONFIGURATION_HELP = """\
configuration (env vars override the files):
  .dlt/config.toml, .dlt/secrets.toml   read from the current directory
  SOURCES__PG_REPLICATION__CREDENTIALS  the source, postgresql://user:password@host:5432/db
                                        ([sources.pg_replication.credentials])
  SOURCES__PG_REPLICATION__*            slot_name, pub_name, schemas, include, exclude, ...
                                        ([sources.pg_replication])
  DESTINATION__FILESYSTEM__BUCKET_URL   the local Delta lake (default ./lakehouse)
  DESTINATION__DATABRICKS__CREDENTIALS__*  the workspace ([destination.databricks.credentials])
  LOG_LEVEL, LOG_FORMAT=json, DLT_DATA_DIR

embedded default: with no source credentials and a local destination (delta, duckdb), an
embedded PostgreSQL with a sample shop is used (./.embedded-pg), never your database; with
databricks, or in a Databricks job, a missing source is an error.

exit codes: 0 done, 1 terminal error, 2 configuration or privileges, 75 transient (retry),
130 interrupted. The README has every setting."""

DESTINATION_HELP = (
    f"where the bronze tables are (or env {DESTINATION_ENV}): delta (default; local Delta "
    "tables under DESTINATION__FILESYSTEM__BUCKET_URL, ./lakehouse), duckdb (./replicator.duckdb) "
    "or databricks (Unity Catalog, [destination.databricks.credentials])"
)


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=textwrap.fill(
            "Replicate PostgreSQL into bronze Delta tables: a full snapshot (--mode snapshot), "
            "then CDC by logical replication (--mode cdc).",
            width=_HELP_WIDTH,
        ),
        epilog=CONFIGURATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help=f"what this run does (or env {MODE_ENV}); exactly one mode per run",
    )
    parser.add_argument(
        "--destination",
        choices=DESTINATIONS,
        default=None,
        help=DESTINATION_HELP,
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="cdc: run continuously until SIGTERM/SIGINT (default: apply what is committed "
        "now, then exit)",
    )
    parser.add_argument(
        "--on-lost-slot",
        choices=("fail", "resnapshot"),
        default="fail",
        help="cdc: when the slot is missing, invalidated or past the lake: stop with the remedy "
        "(fail, default) or take a new snapshot and continue (resnapshot)",
    )
    parser.add_argument(
        "--truncate",
        choices=("replicate", "ignore"),
        default="replicate",
        help="cdc: a TRUNCATE at the source empties the lake table (replicate, default) or is "
        "skipped (ignore)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="cdc: serve Prometheus metrics on http://0.0.0.0:PORT/metrics while it runs "
        "(changes and transactions per table, batch durations, lag in bytes and seconds, the "
        "slot's retained WAL, errors by kind)",
    )
    parser.add_argument(
        "--new-source",
        action="store_true",
        help="snapshot: the lake mirrors another source (another server or database): make it "
        "mirror the configured one (default: refuse, so two sources never mix in one dataset)",
    )
    parser.add_argument(
        "--soft-delete",
        action="store_true",
        help="cdc: keep deleted rows, with _pg_deleted_ts set (default: remove them)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose --help says what it does and where configuration comes from."""
        return subparsers.add_parser(
            name,
            help=summary,
            description=textwrap.fill(summary[0].upper() + summary[1:] + ".", _HELP_WIDTH),
            epilog=CONFIGURATION_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )

    simulate = command(
        "simulate", "make random changes to the sample shop tables, to try CDC by hand"
    )
    simulate.add_argument("inserts", type=int, help="orders to insert")
    simulate.add_argument("updates", type=int, help="orders to update")
    simulate.add_argument("deletes", type=int, help="orders to delete")
    simulate.add_argument("--seed", type=int, default=None, help="for a repeatable run")
    simulate.add_argument(
        "--database",
        default=None,
        help="run it on the configured source, which must be this database (default: only the "
        "embedded sample database)",
    )
    lake_option = argparse.ArgumentParser(add_help=False)
    lake_option.add_argument(
        "--destination", dest="sub_destination", choices=DESTINATIONS, help=DESTINATION_HELP
    )
    command(
        "volumes",
        "list the Unity Catalog volumes of bronze and bronze_staging (Databricks)",
        parents=[lake_option],
    )
    cleanup = command(
        "cleanup",
        "DESTRUCTIVE: drop bronze and bronze_staging (tables, volumes) or the lake's folders",
        parents=[lake_option],
    )
    cleanup.add_argument("--yes", action="store_true", help="confirm: yes, delete it all")
    cleanup.add_argument(
        "--drop-slot", action="store_true", help="also drop the replication slot and publication"
    )
    drop = command(
        "drop-slot",
        "drop the replication slot the lake uses (or --slot NAME) and the publications; what "
        "the role may not drop is printed with its statement",
        parents=[lake_option],
    )
    drop.add_argument("--slot", default=None, help="drop this slot instead (and no publication)")
    maintain = command(
        "maintain",
        "compact the lake tables' small files and remove the files no version within the "
        "retention still uses (Delta; OPTIMIZE and VACUUM on Databricks); rows and positions "
        "stay as they are, and it waits for no CDC run: it takes the pipeline's lock",
        parents=[lake_option],
    )
    maintain.add_argument(
        "--retention-hours",
        type=int,
        default=None,
        help="keep the files of versions younger than this (default: "
        "[sources.pg_replication] maintain_retention_hours, else each table's own retention, "
        "7 days unless set)",
    )
    command(
        "check",
        "preflight: check the source can be replicated (settings, privileges, tables, "
        "publication, slot); every failure names its fix",
        parents=[lake_option],
    )
    status = command("status", "slot, checkpoint, lag and lake tables", parents=[lake_option])
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until Ctrl-C or SIGTERM; with --json one JSON "
        "object per line",
    )
    verify = command(
        "verify",
        "prove the lake equals the source at one consistent point (exit 1 if not)",
        parents=[lake_option],
    )
    verify.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME",
        help="verify only this table (schema.table, or table; shell wildcards; repeatable)",
    )
    verify.add_argument(
        "--sample",
        type=_positive_int,
        default=None,
        metavar="N",
        help="check keyed tables larger than N on about N random rows and their row count",
    )
    verify.add_argument(
        "--seed", type=int, default=None, help="the --sample seed to repeat (printed by a run)"
    )
    return parser


def _whole(text: str, low: int, high: int, expected: str) -> int:
    """``text`` as a whole number from ``low`` to ``high``, else a usage error naming it."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _port(text: str) -> int:
    return _whole(text, 1, 65535, "a TCP port (1-65535)")


def _positive_int(text: str) -> int:
    return _whole(text, 1, sys.maxsize, "a positive number of rows")


def resolve_mode(flag: str | None) -> str:
    env = (os.environ.get(MODE_ENV) or "").strip().lower() or None
    if flag and env and flag != env:
        raise ConfigurationError(
            f"--mode {flag} conflicts with {MODE_ENV}={env}: a run has exactly one mode, "
            "set only one of them"
        )
    mode = flag or env
    if mode is None:
        raise ConfigurationError(f"no mode given: pass --mode snapshot|cdc or set {MODE_ENV}")
    if mode not in MODES:
        raise ConfigurationError(f"{MODE_ENV}={mode!r} is not a mode: use snapshot or cdc")
    return mode


def resolve_destination(flag: str | None) -> str:
    value = flag or (os.environ.get(DESTINATION_ENV) or "").strip().lower() or "delta"
    if value not in DESTINATIONS:
        raise ConfigurationError(
            f"{DESTINATION_ENV}={value!r} is not a destination: use {', '.join(DESTINATIONS)}"
        )
    return value
