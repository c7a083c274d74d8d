"""``replicator`` and ``pipeline_main``: the command line and the Lakeflow wheel task's entry point.

Parses the options (``parser``), runs the command (``commands/``) and maps its errors to an exit
code (``exit_codes``): 0 done; 1 a terminal error (the message says what to fix); 2 bad usage or
configuration; 75 a transient failure (retry later); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from replicator.domain.errors import ConfigurationError, ReplicatorError, TransientError
from replicator.entrypoints.commands import admin, inspection, maintain, replicate
from replicator.entrypoints.exit_codes import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TRANSIENT,
    EXIT_USAGE,
)
from replicator.entrypoints.parser import build_parser, resolve_destination, resolve_mode
from replicator.entrypoints.render import make_console

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger("replicator")


def run(argv: Sequence[str] | None, prog: str) -> int:
    console = make_console()
    errors = make_console(stderr=True)
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
            return admin.run_simulate(
                console, args.inserts, args.updates, args.deletes, args.seed, args.database
            )
        if args.command == "drop-slot":
            return admin.run_drop_slot(console, destination, args.slot)
        if args.command == "check":
            return inspection.run_check(console, destination)
        if args.command == "verify":
            return inspection.run_verify(console, destination, args.table, args.sample, args.seed)
        if args.command == "status":
            return inspection.run_status(console, destination, as_json=args.json, watch=args.watch)
        if args.command == "maintain":
            return maintain.run_maintain(console, destination, args.retention_hours)
        if args.command in ("volumes", "cleanup"):
            if args.command == "volumes":
                return admin.run_volumes(console, destination)
            return admin.run_cleanup(console, destination, yes=args.yes, drop_slot=args.drop_slot)
        mode = resolve_mode(args.mode)
        if mode == "snapshot":
            if args.follow or args.soft_delete or args.truncate != "replicate":
                raise ConfigurationError(
                    "--follow, --soft-delete and --truncate go with --mode cdc"
                )
            if args.metrics_port is not None:
                raise ConfigurationError("--metrics-port goes with --mode cdc")
            return replicate.run_snapshot(console, destination, new_source=args.new_source)
        if args.new_source:
            raise ConfigurationError("--new-source goes with --mode snapshot")
        return replicate.run_cdc(
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


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv, "replicator")


def console_main() -> NoReturn:
    """The ``replicator`` command: ``main`` on ``sys.argv``, then the process ends at once."""
    _end_process(_code_of(lambda: main()))


def pipeline_main(argv: Sequence[str] | None = None) -> None:
    """The Lakeflow ``python_wheel_task`` entry point: the same CLI under another name.

    A wheel task calls this function and ignores what it returns: a failure must end the
    process with its exit code (``SystemExit``), or the run would be reported as a success.
    Run as a command of its own (``argv`` from the command line, not on a Databricks cluster,
    whose Python process is the runtime's), it ends the process as ``replicator`` does.
    """
    if argv is None and "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        _end_process(_code_of(lambda: run(None, "pipeline_main")))
    code = run(argv, "pipeline_main")
    if code != EXIT_OK:
        raise SystemExit(code)


def _code_of(command: Callable[[], int]) -> int:
    try:
        return command()
    except SystemExit as e:  # argparse's --help and usage errors
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)


def _end_process(code: int) -> NoReturn:
    """Flush what the run wrote, then end without the interpreter's teardown.

    By now the run's work is durable or has failed with its code. Tearing down the native
    thread pools of Arrow (and delta-rs's runtime) at exit can abort the process under load
    (``terminate called without an active exception``, SIGABRT, apache/arrow#34314), which a
    scheduler would read as a failed run after a successful one. ``os._exit`` skips that
    teardown; no atexit hook of ours or of the libraries we run holds unwritten work.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: no reader is left
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console_main()
