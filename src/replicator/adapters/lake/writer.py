"""The lake writer: dlt pipelines into local Delta, DuckDB or Databricks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import dlt
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.normalizers.naming import NamingConvention
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.exceptions import PipelineStepFailed

from replicator.adapters.lake import dlt_tuning
from replicator.adapters.lake.destinations import (
    build_destination,
    is_local_path,
    local_bucket,
    table_format,
)
from replicator.adapters.lake.settings import NAMING_CONVENTION, LakeSettings
from replicator.domain.errors import (
    ConfigurationError,
    DestinationUnavailableError,
    LakeWriteError,
    ReplicatorError,
)
from replicator.domain.lsn import Lsn
from replicator.domain.model import LakeTableInfo, TableId, TableLoad, TableSchema
from replicator.domain.ports import LakeWriter

log = logging.getLogger(__name__)

SOURCE_NAME = "pg_replication"
STATE_SNAPSHOT_LSN = "snapshot_lsn"


def naming() -> NamingConvention:
    from dlt.common.normalizers.naming import sql_ci_v1

    assert NAMING_CONVENTION == "sql_ci_v1"
    return sql_ci_v1.NamingConvention()


def lake_table_names(tables: Iterable[TableId]) -> dict[TableId, str]:
    """The lake name of each source table; two tables may never share one."""
    convention = naming()
    names: dict[TableId, str] = {}
    seen: dict[str, TableId] = {}
    for table in tables:
        name = convention.normalize_table_identifier(table.lake_name)
        if name in seen:
            raise ConfigurationError(
                f"source tables {seen[name]} and {table} would both land as lake table "
                f"{name!r}: exclude one of them with [sources.pg_replication] exclude"
            )
        seen[name] = table
        names[table] = name
    return names


def _check_column_names(table: TableSchema) -> None:
    convention = naming()
    seen: dict[str, str] = {}
    for column in table.column_names:
        name = convention.normalize_identifier(column)
        if name in seen:
            raise ConfigurationError(
                f"{table.table_id}: columns {seen[name]!r} and {column!r} would both land as "
                f"lake column {name!r}: rename one of them in the source"
            )
        seen[name] = column


def _column_hints(schema: Any) -> dict[str, Any]:
    """dlt column hints that the Arrow schema implies but dlt does not infer by itself."""
    import pyarrow as pa

    hints: dict[str, Any] = {}
    for field in schema:
        hint: dict[str, Any] = {}
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            hint = {"data_type": "timestamp", "timezone": False}  # Delta timestamp_ntz
        if not field.nullable:
            hint["nullable"] = False
        if hint:
            hints[field.name] = hint
    return hints


def _hinted(batches: Iterable[Any]) -> Iterator[Any]:
    """Pass batches through, marking the first with the hints its Arrow schema implies."""
    iterator = iter(batches)
    for first in iterator:
        hints = _column_hints(first.schema)
        yield dlt.mark.with_hints(first, dlt.mark.make_hints(columns=hints)) if hints else first
        break
    yield from iterator


def _missing_keys(traces: Mapping[str, Sequence[Any]]) -> list[tuple[str, str]]:
    """(dotted key, env var) for each missing leaf field, following nested specs."""
    found: list[tuple[str, str]] = []
    for field, field_traces in traces.items():
        nested = [t for t in field_traces if hasattr(t, "traces")]
        if nested:
            found.extend(_missing_keys(nested[0].traces))
            continue
        leaves = [t for t in field_traces if getattr(t, "sections", None) is not None]
        if not leaves:
            continue
        deepest = max(len(t.sections) for t in leaves)
        sections = next(t.sections for t in leaves if len(t.sections) == deepest)
        env = "__".join([*sections, field]).upper()
        found.append((".".join([*sections, field]), env))
    return found


def _missing_config(error: ConfigFieldMissingException) -> ConfigurationError:
    """Name the missing keys and the env vars that would set them."""
    keys = _missing_keys(error.traces)
    if not keys:
        return ConfigurationError(f"missing configuration for {error.spec_name}: {error.fields}")
    section = keys[0][0].rsplit(".", 1)[0]
    names = ", ".join(k.rsplit(".", 1)[1] for k, _ in keys)
    env = ", ".join(e for _, e in keys)
    return ConfigurationError(
        f"missing configuration: {names} in [{section}] of .dlt/secrets.toml, or env {env}"
    )


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        if isinstance(error, ReplicatorError):
            return error
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


class DltLakeWriter(LakeWriter):
    def __init__(self, settings: LakeSettings) -> None:
        self._settings = settings
        dlt_tuning.apply()

    # -- pipeline --------------------------------------------------------------------------

    def pipeline(self) -> dlt.Pipeline:
        kwargs: dict[str, Any] = {}
        if self._settings.pipelines_dir:
            kwargs["pipelines_dir"] = self._settings.pipelines_dir
        pipeline: dlt.Pipeline = dlt.pipeline(
            pipeline_name=self._settings.pipeline_name,
            destination=build_destination(self._settings),
            dataset_name=self._settings.dataset,
            **kwargs,
        )
        return pipeline

    def _schema(self) -> dlt.Schema:
        return dlt.Schema(SOURCE_NAME, normalizers={"names": NAMING_CONVENTION})

    # -- LakeWriter --------------------------------------------------------------------------

    def replace(self, loads: Sequence[TableLoad], position: Lsn | None) -> list[LakeTableInfo]:
        names = lake_table_names(load.schema.table_id for load in loads)
        for load in loads:
            _check_column_names(load.schema)
        fmt = table_format(self._settings)
        extra: dict[str, Any] = {"table_format": fmt} if fmt else {}
        resources = [
            dlt.resource(
                _hinted(load.batches),
                name=names[load.schema.table_id],
                write_disposition="replace",
                primary_key=list(load.schema.primary_key),
                **extra,
            )
            for load in loads
        ]

        @dlt.source(schema=self._schema(), max_table_nesting=0)
        def bronze() -> Any:
            # Written into the same load package as the rows: the checkpoint can never
            # describe data the lake does not hold.
            if position is not None:
                dlt.current.source_state()[STATE_SNAPSHOT_LSN] = str(position)
            return resources

        pipeline = self.pipeline()  # activates dlt state for the source function
        self._run(pipeline, bronze())
        return self.describe(load.schema.table_id for load in loads)

    def describe(self, tables: Iterable[TableId]) -> list[LakeTableInfo]:
        names = lake_table_names(tables)
        if self._settings.destination == "delta":
            return [self._describe_delta(t, n) for t, n in names.items()]
        return self._describe_sql(names)

    # -- helpers -----------------------------------------------------------------------------

    def _run(self, pipeline: dlt.Pipeline, source: Any) -> LoadInfo:
        try:
            info = pipeline.run(source, loader_file_format="parquet")
        except PipelineStepFailed as e:
            cause = _root_cause(e)
            if isinstance(cause, ReplicatorError):
                raise cause from e
            if isinstance(cause, ConfigFieldMissingException):
                raise _missing_config(cause) from e
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
            if isinstance(cause, (ConnectionError, TimeoutError)):
                raise DestinationUnavailableError(
                    f"{self._settings.destination}: {e.step} failed: {detail}"
                ) from e
            raise LakeWriteError(
                f"{self._settings.destination}: {e.step} failed: {type(cause).__name__}: {detail}"
            ) from e
        log.debug("%s", info)
        return info

    def _describe_delta(self, table: TableId, name: str) -> LakeTableInfo:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        location = f"{self._settings.bucket_url.rstrip('/')}/{self._settings.dataset}/{name}"
        path = str(local_bucket(location)) if is_local_path(location) else location
        try:
            delta = DeltaTable(path)
        except TableNotFoundError:
            return LakeTableInfo(table, name, 0, None, location)
        rows = delta.to_pyarrow_dataset().count_rows()
        return LakeTableInfo(table, name, rows, delta.version(), location)

    def _describe_sql(self, names: dict[TableId, str]) -> list[LakeTableInfo]:
        pipeline = self.pipeline()
        infos = []
        with pipeline.sql_client() as client:
            for table, name in names.items():
                qualified = client.make_qualified_table_name(name)
                rows = client.execute_sql(f"SELECT count(*) FROM {qualified}")
                count = int(rows[0][0]) if rows else 0
                infos.append(LakeTableInfo(table, name, count, None, qualified))
        return infos
