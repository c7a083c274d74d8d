"""The container one command runs with: the configured source (or the embedded sample
database) and the chosen lake."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import attrs

from replicator.domain.errors import ConfigurationError

if TYPE_CHECKING:
    from replicator.adapters.postgres.settings import PostgresSettings
    from replicator.entrypoints.containers import Container
    from replicator.entrypoints.settings import SourceOptions

log = logging.getLogger("replicator")

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


def lake_wired(destination: str) -> Container:
    """The container of a command that touches only the lake (volumes, cleanup): no source is
    read and none is started."""
    from replicator.entrypoints.containers import Container
    from replicator.entrypoints.settings import lake_settings

    return Container(lake_settings=lake_settings(destination))


@contextmanager
def source_wired(dsn: str | None) -> Iterator[Container]:
    """The container of a command that touches only the source (simulate): the configured one,
    or the embedded sample database; no lake settings are read."""
    from replicator.entrypoints.containers import Container
    from replicator.entrypoints.settings import source_options

    with source_settings(source_options(), dsn) as pg_settings:
        yield Container(postgres_settings=pg_settings)


def lake_slot(container: Container) -> str:
    """The replication slot the lake continues from (read from the lake's checkpoint)."""
    checkpoints = container.lsn_checkpoint()
    name: str = checkpoints.slot_of(checkpoints.store.load())
    return name
