"""dlt's configuration read from a test's own directory, not the checkout's ``.dlt/``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext


@contextmanager
def config_from(folder: Path | str) -> Iterator[None]:
    """While inside: dlt reads ``.dlt/config.toml`` and ``secrets.toml`` under ``folder``."""
    run_context = Container()[PluggableRunContext]
    previous = run_context.context.run_dir
    run_context.reload(str(folder))
    try:
        yield
    finally:
        run_context.reload(previous)
