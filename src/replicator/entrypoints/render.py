"""How results look: tables on a terminal, lines in a job log.

Each function prints one command's result on a console; none reads configuration or runs a
service.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from replicator.adapters.lake.admin import Volume
    from replicator.domain.model import CdcReport, LakeTableInfo, SnapshotReport, TableMaintained
    from replicator.domain.preflight import Finding
    from replicator.domain.status import StatusReport
    from replicator.domain.verify import TableVerdict, VerifyReport

# Outside a terminal: wide enough that no table cell is cut, and tables are never padded.
_LOG_WIDTH = 1000


def make_console(stderr: bool = False) -> Console:
    """A console that never cuts a line in a job log.

    On a terminal rich fits tables to its width; into a file or a pipe it would assume 80
    columns and cut paths and keys with an ellipsis, so there lines are as long as they need
    to be (``COLUMNS`` still sets a width when given).
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_LOG_WIDTH)


def snapshot_loaded(console: Console, report: SnapshotReport) -> None:
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


def changes_applied(console: Console, report: CdcReport, infos: Sequence[LakeTableInfo]) -> None:
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


def maintained(console: Console, done: Sequence[TableMaintained], hours: int | None) -> None:
    retention = "the table's retention" if hours is None else f"{hours} h"
    for table in done:
        if table.files_before is None:
            console.print(f"{table.lake_name}: maintained")
            continue
        console.print(
            f"{table.lake_name}: data files {table.files_before:,} -> {table.files_after:,}; "
            f"removed {table.removed:,} no version within {retention} uses"
        )


def findings(console: Console, findings: Sequence[Finding]) -> None:
    """Preflight's findings: a table on a terminal; in a job log one finding per line, its fix
    whole, to copy."""
    if not console.is_terminal:
        for finding in findings:
            console.print(
                f"{finding.severity.value:<4} {finding.line()}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return
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


def verified(console: Console, report: VerifyReport, seed: int) -> None:
    from replicator.domain.lsn import Lsn

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


def _verified_rows(compared: int, total: int | None) -> str:
    return f"{compared:,}" if total is None else f"{compared:,} of {total:,}"


def key_text(key: Any) -> str:
    """A differing key as the source prints it: ``7``, ``(7, 2024-01-01)``; quoted only where
    the bare text would be ambiguous in a list (empty, NULL, commas, parentheses, spaces at an
    end)."""
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    if isinstance(key, tuple):
        return "(" + ", ".join(key_text(part) for part in key) + ")"
    if isinstance(key, str):
        plain = key.strip() == key and key not in ("", "NULL")
        return key if plain and not set(key) & set(",()'\"") else repr(key)
    return "NULL" if key is None else repr(key)


def _differing(verdict: TableVerdict) -> str:
    keys = ", ".join(key_text(k)[:80] for k in verdict.differing_keys)
    if verdict.more_differences:
        keys += f" (+{verdict.more_differences:,} more)"
    if verdict.unitemized_rows:
        keys += f" (and among {verdict.unitemized_rows:,} rows not itemized)"
    if verdict.sample is not None and verdict.sample.source_rows != verdict.sample.lake_rows:
        keys += (
            f" (row counts differ: {verdict.sample.source_rows:,} vs {verdict.sample.lake_rows:,})"
        )
    return keys


def status(console: Console, report: StatusReport, *, as_json: bool, compact: bool) -> None:
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


def volumes(console: Console, volumes: Sequence[Volume]) -> None:
    table = Table(title="Unity Catalog volumes", title_justify="left")
    table.add_column("schema")
    table.add_column("volume")
    for volume in volumes:
        table.add_row(volume.dataset, volume.name)
    console.print(table)
    if not volumes:
        console.print("no volumes yet: dlt creates them on the first load")


def removed(console: Console, items: Sequence[str]) -> None:
    for item in items:
        console.print(f"removed {item}")


def dropped(console: Console, outcomes: Sequence[str], left: Sequence[str]) -> None:
    """drop-slot's outcomes on one line, then each thing left with the statement that
    removes it."""
    console.print("; ".join(outcomes), soft_wrap=True)
    for reason in left:
        console.print(f"left: {reason}", markup=False, highlight=False, soft_wrap=True)


def simulated(console: Console, done: dict[str, int]) -> None:
    console.print(
        f"simulated {done['inserts']} inserts, {done['updates']} updates, "
        f"{done['deletes']} deletes (one transaction each)"
    )
