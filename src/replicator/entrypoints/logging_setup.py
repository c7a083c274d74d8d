"""stdlib logging, level from ``LOG_LEVEL`` (default INFO), format from ``LOG_FORMAT``.

On a terminal records go through rich; into a job log they are plain lines (time, level,
message); ``LOG_FORMAT=json`` makes them one JSON object per line, for log collectors.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import warnings

from rich.console import Console
from rich.logging import RichHandler

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")


def log_format() -> str:
    """``LOG_FORMAT``: ``text`` (default) or ``json``; anything else is text, with a warning."""
    return (os.environ.get("LOG_FORMAT") or "text").strip().lower()


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the
    traceback or any ``extra`` fields (``exit_code``) when there are."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in record.__dict__.items() if k not in self._STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_level() -> int:
    name = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
    if name not in LEVELS:
        name = "INFO"
    return int(getattr(logging, name))


def configure_logging(console: Console) -> int:
    level = log_level()
    handler: logging.Handler
    chosen = log_format()
    if chosen == "json":
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(JsonLines())
        logging.basicConfig(level=level, handlers=[handler], force=True)
        os.environ.setdefault("RUNTIME__LOG_FORMAT", "JSON")  # dlt's own records too
    elif console.is_terminal:
        handler = RichHandler(
            console=console, show_path=level <= logging.DEBUG, rich_tracebacks=True, markup=False
        )
        logging.basicConfig(
            level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True
        )
    else:  # a job log: one plain line per record, never padded, wrapped or cut
        handler = logging.StreamHandler(console.file)
        logging.basicConfig(
            level=level,
            format="%(asctime)s %(levelname)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
            handlers=[handler],
            force=True,
        )
    # dlt configures its own logger from RUNTIME__LOG_LEVEL; keep it quiet unless asked.
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING" if level > logging.DEBUG else "INFO")
    for noisy in ("sqlalchemy", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if level > logging.DEBUG:
        # SQLAlchemy's reflection (inside dlt's sql_database) warns once per column of a type it
        # does not know (enums, composites, domains): the replicator reads them itself, so there
        # is nothing to act on.
        warnings.filterwarnings("ignore", message=r"Did not recognize type ")
    # Databricks' SQL connector (and urllib3 under it) logs every retry as a multi-line warning
    # and its give-up as an error; the outcome is the replicator's own one error line.
    for retrying in ("urllib3", "databricks"):
        logging.getLogger(retrying).setLevel(level if level <= logging.DEBUG else logging.CRITICAL)
    if chosen not in FORMATS:
        logging.getLogger("replicator").warning(
            "LOG_FORMAT=%r is not a log format: use text or json (logging as text)", chosen
        )
    return level
