"""The lake's metadata column names: chosen per table, kept with its shape."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from replicator.adapters.lake import naming
from replicator.adapters.lake.checkpoint_store import checkpoint_from_state, checkpoint_state
from replicator.adapters.lake.shapes import dump_shapes, load_shapes
from replicator.adapters.memory.fakes import (
    InMemoryChangeSource,
    InMemoryCheckpointStore,
    InMemoryLakeWriter,
    InMemorySnapshotSource,
    InMemoryTableCatalog,
)
from replicator.domain.cdc import CdcService
from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.lake_columns import LakeColumns, clash
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    ChangeKind,
    Checkpoint,
    ColumnSchema,
    ReplicaIdentity,
    SchemaChange,
    TableId,
    TableSchema,
)
from replicator.domain.snapshot import SnapshotService
from tests.unit.cdc_builders import ITEMS, TAGS, ins, table, txn

T = TableId("public", "t")
DEFAULTS = (
    "_pg_lsn",
    "_pg_commit_ts",
    "_pg_deleted_ts",
    "_pg_unchanged",
    "_pg_stored_key_",
    "_pg_row_key",
    "_pg_row_count",
)


def shape(*names: str, key: tuple[str, ...] = ("id",)) -> TableSchema:
    columns = tuple(ColumnSchema(n, "text", 25) for n in ("id", *names))
    return TableSchema(T, columns, primary_key=key)


def fields(columns: LakeColumns) -> tuple[str, ...]:
    return attrs.astuple(columns)


class TestTheRule:
    def test_without_clashes_the_names_are_the_defaults_as_always(self) -> None:
        assert fields(LakeColumns()) == DEFAULTS
        assert LakeColumns.avoiding(["id", "pg_lsn", "_pg_lsn_x"], 1) == LakeColumns()

    def test_a_name_a_source_column_has_takes_the_first_free_suffix(self) -> None:
        chosen = LakeColumns.avoiding(["id", "_pg_lsn", "_pg_commit_ts", "_pg_commit_ts_1"], 1)

        assert (chosen.lsn, chosen.commit_ts, chosen.deleted_ts) == (
            "_pg_lsn_1",
            "_pg_commit_ts_2",
            "_pg_deleted_ts",
        )

    def test_every_name_of_a_table_is_distinct_from_its_columns(self) -> None:
        taken = [*DEFAULTS, "_pg_stored_key_0", "_pg_stored_key_1", "_pg_row_key_1"]
        chosen = LakeColumns.avoiding(taken, 2)

        names = list(chosen.names(2))
        assert not set(names) & set(taken)
        assert len(set(names)) == len(names)
        assert chosen.row_key == "_pg_row_key_2"

    def test_the_stored_key_prefix_keeps_its_columns_free(self) -> None:
        assert LakeColumns.avoiding(["_pg_stored_key_id"], 1).stored_key(0) == "_pg_stored_key_0"
        chosen = LakeColumns.avoiding(["_pg_stored_key_1", "_pg_stored_key_1_1"], 2)
        assert [chosen.stored_key(n) for n in range(2)] == [
            "_pg_stored_key_2_0",
            "_pg_stored_key_2_1",
        ]

    @pytest.mark.parametrize(
        "taken",
        [
            [],
            list(DEFAULTS),
            [f"{n}_{i}" for n in DEFAULTS for i in (0, 1, 2, 10)] + list(DEFAULTS),
        ],
    )
    def test_the_lake_names_pass_dlts_convention_unchanged(self, taken: list[str]) -> None:
        chosen = LakeColumns.avoiding(taken, 3)
        for name in (*chosen.written, *chosen.counted):
            assert naming.convention().normalize_identifier(name) == name

    def test_a_doubled_underscore_would_not_survive_dlts_convention(self) -> None:
        # Why the rule suffixes instead of prefixing another underscore.
        assert naming.convention().normalize_identifier("__pg_lsn") != "__pg_lsn"

    def test_the_table_compares_lake_names(self) -> None:
        table = shape("_PG_LSN", "v")
        lake_names = naming.column_names(table.column_names).values()

        assert table.choosing_lake_columns(lake_names).lake_columns.lsn == "_pg_lsn_1"


class TestColumnsAddedLater:
    def change(self, before: TableSchema, after: TableSchema) -> SchemaChange:
        return SchemaChange(T, before, after, 100, added=(("x", None),))

    def test_a_column_under_one_of_the_tables_names_is_a_problem_naming_it_and_the_fix(
        self,
    ) -> None:
        before = shape("_pg_lsn").choosing_lake_columns(["id", "_pg_lsn"])
        after = shape("_pg_lsn", "_pg_lsn_1")
        problem = clash(self.change(before, after), {c: c for c in after.column_names})

        assert problem is not None
        assert "_pg_lsn_1" in problem and "replicator --mode snapshot" in problem
        assert "_pg_lsn," not in problem  # the source's own column is no clash

    def test_a_staging_name_clashes_too(self) -> None:
        before, after = shape(), shape("_pg_stored_key_0")
        assert clash(self.change(before, after), {c: c for c in after.column_names})

    def test_other_columns_and_the_names_of_other_tables_do_not(self) -> None:
        before = shape()
        after = shape("_pg_lsn_1", "pg_lsn")
        assert clash(self.change(before, after), {c: c for c in after.column_names}) is None

    def test_the_lake_keeps_its_names_through_the_shapes_that_follow(self) -> None:
        lake = shape("_pg_lsn").choosing_lake_columns(["id", "_pg_lsn"])
        later = shape()  # the source column dropped: the stream's new shape has the defaults

        assert lake.keeping_signatures(later).lake_columns.lsn == "_pg_lsn_1"


class TestKeptWithTheShape:
    def test_shapes_round_trip_with_their_names(self) -> None:
        table = shape("_pg_lsn", "_pg_row_key").choosing_lake_columns(["id", "_pg_lsn"])

        assert load_shapes(dump_shapes({T: table})) == {T: table}

    def test_a_checkpoint_round_trips_with_its_names(self) -> None:
        table = shape("_pg_lsn").choosing_lake_columns(["id", "_pg_lsn"])
        checkpoint = Checkpoint(Lsn(100), frozenset({T}), schemas={T: table})
        state = {"sources": {"pg_replication": {"checkpoint": checkpoint_state(checkpoint)}}}

        loaded = checkpoint_from_state(state)

        assert loaded is not None
        assert loaded.lake_columns(T).lsn == "_pg_lsn_1"

    def test_an_older_checkpoint_without_them_has_the_defaults_its_lake_was_written_with(
        self,
    ) -> None:
        older = [
            {
                "table": ["public", "t"],
                "key": ["id"],
                "identity": ReplicaIdentity.DEFAULT.value,
                "columns": [["id", "integer", 23]],
            }
        ]

        assert load_shapes(older)[T].lake_columns == LakeColumns()
        assert Checkpoint(Lsn(1)).lake_columns(T) == LakeColumns()


class TestChosenBySnapshot:
    def test_a_snapshot_chooses_the_names_and_the_checkpoint_keeps_them(self) -> None:
        table = shape("_pg_lsn", "_pg_deleted_ts")
        source = InMemorySnapshotSource({T: [{"id": 1}]}, position=Lsn(100))
        writer = InMemoryLakeWriter()

        SnapshotService(InMemoryTableCatalog([table]), source, writer).run()

        kept = writer.checkpoint_schemas[T].lake_columns
        assert (kept.lsn, kept.commit_ts, kept.deleted_ts) == (
            "_pg_lsn_1",
            "_pg_commit_ts",
            "_pg_deleted_ts_1",
        )
        assert writer.checkpoint_schemas[T].columns == table.columns


class TestKeptByCdc:
    def service(self, lake: InMemoryLakeWriter, source: InMemoryChangeSource, **kw: Any) -> Any:
        catalog = InMemoryTableCatalog(kw.pop("tables", [table(ITEMS)]))
        checkpoint = LsnCheckpoint(InMemoryCheckpointStore(lake), "fake_slot")
        return CdcService(catalog, source, lake, checkpoint, **kw)

    def test_a_table_snapshotted_on_its_own_chooses_its_names(self) -> None:
        tags = attrs.evolve(
            table(TAGS), columns=(*table(TAGS).columns, ColumnSchema("_pg_lsn", "text", 25))
        )
        lake = InMemoryLakeWriter()
        lake.tables, lake.checkpoint, lake.checkpoint_tables = {ITEMS: []}, Lsn(5), {ITEMS}
        own = InMemorySnapshotSource({TAGS: []}, position=Lsn(25))
        source = InMemoryChangeSource(
            [txn(30, Change(TAGS, ChangeKind.INSERT, 0, (8,), (8, "t8", "mine")))],
            confirmed_flush=Lsn(5),
        )

        self.service(lake, source, tables=[table(ITEMS), tags], table_snapshots=own).run()

        assert lake.checkpoint_schemas[TAGS].lake_columns.lsn == "_pg_lsn_1"
        assert lake.checkpoint_schemas[ITEMS].lake_columns == LakeColumns()
        (row,) = lake.tables[TAGS]
        assert row["_pg_lsn"] == "mine" and row["_pg_lsn_1"] is not None

    def test_the_names_stay_when_the_source_column_is_gone(self) -> None:
        kept = table(ITEMS).choosing_lake_columns(["id", "v", "_pg_lsn"])  # dropped since
        lake = InMemoryLakeWriter()
        lake.tables, lake.checkpoint, lake.checkpoint_tables = {ITEMS: []}, Lsn(5), {ITEMS}
        lake.checkpoint_schemas = {ITEMS: kept}
        source = InMemoryChangeSource([txn(30, ins(1, "a"))], confirmed_flush=Lsn(5))

        self.service(lake, source).run()

        assert lake.checkpoint_schemas[ITEMS].lake_columns.lsn == "_pg_lsn_1"
        assert "_pg_lsn_1" in lake.tables[ITEMS][0] and "_pg_lsn" not in lake.tables[ITEMS][0]
