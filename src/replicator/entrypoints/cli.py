"""``replicator`` and ``pipeline_main``: the command line and the Lakeflow wheel task's entry point.

Exit codes: 0 done; 1 a terminal error (the message says what to fix); 2 bad usage or
configuration; 75 a transient failure (retry later); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from rich.console import Console
from rich.table import Table

from replicator.adapters.lake.settings import DESTINATIONS
from replicator.domain.errors import (
    ConfigurationError,
    ReplicatorError,
    TransientError,
)

if TYPE_CHECKING:
    from replicator.adapters.postgres.settings import PostgresSettings
    from replicator.domain.model import CdcReport, SnapshotReport
    from replicator.domain.verify import TableVerdict
    from replicator.entrypoints.containers import Container
    from replicator.entrypoints.settings import SourceOptions

log = logging.getLogger("replicator")

MODES = ("snapshot", "cdc")
MODE_ENV = "PIPELINE_MODE"
DESTINATION_ENV = "REPLICATOR_DESTINATION"
# Outside a terminal: wide enough that no table cell is cut, and tables are never padded.
_LOG_WIDTH = 1000

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TRANSIENT, EXIT_INTERRUPTED = 0, 1, 2, 75, 130
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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port (1-65535), got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of rows, got {text!r}")
    return value


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


DATABRICKS_RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"
NO_SOURCE = (
    "no source configured: set [sources.pg_replication.credentials] in .dlt/secrets.toml or "
    "SOURCES__PG_REPLICATION__CREDENTIALS=postgresql://user:password@host:5432/db"
)


@contextmanager
def source_settings(
    options: SourceOptions, dsn: str | None, destination: str = "delta"
) -> Iterator[PostgresSettings]:
    """The configured source, or the embedded PostgreSQL (seeded with the sample shop).

    The embedded default is for ``make demo`` and a first try on a laptop only: with no source
    configured *and* a local destination. Towards Databricks, or inside a Databricks job, a
    missing source is an error: a job started from the wrong folder must never load the
    sample shop into Unity Catalog.
    """
    if dsn is not None:
        yield options.with_dsn(dsn)
        return
    if destination == "databricks":
        raise ConfigurationError(f"{NO_SOURCE} (the embedded sample database is never loaded "
                                 "into Databricks)")  # fmt: skip
    if os.environ.get(DATABRICKS_RUNTIME_ENV):
        raise ConfigurationError(f"{NO_SOURCE} (inside a Databricks job, {DATABRICKS_RUNTIME_ENV} "
                                 "is set, the embedded sample database is not used)")  # fmt: skip
    from replicator.demo.embedded import EmbeddedPostgres
    from replicator.demo.sample_data import ensure_sample_database
    from replicator.entrypoints.settings import embedded_dir

    folder = embedded_dir()
    log.warning(
        "no source configured ([sources.pg_replication.credentials] / "
        "SOURCES__PG_REPLICATION__CREDENTIALS): using the EMBEDDED sample PostgreSQL in %s, "
        "not your database",
        folder,
    )
    with EmbeddedPostgres(folder) as pg:
        settings = attrs.evolve(options.with_dsn(pg.dsn), embedded=True)
        if ensure_sample_database(settings):
            log.info("seeded the sample database (customers, products, orders, order_items)")
        yield settings


@contextmanager
def wired(destination: str = "delta", *, replicating: bool = True) -> Iterator[Container]:
    """The composition root for one command: configured (or embedded) source, chosen lake.
    ``replicating=False``: a command that only reads (its warnings about tables left out
    would repeat what snapshot and CDC say)."""
    from replicator.entrypoints.containers import Container
    from replicator.entrypoints.settings import (
        batch_limits,
        lake_settings,
        maintenance_settings,
        source_dsn,
        source_options,
    )

    options, dsn, lake = source_options(), source_dsn(), lake_settings(destination)
    every, retention = maintenance_settings()
    with source_settings(options, dsn, destination) as pg_settings:
        container = Container(postgres_settings=pg_settings, lake_settings=lake)
        container.batch_limits.override(batch_limits(destination))
        container.maintain_every_batches.override(every)
        container.maintain_retention_hours.override(retention)
        container.announce_left_out.override(replicating)
        yield container


def lake_slot(container: Container) -> str:
    """The replication slot the lake continues from (read from the lake's checkpoint)."""
    checkpoints = container.lsn_checkpoint()
    name: str = checkpoints.slot_of(checkpoints.store.load())
    return name


def render_snapshot(console: Console, report: SnapshotReport) -> None:
    table = Table(title="bronze: snapshot loaded", title_justify="left")
    table.add_column("table")
    table.add_column("source")
    table.add_column("rows", justify="right")
    table.add_column("Delta version", justify="right")
    table.add_column("path")
    for info in report.tables:
        table.add_row(
            info.lake_name,
            str(info.table_id),
            f"{info.rows:,}",
            "-" if info.version is None else str(info.version),
            info.location,
        )
    console.print(table)
    if report.position is not None:
        console.print(f"snapshot position: {report.position}")


def _console(stderr: bool = False) -> Console:
    """A console that never cuts a line in a job log.

    On a terminal rich fits tables to its width; into a file or a pipe it would assume 80
    columns and cut paths and keys with an ellipsis, so there lines are as long as they need
    to be (``COLUMNS`` still sets a width when given).
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_LOG_WIDTH)


def run(argv: Sequence[str] | None, prog: str) -> int:
    console = _console()
    errors = _console(stderr=True)
    from replicator.entrypoints.logging_setup import configure_logging

    level = configure_logging(errors)
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command is not None and args.mode:
            raise ConfigurationError(f"{args.command} takes no --mode: run it on its own")
        destination = resolve_destination(
            getattr(args, "sub_destination", None) or args.destination
        )
        if args.command == "simulate":
            return _run_simulate(
                console, args.inserts, args.updates, args.deletes, args.seed, args.database
            )
        if args.command == "drop-slot":
            return _run_drop_slot(console, destination, args.slot)
        if args.command == "check":
            return _run_check(console, destination)
        if args.command == "verify":
            return _run_verify(console, destination, args.table, args.sample, args.seed)
        if args.command == "status":
            return _run_status(console, destination, as_json=args.json, watch=args.watch)
        if args.command == "maintain":
            return _run_maintain(console, destination, args.retention_hours)
        if args.command in ("volumes", "cleanup"):
            if args.command == "volumes":
                return _run_volumes(console, destination)
            return _run_cleanup(console, destination, yes=args.yes, drop_slot=args.drop_slot)
        mode = resolve_mode(args.mode)
        if mode == "snapshot":
            if args.follow or args.soft_delete or args.truncate != "replicate":
                raise ConfigurationError(
                    "--follow, --soft-delete and --truncate go with --mode cdc"
                )
            if args.metrics_port is not None:
                raise ConfigurationError("--metrics-port goes with --mode cdc")
            return _run_snapshot(console, destination, new_source=args.new_source)
        if args.new_source:
            raise ConfigurationError("--new-source goes with --mode snapshot")
        return _run_cdc(
            console,
            destination,
            follow=args.follow,
            soft_delete=args.soft_delete,
            resnapshot=args.on_lost_slot == "resnapshot",
            truncate=args.truncate,
            metrics_port=args.metrics_port,
        )
    except KeyboardInterrupt:
        return _failed(errors, "interrupted", EXIT_INTERRUPTED)
    except ReplicatorError as e:
        if level <= logging.DEBUG:
            log.exception("failed")
        if isinstance(e, ConfigurationError):
            code = EXIT_USAGE
        elif isinstance(e, TransientError):
            code = EXIT_TRANSIENT
        else:
            code = EXIT_ERROR
        return _failed(errors, f"error: {e}", code)
    except Exception as e:
        if level <= logging.DEBUG:
            log.exception("unexpected failure")
        from replicator.adapters.postgres.connection import redact

        detail = redact(str(e).strip().splitlines()[0]) if str(e).strip() else ""
        return _failed(
            errors,
            f"error: unexpected {type(e).__name__}: {detail} (LOG_LEVEL=DEBUG shows the traceback)",
            EXIT_ERROR,
        )


def _failed(errors: Console, line: str, code: int) -> int:
    """The run's last word on stderr: one line, or one JSON record with LOG_FORMAT=json."""
    from replicator.entrypoints.logging_setup import log_format

    if log_format() == "json":
        log.error(line.removeprefix("error: "), extra={"exit_code": code})
    else:
        errors.print(line, markup=False, highlight=False, soft_wrap=True)
    return code


def _run_snapshot(console: Console, destination: str, *, new_source: bool = False) -> int:
    with wired(destination) as container:
        _preflight(container, strict=False)
        schemas = ", ".join(container.postgres_settings().schemas)
        log.info("snapshot of schemas %s into %s", schemas, destination)
        report = container.snapshot_service(new_source=new_source).run()
    render_snapshot(console, report)
    return EXIT_OK


def _run_cdc(
    console: Console,
    destination: str,
    *,
    follow: bool,
    soft_delete: bool,
    resnapshot: bool,
    truncate: str,
    metrics_port: int | None = None,
) -> int:
    stop = threading.Event()
    with wired(destination) as container, _stop_on_signals(stop, follow):
        _preflight(container, strict=True, slot_lost_ok=resnapshot)
        extra: dict[str, Any] = {}
        if metrics_port is not None:
            extra["observer"] = _metrics(container, metrics_port)
        service = container.cdc_service(soft_delete=soft_delete, truncate=truncate, **extra)
        if resnapshot:
            _resnapshot_if_slot_lost(console, container)
        if follow:
            followed = _follow_with_retries(service, stop)
            if followed is None:
                console.print("stopped while waiting to reconnect; nothing was in flight")
                return EXIT_OK
            report = followed
        else:
            report = service.run(follow=False, stop=stop)
        infos = container.lake_writer().describe(report.tables)
    table = Table(title="bronze: changes applied", title_justify="left")
    for name, justify in (("table", "left"), ("rows", "right"), ("Delta version", "right"),
                          ("path", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for info in infos:
        version = "-" if info.version is None else str(info.version)
        table.add_row(info.lake_name, f"{info.rows:,}", version, info.location)
    if infos:
        console.print(table)
    console.print(
        f"{report.changes:,} changes in {report.transactions:,} transactions "
        f"({report.batches} batches); position {report.start} -> {report.position}"
    )
    return EXIT_OK


def _run_maintain(console: Console, destination: str, retention_hours: int | None) -> int:
    with wired(destination, replicating=False) as container:
        if retention_hours is not None:
            if retention_hours < 0:
                raise ConfigurationError("--retention-hours must be 0 or more")
            container.maintain_retention_hours.override(retention_hours)
        done = container.maintenance_service().run()
        hours = container.maintain_retention_hours()
    retention = "the table's retention" if hours is None else f"{hours} h"
    for table in done:
        if table.files_before is None:
            console.print(f"{table.lake_name}: maintained")
            continue
        console.print(
            f"{table.lake_name}: data files {table.files_before:,} -> {table.files_after:,}; "
            f"removed {table.removed:,} no version within {retention} uses"
        )
    return EXIT_OK


def _metrics(container: Any, port: int) -> Any:
    """The Prometheus endpoint, serving from now on; its slot gauge reads the lake's slot."""
    from replicator.adapters.metrics.prometheus import PrometheusObserver

    source = container.change_source()
    slot_name = lake_slot(container)
    observer = PrometheusObserver(slot=lambda: (source.server_position(), source.slot(slot_name)))
    try:
        observer.serve(port)
    except OSError as e:
        raise ConfigurationError(f"--metrics-port {port}: cannot listen there ({e})") from e
    log.info("serving Prometheus metrics on http://0.0.0.0:%d/metrics", port)
    return observer


RETRY_FIRST_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 60.0


def _follow_with_retries(service: Any, stop: threading.Event) -> CdcReport | None:
    """--follow outlives transient failures (the source restarting, the lake unreachable):
    reconnect with exponential backoff and resume from the lake's checkpoint, which makes a
    retry safe. Terminal errors still stop the run. None: stopped while waiting to reconnect."""
    delay = RETRY_FIRST_DELAY_S
    while True:
        started = time.monotonic()
        try:
            report: CdcReport = service.run(follow=True, stop=stop)
            if report.rescan and not stop.is_set():
                continue  # new tables: the next run snapshots them, then follows on
            return report
        except TransientError as e:
            if stop.is_set():
                raise
            if time.monotonic() - started > RETRY_MAX_DELAY_S:
                delay = RETRY_FIRST_DELAY_S  # it ran fine for a while: start backing off anew
            log.warning("%s; reconnecting in %.0f s", e, delay)
            if stop.wait(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_DELAY_S)


@contextmanager
def _stop_on_signals(
    stop: threading.Event, follow: bool, doing: str = "finishing the current batch"
) -> Iterator[None]:
    """In --follow, SIGTERM/SIGINT finish the current batch and exit 0; a second SIGINT aborts."""
    if not follow:
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("%s received: %s", signal.Signals(signum).name, doing)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_simulate(
    console: Console,
    inserts: int,
    updates: int,
    deletes: int,
    seed: int | None,
    database: str | None,
) -> int:
    """Random writes: into the embedded sample database, or into a configured source only when
    ``--database`` names it (simulate writes rows into whatever it is pointed at)."""
    from replicator.demo.sample_data import simulate
    from replicator.entrypoints.settings import source_dsn, source_options

    if min(inserts, updates, deletes) < 0:
        raise ConfigurationError("simulate takes three counts >= 0: INSERTS UPDATES DELETES")
    dsn = source_dsn()
    if dsn is not None:
        from sqlalchemy import make_url

        configured = make_url(dsn).database
        if database is None or database != configured:
            raise ConfigurationError(
                "simulate writes random rows into its database: it runs on the embedded "
                f"sample database, or on the configured source only when named with "
                f"--database {configured or 'NAME'}"
            )
    with source_settings(source_options(), dsn) as pg_settings:
        done = simulate(pg_settings, inserts, updates, deletes, seed)
    console.print(
        f"simulated {done['inserts']} inserts, {done['updates']} updates, "
        f"{done['deletes']} deletes (one transaction each)"
    )
    return EXIT_OK


def _resnapshot_if_slot_lost(console: Console, container: Any) -> None:
    """--on-lost-slot=resnapshot: when the slot cannot continue the lake, start over."""
    from replicator.domain.errors import SlotLostError

    try:
        source = container.change_source()
        container.lsn_checkpoint().resolve(source.slot, source.identity())
    except SlotLostError as e:
        log.warning("--on-lost-slot=resnapshot: taking a new snapshot (%s)", e)
        render_snapshot(console, container.snapshot_service().run())
        log.info("re-snapshot done; CDC continues from the new slot %s", lake_slot(container))


def _preflight(container: Any, *, strict: bool, slot_lost_ok: bool = False) -> None:
    """Before a mode runs: stop on what would make CDC fail (strict), or warn (snapshot)."""
    from replicator.domain.preflight import failures

    failed = failures(container.preflight_service(slot_name=lake_slot(container)).run())
    if slot_lost_ok:
        failed = [f for f in failed if not f.check.startswith("slot ")]
    if not failed:
        return
    if strict:
        raise ConfigurationError("preflight failed: " + "; ".join(f.line() for f in failed))
    for finding in failed:
        log.warning("CDC will not work until this is fixed: %s", finding.line())


def _run_check(console: Console, destination: str) -> int:
    with wired(destination, replicating=False) as container:
        findings = container.preflight_service(slot_name=lake_slot(container)).run()
    failed = any(f.severity.value == "fail" for f in findings)
    if not console.is_terminal:  # a job log: one finding per line, its fix whole, to copy
        for finding in findings:
            console.print(
                f"{finding.severity.value:<4} {finding.line()}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return EXIT_USAGE if failed else EXIT_OK
    table = Table(title="preflight", title_justify="left")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column)
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for finding in findings:
        severity = finding.severity.value
        table.add_row(
            finding.check,
            f"[{styles[severity]}]{severity}[/]",
            finding.message,
            finding.fix or "",
        )
    console.print(table)
    return EXIT_USAGE if failed else EXIT_OK


def _run_verify(
    console: Console,
    destination: str,
    tables: Sequence[str],
    sample: int | None,
    seed: int | None,
) -> int:
    import random

    from replicator.domain.lsn import Lsn
    from replicator.entrypoints.progress import verify_progress

    seed = random.randrange(1, 2**31) if seed is None else seed
    with wired(destination, replicating=False) as container, verify_progress(console) as progress:
        service = container.verify_service(progress=progress)
        report = service.run(tables, sample, seed)
    table = Table(title=f"verify at {report.position}", title_justify="left")
    for column, justify in (("table", "left"), ("source rows", "right"), ("lake rows", "right"),
                            ("soft deleted", "right"), ("ghosts", "right"),
                            ("tombstones", "right"), ("result", "left"),
                            ("differing keys", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for verdict in report.tables:
        census, whole = verdict.census, verdict.sample
        table.add_row(
            str(verdict.table_id),
            _verified_rows(verdict.source_rows, whole.source_rows if whole else None),
            _verified_rows(verdict.lake_rows, whole.lake_rows if whole else None),
            f"{census.soft_deleted:,}",
            f"{census.ghosts:,}",
            f"{census.tombstones:,}",
            "[green]equal[/]" if verdict.equal else "[bold red]DIFFERENT[/]",
            _differing(verdict),
        )
    console.print(table)
    state = "equal to" if report.equal else "DIFFERENT from"
    console.print(f"lake {state} the source at {Lsn(int(report.position))}")
    sampled = [v for v in report.tables if v.sample is not None]
    if sampled:
        console.print(
            f"{len(sampled)} table(s) checked on a random sample (seed {seed}; "
            f"`--seed {seed}` repeats it) and on their row counts; the others whole"
        )
    soft = sum(v.census.soft_deleted for v in report.tables)
    if soft:
        console.print(
            f"{soft:,} lake rows are soft deletes (_pg_deleted_ts set) and were left out of the "
            "comparison: expected with --soft-delete; without it, no row should be"
        )
    if any(v.census.ghosts or v.census.tombstones for v in report.tables):
        console.print(
            "the lake stores rows the source never had (ghosts: a delete of a row the lake did "
            "not hold, stored as a row marked deleted; tombstones: counted rows of count 0 or "
            "less): a defect, please report it; `--mode snapshot` rebuilds the tables"
        )
    return EXIT_OK if report.equal else EXIT_ERROR


def _verified_rows(compared: int, total: int | None) -> str:
    return f"{compared:,}" if total is None else f"{compared:,} of {total:,}"


def _key_text(key: Any) -> str:
    """A differing key as the source prints it: ``7``, ``(7, 2024-01-01)``; quoted only where
    the bare text would be ambiguous in a list (empty, NULL, commas, parentheses, spaces at an
    end)."""
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    if isinstance(key, tuple):
        return "(" + ", ".join(_key_text(part) for part in key) + ")"
    if isinstance(key, str):
        plain = key.strip() == key and key not in ("", "NULL")
        return key if plain and not set(key) & set(",()'\"") else repr(key)
    return "NULL" if key is None else repr(key)


def _differing(verdict: TableVerdict) -> str:
    keys = ", ".join(_key_text(k)[:80] for k in verdict.differing_keys)
    if verdict.more_differences:
        keys += f" (+{verdict.more_differences:,} more)"
    if verdict.unitemized_rows:
        keys += f" (and among {verdict.unitemized_rows:,} rows not itemized)"
    if verdict.sample is not None and verdict.sample.source_rows != verdict.sample.lake_rows:
        keys += (
            f" (row counts differ: {verdict.sample.source_rows:,} vs {verdict.sample.lake_rows:,})"
        )
    return keys


def _run_status(
    console: Console, destination: str, *, as_json: bool, watch: float | None = None
) -> int:
    if watch is not None and watch <= 0:
        raise ConfigurationError("--watch takes a positive number of seconds")
    stop = threading.Event()
    with wired(destination) as container, _stop_on_signals(stop, watch is not None, "stopping"):
        while True:
            report = container.status_service().run()
            if watch is not None and console.is_terminal and not as_json:
                console.clear()
            _print_status(console, report, as_json=as_json, compact=watch is not None)
            if watch is None:
                return EXIT_OK
            try:
                if stop.wait(watch):
                    return EXIT_OK
            except KeyboardInterrupt:
                return EXIT_OK


def _print_status(console: Console, report: Any, *, as_json: bool, compact: bool) -> None:
    import json

    if as_json:
        if compact:  # one object per line, for a tool reading the stream
            console.print(
                json.dumps(report.as_dict()), markup=False, highlight=False, soft_wrap=True
            )
        else:
            console.print_json(json.dumps(report.as_dict()))
        return
    data = report.as_dict()
    overview = Table(title="replication status", title_justify="left", show_header=False)
    overview.add_column("what")
    overview.add_column("value")
    overview.add_row("server WAL position", data["server_position"])
    slot, lake = data["slot"], data["lake"]
    if slot is None:
        overview.add_row("slot", "missing: run `replicator --mode snapshot`")
    else:
        overview.add_row("slot", f"{slot['name']} ({'active' if slot['active'] else 'inactive'})")
        overview.add_row("confirmed_flush_lsn", str(slot["confirmed_flush_lsn"]))
        overview.add_row("restart_lsn", str(slot["restart_lsn"]))
        overview.add_row("retained WAL", _bytes(slot["retained_wal_bytes"]))
        overview.add_row("wal_status", str(slot["wal_status"]))
    if lake is None:
        overview.add_row("lake checkpoint", "none: run `replicator --mode snapshot`")
    else:
        overview.add_row("lake checkpoint", lake["checkpoint_lsn"])
        source = lake["source"]
        overview.add_row(
            "lake mirrors",
            "- (recorded from the next snapshot or CDC run on)"
            if source is None
            else f"database {source['database']} of server {source['system_identifier']}"
            + (" (the embedded sample database)" if source["embedded"] else ""),
        )
        overview.add_row("lake lag", _bytes(lake["lag_bytes"]))
        seconds = lake["lag_seconds"]
        overview.add_row(
            "lake lag (time)",
            "-" if seconds is None else f"{seconds:,.1f} s (last commit {lake['last_commit_ts']})",
        )
        overview.add_row("last run", str(lake["last_run_at"]))
    console.print(overview)
    tables = Table(title="lake tables", title_justify="left")
    for column, justify in (("table", "left"), ("rows", "right"), ("last change LSN", "right")):
        tables.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in data["tables"]:
        tables.add_row(row["lake_table"], f"{row['rows']:,}", str(row["last_change_lsn"]))
    console.print(tables)


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"


def _run_volumes(console: Console, destination: str) -> int:
    from replicator.adapters.lake.admin import LakeAdmin
    from replicator.entrypoints.settings import lake_settings

    volumes = LakeAdmin(lake_settings(destination)).volumes()
    table = Table(title="Unity Catalog volumes", title_justify="left")
    table.add_column("schema")
    table.add_column("volume")
    for volume in volumes:
        table.add_row(volume.dataset, volume.name)
    console.print(table)
    if not volumes:
        console.print("no volumes yet: dlt creates them on the first load")
    return EXIT_OK


def _run_cleanup(console: Console, destination: str, *, yes: bool, drop_slot: bool) -> int:
    from replicator.adapters.lake.admin import LakeAdmin
    from replicator.entrypoints.settings import lake_settings

    admin = LakeAdmin(lake_settings(destination))
    if not yes:
        what = " and ".join(admin.datasets)
        raise ConfigurationError(
            f"cleanup is destructive: it deletes {what} on {destination} (every table and "
            "volume in them) and the local pipeline state; run it again with --yes"
        )
    slot = None
    if drop_slot:  # named by the lake's checkpoint, which cleanup removes
        with wired(destination) as container:
            slot = lake_slot(container)
    for item in admin.cleanup():
        console.print(f"removed {item}")
    if slot is not None:
        _run_drop_slot(console, destination, slot, publication=True)
    return EXIT_OK


def _run_drop_slot(
    console: Console, destination: str, slot: str | None, *, publication: bool = False
) -> int:
    """The lake's slot (as its checkpoint names it) and the publications; or one named slot
    (and the publications only with ``publication``). Does what the role may: what is left is
    said with the statement that removes it, and the run succeeds when the slot is gone."""
    from replicator.adapters.postgres.slots import drop_publication, drop_slot

    with wired(destination) as container:
        pg_settings = container.postgres_settings()
        if slot is not None and not publication:
            if slot == lake_slot(container):
                raise ConfigurationError(
                    f"replication slot {slot!r} is the one the lake continues from: dropping it "
                    "ends CDC; `replicator drop-slot` without --slot retires the pipeline"
                )
            dropped = drop_slot(pg_settings, slot)
            console.print(f"replication slot {slot}: {'dropped' if dropped else 'not found'}")
            return EXIT_OK
        name = slot or lake_slot(container)
        left: list[str] = []
        try:
            outcome = "dropped" if drop_slot(pg_settings, name) else "not found"
        except ConfigurationError as e:
            outcome = "left"
            left.append(str(e))
        outcomes = [f"replication slot {name}: {outcome}"]
        for pub in (pg_settings.pub_name, pg_settings.inserts_pub_name):
            try:
                dropped = drop_publication(pg_settings, pub)
            except ConfigurationError as e:
                outcomes.append(f"publication {pub}: left")
                left.append(str(e))
                continue
            if dropped or pub == pg_settings.pub_name:
                outcomes.append(f"publication {pub}: {'dropped' if dropped else 'not found'}")
    console.print("; ".join(outcomes), soft_wrap=True)
    for reason in left:
        console.print(f"left: {reason}", markup=False, highlight=False, soft_wrap=True)
    if outcome == "left":
        return EXIT_USAGE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, "replicator")


def pipeline_main(argv: Sequence[str] | None = None) -> None:
    """The Lakeflow ``python_wheel_task`` entry point: the same CLI under another name.

    A wheel task calls this function and ignores what it returns: a failure must end the
    process with its exit code (``SystemExit``), or the run would be reported as a success.
    """
    code = run(argv, "pipeline_main")
    if code != EXIT_OK:
        raise SystemExit(code)


if __name__ == "__main__":
    sys.exit(main())
