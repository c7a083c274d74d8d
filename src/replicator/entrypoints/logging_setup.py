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
    handler = RichHandler(
        console=console, show_path=level <= logging.DEBUG, rich_tracebacks=True, markup=False
    )
    logging.basicConfig(
        level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True
    )
    # dlt configures its own logger from RUNTIME__LOG_LEVEL; keep it quiet unless asked.
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING" if level > logging.DEBUG else "INFO")
    for noisy in ("sqlalchemy", "urllib3", "databricks", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return level
