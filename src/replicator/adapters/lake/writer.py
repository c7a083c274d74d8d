"""The lake writer: dlt pipelines into local Delta, DuckDB or Databricks.

One load per snapshot or CDC batch, its checkpoint in the same package (``checkpoint_store``).
What the writer does not do itself: reading and reshaping stored tables (``table_access``: one
implementation per destination kind, chosen in the constructor), filling values from stored
rows (``stored_values``), mapping failures to the domain's errors (``error_mapping``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import dlt
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.exceptions import PipelineStepFailed

from replicator.adapters.lake import (
    delta_commits,
    delta_tables,
    dlt_tuning,
    error_mapping,
    evolution,
    load_plans,
    naming,
    sql_merge,
    stored_values,
)
from replicator.adapters.lake.checkpoint_store import (
    SOURCE_NAME,
    STATE_CHECKPOINT,
    checkpoint_state,
    read_checkpoint,
)
from replicator.adapters.lake.delta_tables import DeltaTables
from replicator.adapters.lake.destinations import (
    build_destination,
    table_format,
)
from replicator.adapters.lake.load_plans import TablePlan
from replicator.adapters.lake.settings import NAMING_CONVENTION, LakeSettings
from replicator.adapters.lake.sql_tables import SqlTables
from replicator.adapters.lake.table_access import TableAccess
from replicator.domain.errors import (
    ConfigurationError,
    ReplicatorError,
    SourceSchemaError,
)
from replicator.domain.lake_columns import LakeColumns
from replicator.domain.model import (
    Checkpoint,
    Frontier,
    LakeTableInfo,
    SchemaChange,
    TableChanges,
    TableId,
    TableLoad,
    TableSchema,
)
from replicator.domain.ports import LakeWriter

log = logging.getLogger(__name__)

# Checkpoint versions kept in _dlt_pipeline_state (dlt reads the newest; one is added per load).
STATE_HISTORY = 100


def _lake_columns(batches: Iterable[Any], table: TableSchema) -> Iterator[Any]:
    """Arrow batches with source column names renamed to their lake names (see naming.py).

    dlt would normalise the names itself, but by ``sql_ci_v1`` alone, which may map two source
    columns to one name. Other columns (the table's metadata columns) pass unchanged.
    """
    columns = naming.column_names(table.column_names)
    for batch in batches:
        yield batch.rename_columns([columns.get(n, n) for n in batch.schema.names])


def write_plan(
    destination: str, schema: TableSchema, frontier: Frontier | None, *, kind: str, soft: bool
) -> tuple[Any, dict[str, Any], TablePlan]:
    """How one table's rows are written: dlt's write disposition, the column hints that go with
    it, and the plan its commit follows (``load_plans``; it records ``frontier`` with the rows).

    ``kind``: ``replace`` (a snapshot, a TRUNCATE in the batch), ``append`` (a table without a
    key) or ``merge`` (upserts and deletes by key). Each is one atomic commit per table.
    Delta: dlt's own replace, append and ``upsert`` merge (one delta-rs MERGE, which never
    inserts a row marked deleted). DuckDB and Databricks: always dlt's ``merge`` disposition,
    so the rows are staged in ``bronze_staging`` and the merge job runs the replicator's SQL
    (``sql_merge``). Never dlt's ``delete-insert`` strategy on its own: on Databricks that is two
    statements without a transaction, and readers could see the table half-applied.
    """
    keys = tuple(naming.lake_key(schema)) if kind == "merge" else ()
    deleted = schema.lake_columns.deleted_ts
    plan = TablePlan(kind, frontier, keys, hard_delete=not soft, deleted=deleted)  # type: ignore[arg-type]
    if destination != "delta":
        strategy = "upsert" if naming.lake_key(schema) else "delete-insert"
        return {"disposition": "merge", "strategy": strategy}, {}, plan
    if kind != "merge":
        return kind, {}, plan
    hints = {} if soft else {deleted: {"hard_delete": True}}
    return {"disposition": "merge", "strategy": "upsert"}, hints, plan


def _check_metadata_names(table: TableSchema) -> None:
    """The table's metadata names pass dlt's convention unchanged and collide with none of its
    columns (domain/lake_columns.py chose them so): else dlt would rename or merge them."""
    meta = table.lake_columns
    columns = set(naming.column_names(table.column_names).values())
    for name in (*meta.written, *meta.counted):
        if naming.convention().normalize_identifier(name) != name or name in columns:
            raise SourceSchemaError(
                f"{table.table_id}: the metadata column name {name!r} would not survive in the "
                "lake (a defect of the naming rule in domain/lake_columns.py); nothing was written"
            )


def _change_kind(change: TableChanges) -> str:
    if change.truncated:
        return "replace"
    return "append" if change.schema.inserts_only else "merge"


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


def _hinted(batches: Iterable[Any], extra: dict[str, Any] | None = None) -> Iterator[Any]:
    """Pass batches through, marking the first with the hints its Arrow schema implies."""
    iterator = iter(batches)
    for first in iterator:
        hints = _column_hints(first.schema)
        for name, hint in (extra or {}).items():
            hints[name] = {**hints.get(name, {}), **hint}
        yield dlt.mark.with_hints(first, dlt.mark.make_hints(columns=hints)) if hints else first
        break
    yield from iterator


def _first(batches: Iterator[Any]) -> Any:
    """The first batch (None: there is none), read before dlt runs: the source's own errors
    come out as they would from dlt's run."""
    try:
        return next(batches, None)
    except Exception as e:
        cause = error_mapping.root_cause(e)
        if isinstance(cause, ReplicatorError):
            raise cause from e
        raise


class DltLakeWriter(LakeWriter):
    def __init__(self, settings: LakeSettings) -> None:
        self._settings = settings
        # Every table the lake replicates: a table's lake name depends on its neighbours
        # (naming.py). None until a load, or a read of the lake's checkpoint, tells.
        self._tables: frozenset[TableId] | None = None
        self._pipeline: dlt.Pipeline | None = None
        # How this destination's tables are read and reshaped: chosen once, here.
        self._access: TableAccess = (
            DeltaTables(settings, self.pipeline)
            if settings.destination == "delta"
            else SqlTables(settings.destination, self.pipeline)
        )
        dlt_tuning.ensure_applied()  # a no-op once the composition root has tuned the process
        delta_commits.install()
        sql_merge.install()

    @property
    def destination_name(self) -> str:
        return self._settings.destination

    @property
    def settings(self) -> LakeSettings:
        return self._settings

    @property
    def tables(self) -> TableAccess:
        """How this destination's tables are read (``rows_where``, ...)."""
        return self._access

    # -- pipeline --------------------------------------------------------------------------

    def pipeline(self) -> dlt.Pipeline:
        """This writer's dlt pipeline, made once and activated on every use.

        One object for the writer's life: dlt syncs a new pipeline object's state from the
        destination before its first run (a query over every load's state row), which a new
        object per batch would repeat for every batch, ever longer.
        """
        if self._pipeline is not None:
            self._pipeline.activate()
            return self._pipeline
        kwargs: dict[str, Any] = {}
        if self._settings.pipelines_dir:
            kwargs["pipelines_dir"] = self._settings.pipelines_dir
        pipeline: dlt.Pipeline = dlt.pipeline(
            pipeline_name=self._settings.pipeline_name,
            destination=build_destination(self._settings),
            dataset_name=self._settings.dataset,
            **kwargs,
        )
        # dlt would take over SIGINT/SIGTERM during a load and abandon it half-way; the
        # replicator's own handlers let the load finish, then stop after the batch.
        pipeline.runtime_config.intercept_signals = False
        self._pipeline = pipeline
        return pipeline

    def _schema(self) -> dlt.Schema:
        return dlt.Schema(SOURCE_NAME, normalizers={"names": NAMING_CONVENTION})

    # -- LakeWriter --------------------------------------------------------------------------

    def replace(
        self,
        loads: Sequence[TableLoad],
        checkpoint: Checkpoint | None,
        *,
        before_commit: Callable[[], None] | None = None,
    ) -> list[LakeTableInfo]:
        tables = [load.schema.table_id for load in loads]
        if checkpoint is not None:
            self._check_names_stay(checkpoint.tables - set(tables), checkpoint.tables)
            self._tables = checkpoint.tables
        names = self._table_names(tables)
        fmt = table_format(self._settings)
        extra: dict[str, Any] = {"table_format": fmt} if fmt else {}
        frontier = checkpoint.frontier if checkpoint is not None else None
        resources, plans, retyped = [], {}, []
        for load in loads:
            _check_metadata_names(load.schema)
            name = names[load.schema.table_id]
            disposition, _, plans[name] = write_plan(
                self._settings.destination, load.schema, frontier, kind="replace", soft=False
            )
            batches = _lake_columns(load.batches, load.schema)
            if load.retyped:  # the rows' first batch tells whether the lake column takes them
                first = _first(batches)
                if first is not None:
                    batches = itertools.chain([first], batches)
                    if self._retyped(name, first.schema):
                        retyped.append(name)
                        plans[name] = attrs.evolve(plans[name], new_schema=True)
            resources.append(
                self._with_table_features(
                    dlt.resource(
                        _hinted(batches),
                        name=name,
                        write_disposition=disposition,
                        primary_key=naming.lake_key(load.schema),
                        **extra,
                    ),
                    load.schema,
                )
            )

        if retyped:
            self._start_anew(retyped)
        state = checkpoint_state(checkpoint) if checkpoint is not None else None
        self._run_with_state(resources, state, plans, before_commit)
        return self.describe(tables)

    def _with_table_features(self, resource: Any, table: TableSchema) -> Any:
        """Databricks: the table is created with change data feed and deletion vectors on and
        liquid clustering on its lake key, as configured (dlt applies them when it creates the
        table; tables created earlier keep what they have)."""
        if self._settings.destination != "databricks":
            return resource
        from dlt.destinations.adapters import databricks_adapter

        key = naming.lake_key(table) if self._settings.cluster_by_key else []
        properties = self._settings.databricks_properties()
        features: dict[str, Any] = {"table_properties": properties or None}
        if key:
            features["cluster"] = key
        return databricks_adapter(resource, **features)

    def _retyped(self, name: str, fields: Any) -> bool:
        """Whether the lake table ``name`` holds one of ``fields`` (the Arrow schema a replace
        brings, lake names) under another type: dlt and Delta then refuse the rows, as they
        evolve a table by adding columns only."""
        from dlt.common.libs.pyarrow import get_column_type_from_py_arrow

        if self._access.holds_other_types(name, fields):
            return True
        pipeline = self.pipeline()
        if not pipeline.default_schema_name or name not in pipeline.default_schema.tables:
            return False  # a table (or lake) loaded for the first time
        stored = pipeline.default_schema.get_table_columns(name)
        hints = _column_hints(fields)
        for field in fields:
            old = stored.get(field.name)
            if old is None or "data_type" not in old:
                continue
            new = {**get_column_type_from_py_arrow(field.type), **hints.get(field.name, {})}
            facts = ("data_type", "precision", "scale", "timezone")
            if any(None is not old.get(f) != new.get(f) is not None for f in facts):
                return True
        return False

    def _start_anew(self, names: list[str]) -> None:
        """Forget the tables' columns, so the replace that follows gives them the rows' (Delta:
        its schema overwritten in the replace's commit, the table's history kept; SQL
        destinations: the table dropped first, then created by the load)."""
        pipeline = self.pipeline()
        log.info(
            "%s: a column's type changed: its lake table takes the new types", ", ".join(names)
        )
        self._access.start_anew(names)
        pipeline.default_schema.drop_tables(names)

    def merge(self, changes: Sequence[TableChanges], checkpoint: Checkpoint) -> None:
        self._tables = checkpoint.tables | {c.schema.table_id for c in changes}
        names = self._table_names(c.schema.table_id for c in changes)
        fmt = table_format(self._settings)
        resources, plans = [], {}
        for change in changes:
            name = names[change.schema.table_id]
            batch: Any = change.batch  # an Arrow record batch from the change source
            if change.schema.lake_columns.unchanged in batch.schema.names:
                batch = stored_values.keep_stored_values(self._access, change.schema, name, batch)
            if change.schema.keyless_full:
                batch = stored_values.count_rows(
                    self._access, change.schema, name, batch, change.truncated
                )
            disposition, extra, plans[name] = write_plan(
                self._settings.destination,
                change.schema,
                checkpoint.frontier,
                kind=_change_kind(change),
                soft=change.soft_delete,
            )
            kwargs: dict[str, Any] = {"table_format": fmt} if fmt else {}
            resources.append(
                self._with_table_features(
                    dlt.resource(
                        _hinted(_lake_columns([batch], change.schema), extra),
                        name=name,
                        write_disposition=disposition,
                        primary_key=naming.lake_key(change.schema),
                        **kwargs,
                    ),
                    change.schema,
                )
            )
        self._run_with_state(resources, checkpoint_state(checkpoint), plans)
        dlt_tuning.release_memory()  # before the next batch is collected (see dlt_tuning)

    def evolve(self, change: SchemaChange) -> None:
        name = self._table_names([change.table_id])[change.table_id]
        before = naming.column_names(change.before.column_names)
        after = naming.column_names(change.after.column_names)
        moved = [c for c, lake in before.items() if c in after and after[c] != lake]
        if moved:
            raise SourceSchemaError(
                f"{change.table_id}: the new columns would move {', '.join(moved)} to another "
                "lake column (their lake names clash); re-run `replicator --mode snapshot`"
            )
        plan = evolution.plan(change, before, after, change.before.lake_columns.lsn)
        if plan is None:
            return
        self._access.evolve(name, plan)

    def describe(
        self,
        tables: Iterable[TableId],
        *,
        last_change: Mapping[TableId, LakeColumns] | None = None,
    ) -> list[LakeTableInfo]:
        names = self._table_names(tables)
        lsn = None if last_change is None else {t: last_change[t].lsn for t in names}
        return self._access.describe(names, lsn)

    def column_names(self, table: TableSchema) -> dict[str, str]:
        return naming.column_names(table.column_names)

    def lake_table_name(self, table: TableId) -> str:
        return self._table_names([table])[table]

    def lake_table_names(self, tables: Iterable[TableId]) -> dict[TableId, str]:
        """The lake name of each table, decided among all of them (see naming.py)."""
        return self._table_names(tables)

    def open_delta(self, name: str) -> Any:
        """The Delta table of a lake table, or None before its first load."""
        return delta_tables.open_table(self._settings, name)

    # -- helpers -----------------------------------------------------------------------------

    def _check_names_stay(self, existing: Iterable[TableId], tables: Iterable[TableId]) -> None:
        """Tables added to a lake must not take the lake name of a table already there."""
        before = naming.table_names(existing)
        after = naming.table_names(tables)
        for table, name in before.items():
            if after[table] != name:
                raise ConfigurationError(
                    f"adding {', '.join(str(t) for t in sorted(set(after) - set(before)))} would "
                    f"move lake table {name!r} ({table}) to {after[table]!r}: run "
                    "`replicator --mode snapshot` to reload every table under the new names"
                )

    def _table_names(self, tables: Iterable[TableId]) -> dict[TableId, str]:
        """Lake names of ``tables``, decided among all replicated tables, so that a report or a
        read of a few tables names them as the load that wrote them did."""
        wanted = list(tables)
        if self._tables is None:
            checkpoint = read_checkpoint(self.pipeline(), self.destination_name)
            self._tables = checkpoint.tables if checkpoint is not None else frozenset()
        names = naming.table_names(self._tables | frozenset(wanted))
        return {t: names[t] for t in wanted}

    def tidy(self) -> None:
        """Keep the newest STATE_HISTORY rows (files) of the checkpoint's table: dlt writes one
        per load and reads the newest, by a query (a listing) over them all."""
        try:
            self._access.tidy_state(STATE_HISTORY)
        except ReplicatorError:
            raise
        except Exception as e:  # noqa: BLE001 - tidying is worth a warning, never a failure
            log.warning("could not prune the checkpoint's history: %s", error_mapping.first_line(e))

    def positions(self, tables: Iterable[TableId]) -> dict[TableId, Frontier]:
        names = self._table_names(tables)
        try:
            return self._access.positions(names)
        except ReplicatorError:
            raise
        except Exception as e:
            raise error_mapping.read_error(e, "the tables' positions") from e

    def _run_with_state(
        self,
        resources: list[Any],
        state: dict[str, Any] | None,
        plans: Mapping[str, TablePlan] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> LoadInfo:
        """One load: the resources and, in the same package, the checkpoint state; each table's
        commit records its position (``plans``)."""

        def checkpoint() -> Iterator[Any]:
            # Runs inside the extract step, so the checkpoint travels in the same load package
            # as the rows: it can never describe data the lake does not hold.
            dlt.current.source_state()[STATE_CHECKPOINT] = state
            yield from ()

        @dlt.source(schema=self._schema(), max_table_nesting=0)
        def bronze() -> Any:
            if state is None:
                return resources
            return [*resources, dlt.resource(checkpoint, name="_replicator_checkpoint")]

        pipeline = self._without_pending_packages(self.pipeline())
        if plans:
            self._access.prepare_positions()
        with load_plans.active(plans or {}):
            return self._run(pipeline, bronze(), before_commit)

    def _without_pending_packages(self, pipeline: dlt.Pipeline) -> dlt.Pipeline:
        """The pipeline, activated for the source function, with no package pending.

        A package left by a crashed run is never loaded: its changes are still in the slot
        (which was not acknowledged) and are re-read from the lake's checkpoint. dlt aborts it
        and restores its local state to before it. A kill can also land where dlt cannot undo
        it (between marking a package loaded and moving it aside: every later abort fails with
        LoadPackageAlreadyCompleted); the working dir holds nothing the lake lacks, so it
        starts afresh then, restored from the lake like an empty one.
        """
        if not pipeline.has_pending_data:
            return pipeline
        log.info("discarding a load package left by an interrupted run")
        try:
            pipeline.abort_packages()
        except Exception as e:  # noqa: BLE001 - every failure of the local storage alike
            log.warning(
                "the pipeline's working dir was left inconsistent by an interrupted run (%s): "
                "starting it afresh from the lake",
                error_mapping.first_line(error_mapping.root_cause(e)),
            )
            pipeline.drop()
            self._pipeline = None
            return self.pipeline()
        return pipeline

    def _run(
        self, pipeline: dlt.Pipeline, source: Any, before_commit: Callable[[], None] | None = None
    ) -> LoadInfo:
        try:
            if before_commit is None:
                info = pipeline.run(source, loader_file_format="parquet")
            else:  # dlt's run, step by step: every row is read once normalize returns
                if pipeline.config.restore_from_destination:
                    pipeline.sync_destination()
                pipeline.extract(source, loader_file_format="parquet")
                pipeline.normalize()
                before_commit()
                info = pipeline.load()
        except PipelineStepFailed as e:
            raise error_mapping.write_error(e, self._settings.destination, e.step) from e
        log.debug("%s", info)
        return info
