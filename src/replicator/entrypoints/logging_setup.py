"""stdlib logging through rich, level from ``LOG_LEVEL`` (default INFO)."""

from __future__ import annotations

import logging
import os

from rich.console import Console
from rich.logging import RichHandler

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level() -> int:
    name = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
    if name not in LEVELS:
        name = "INFO"
    return int(getattr(logging, name))


def configure_logging(console: Console) -> int:
    level = log_level()
    handler: logging.Handler
    if console.is_terminal:
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
    # Databricks' SQL connector (and urllib3 under it) logs every retry as a multi-line warning
    # and its give-up as an error; the outcome is the replicator's own one error line.
    for retrying in ("urllib3", "databricks"):
        logging.getLogger(retrying).setLevel(level if level <= logging.DEBUG else logging.CRITICAL)
    return level
