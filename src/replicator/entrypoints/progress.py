"""How far ``verify`` got: a rich progress bar on a terminal, a line every half minute in a log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from replicator.domain.model import TableId
from replicator.domain.ports import VerifyProgress

LOG_EVERY_S = 30.0


class _RowRate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


class _Bar(VerifyProgress):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, table: TableId, rows: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=self._progress.tasks[-1].completed)
        self._task = self._progress.add_task(str(table), total=max(rows, 1))

    def advance(self, rows: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, rows)


class _Log(VerifyProgress):
    def __init__(self, console: Console) -> None:
        self._console = console
        self._table = ""
        self._total = self._done = 0
        self._began = self._said = 0.0

    def start(self, table: TableId, rows: int) -> None:
        self._table, self._total, self._done = str(table), rows, 0
        self._began = self._said = time.monotonic()
        self._console.print(f"verify: {table} (about {rows:,} rows to read, source and lake)")

    def advance(self, rows: int) -> None:
        self._done += rows
        now = time.monotonic()
        if now - self._said >= LOG_EVERY_S:
            self._said = now
            rate = self._done / max(now - self._began, 1e-9)
            self._console.print(
                f"verify: {self._table} {self._done:,}/{self._total:,} rows read, "
                f"{rate:,.0f} rows/s"
            )


@contextmanager
def verify_progress(console: Console) -> Iterator[VerifyProgress]:
    if not console.is_terminal:
        yield _Log(console)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        _RowRate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress)
