"""Operator utilities on the lake: list the staging volumes, remove what the replicator wrote.

On Databricks and DuckDB these are SQL statements against the ``bronze`` and ``bronze_staging``
schemas (run through dlt's SQL client, or any ``SqlRunner``: tests record them); on a Delta lake
in a bucket they are folder operations.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import attrs

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.domain.errors import ConfigurationError, DestinationUnavailableError

log = logging.getLogger(__name__)

STAGING_SUFFIX = "_staging"


@attrs.frozen
class Volume:
    dataset: str
    name: str


class SqlRunner(Protocol):
    """Runs SQL on the destination; knows how the destination names a dataset (schema)."""

    @abstractmethod
    def qualified_dataset(self, dataset: str) -> str: ...

    @abstractmethod
    def execute(self, statement: str) -> Sequence[Sequence[Any]]: ...


class DltSqlRunner(SqlRunner):
    def __init__(self, writer: DltLakeWriter) -> None:
        self._writer = writer

    @contextmanager
    def _client(self) -> Iterator[Any]:
        try:
            with self._writer.pipeline().sql_client() as client:
                yield client
        except ConfigurationError:
            raise
        except Exception as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DestinationUnavailableError(f"cannot reach the destination: {detail}") from e

    def qualified_dataset(self, dataset: str) -> str:
        """``catalog.schema`` as the destination quotes it; the staging schema is dlt's own."""
        with self._client() as client:
            name: str = client.fully_qualified_dataset_name(
                staging=dataset.endswith(STAGING_SUFFIX)
            )
            return name

    def execute(self, statement: str) -> Sequence[Sequence[Any]]:
        log.debug("running: %s", statement)
        with self._client() as client:
            rows = client.execute_sql(statement)
        return list(rows or [])


class LakeAdmin:
    def __init__(self, settings: LakeSettings, sql: SqlRunner | None = None) -> None:
        self._settings = settings
        self._writer = DltLakeWriter(settings)
        self._sql = sql or DltSqlRunner(self._writer)

    @property
    def datasets(self) -> tuple[str, str]:
        return self._settings.dataset, self._settings.dataset + STAGING_SUFFIX

    def volumes(self) -> list[Volume]:
        """Unity Catalog volumes of the bronze and bronze_staging schemas (Databricks only)."""
        if self._settings.destination != "databricks":
            destination = self._settings.destination
            raise ConfigurationError(
                f"volumes exist only on Databricks (Unity Catalog); the {destination} destination "
                "has none"
            )
        found: list[Volume] = []
        for dataset in self.datasets:
            rows = self._sql.execute(f"SHOW VOLUMES IN {self._sql.qualified_dataset(dataset)}")
            found.extend(Volume(dataset, str(row[-1])) for row in rows)
        return found

    def cleanup(self) -> list[str]:
        """Remove the bronze and bronze_staging schemas (tables and volumes) or lake folders,
        and the local pipeline state. Returns what was removed."""
        removed: list[str] = []
        if self._settings.destination == "delta":
            removed.extend(self._remove_lake_folders())
        else:
            for dataset in self.datasets:
                qualified = self._sql.qualified_dataset(dataset)
                self._sql.execute(f"DROP SCHEMA IF EXISTS {qualified} CASCADE")
                removed.append(f"schema {qualified}")
        pipeline = self._writer.pipeline()
        working_dir = pipeline.working_dir
        pipeline.drop()
        removed.append(f"local pipeline state {working_dir}")
        return removed

    def _remove_lake_folders(self) -> list[str]:
        removed = []
        pipeline = self._writer.pipeline()
        with pipeline.destination_client() as client:
            fs, base = getattr(client, "fs_client", None), getattr(client, "dataset_path", "")
            if fs is None:
                raise ConfigurationError("the delta destination has no file system to clean up")
            parent = base.rstrip("/").rsplit("/", 1)[0]
            for dataset in self.datasets:
                path = f"{parent}/{dataset}"
                if fs.exists(path):
                    fs.rm(path, recursive=True)
                    removed.append(f"folder {path}")
        return removed
