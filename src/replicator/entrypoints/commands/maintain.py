"""``maintain``: compact the lake tables' small files and remove the ones no version within the
retention uses, under the pipeline's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from replicator.domain.errors import ConfigurationError
from replicator.entrypoints import render
from replicator.entrypoints.exit_codes import EXIT_OK
from replicator.entrypoints.wiring import wired

if TYPE_CHECKING:
    from rich.console import Console


def run_maintain(console: Console, destination: str, retention_hours: int | None) -> int:
    with wired(destination, replicating=False) as container:
        if retention_hours is not None:
            if retention_hours < 0:
                raise ConfigurationError("--retention-hours must be 0 or more")
            container.maintain_retention_hours.override(retention_hours)
        done = container.maintenance_service().run()
        hours = container.maintain_retention_hours()
    render.maintained(console, done, hours)
    return EXIT_OK
