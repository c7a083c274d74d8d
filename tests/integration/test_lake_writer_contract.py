"""The LakeWriter port's contract, run on the in-memory fake and on the real writer into local
Delta and DuckDB, so the fake the unit tests rely on cannot drift from the real adapters.

Each writer gets the same batches, in the format its change source hands it (row lists for the
fake, Arrow batches with the ``_pg_*`` columns for dlt), and is read back as stored.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from replicator.adapters.lake.checkpoint_store import DltCheckpointStore
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.adapters.memory.fakes import FakeRow, InMemoryLakeWriter, RowList
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Checkpoint,
    ColumnSchema,
    Frontier,
    TableChanges,
    TableId,
    TableLoad,
    TableSchema,
)
from replicator.domain.ports import LakeWriter
from tests.stored_lake import StoredLake

pytestmark = pytest.mark.integration

ITEMS = TableId("public", "items")
LOG = TableId("public", "log")
KEYED = TableSchema(
    ITEMS, (ColumnSchema("id", "integer", 23), ColumnSchema("v", "text", 25)), ("id",)
)
APPENDED = TableSchema(
    LOG, (ColumnSchema("id", "integer", 23), ColumnSchema("v", "text", 25)), inserts_only=True
)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Lake:
    """A writer under test, its batch format, and its tables as stored."""

    def __init__(self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        self.stored: StoredLake | None = None
        self.writer: LakeWriter
        if kind == "memory":
            self.fake = InMemoryLakeWriter()
            self.writer = self.fake
            return
        if kind == "duckdb":
            database = str(tmp_path / "lake.duckdb")
            monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", database)
            settings = LakeSettings(destination="duckdb", pipelines_dir=str(tmp_path / "dlt"))
            self.stored = StoredLake(settings, database)
        else:
            settings = LakeSettings(
                bucket_url=str(tmp_path / "lake"), pipelines_dir=str(tmp_path / "dlt")
            )
            self.stored = StoredLake(settings)
        self.writer = DltLakeWriter(settings)

    def batch(
        self,
        schema: TableSchema,
        upserts: list[tuple[int, str]],
        deletes: list[int],
        lsn: int,
        *,
        snapshot: bool = False,
    ) -> Any:
        """Rows for the lake: upserts (id, v) and deletes by id, all at ``lsn``; ``snapshot``:
        as a snapshot source hands them over (the fake's are plain row dicts)."""
        if self.kind == "memory" and snapshot:
            return RowList(tuple({"id": i, "v": v, "_pg_lsn": lsn} for i, v in upserts))
        if self.kind == "memory":
            rows = [
                FakeRow(
                    {"id": i, "v": v, "_pg_lsn": lsn, "_pg_deleted_ts": None}, False, frozenset()
                )
                for i, v in upserts
            ] + [
                FakeRow({"id": i, "_pg_lsn": lsn, "_pg_deleted_ts": T0}, True, frozenset())
                for i in deletes
            ]
            return RowList(tuple({"row": r} for r in rows))
        n = len(upserts) + len(deletes)
        utc = pa.timestamp("us", tz="UTC")
        return pa.record_batch(
            [
                pa.array([i for i, _ in upserts] + deletes, pa.int64()),
                pa.array([v for _, v in upserts] + [None] * len(deletes), pa.string()),
                pa.array([lsn] * n, pa.int64()),
                pa.array([T0] * n, utc),
                pa.array([None] * len(upserts) + [T0] * len(deletes), utc),
            ],
            schema=pa.schema([
                pa.field("id", pa.int64(), nullable=schema.table_id != ITEMS),
                pa.field("v", pa.string()),
                pa.field("_pg_lsn", pa.int64()),
                pa.field("_pg_commit_ts", utc),
                pa.field("_pg_deleted_ts", utc),
            ]),
        )  # fmt: skip

    def rows(self, table: TableId) -> list[tuple[Any, Any]]:
        """(id, v) of every stored row, rows marked deleted included, sorted."""
        if self.kind == "memory":
            found = self.fake.tables.get(table, [])
        else:
            assert self.stored is not None
            found = self.stored.rows(table.name)
        return sorted(((r["id"], r.get("v")) for r in found), key=repr)


@pytest.fixture(params=["memory", "delta", "duckdb"])
def lake(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    return Lake(request.param, tmp_path, monkeypatch)


def checkpoint(position: int, in_flight: tuple[int, int, int] | None = None) -> Checkpoint:
    part = None if in_flight is None else (Lsn(in_flight[0]), Lsn(in_flight[1]), in_flight[2])
    return Checkpoint(Lsn(position), frozenset({ITEMS, LOG}), in_flight=part)


def snapshot(lake: Lake) -> None:
    lake.writer.replace(
        [
            TableLoad(
                KEYED,
                iter([lake.batch(KEYED, [(1, "a"), (2, "b"), (3, "c")], [], 10, snapshot=True)]),
            ),
            TableLoad(APPENDED, iter([lake.batch(APPENDED, [(1, "x")], [], 10, snapshot=True)])),
        ],
        checkpoint(10),
    )


class TestTheLakeWriterContract:
    def test_replace_loads_every_table_and_records_their_positions(self, lake: Lake) -> None:
        snapshot(lake)

        assert lake.rows(ITEMS) == [(1, "a"), (2, "b"), (3, "c")]
        assert lake.rows(LOG) == [(1, "x")]
        assert lake.writer.positions([ITEMS, LOG]) == {ITEMS: Frontier(10), LOG: Frontier(10)}

    def test_a_merge_upserts_and_deletes_by_key_and_never_inserts_a_deleted_row(
        self, lake: Lake
    ) -> None:
        snapshot(lake)
        changes = TableChanges(KEYED, lake.batch(KEYED, [(2, "B"), (4, "d")], [3, 99], 20))

        lake.writer.merge([changes], checkpoint(20))

        assert lake.rows(ITEMS) == [(1, "a"), (2, "B"), (4, "d")]  # no row for 99

    def test_soft_delete_keeps_the_row(self, lake: Lake) -> None:
        snapshot(lake)
        batch = lake.batch(KEYED, [], [3], 20)
        if lake.kind == "memory":  # the fake's change source marks kept rows itself
            row = batch.rows[0]["row"]
            batch = RowList(({"row": FakeRow(row.values, False, frozenset({"v"}))},))

        lake.writer.merge([TableChanges(KEYED, batch, soft_delete=True)], checkpoint(20))

        assert 3 in [i for i, _ in lake.rows(ITEMS)]

    def test_a_truncated_table_is_replaced_by_the_batch(self, lake: Lake) -> None:
        snapshot(lake)
        changes = TableChanges(KEYED, lake.batch(KEYED, [(7, "after")], [], 20), truncated=True)

        lake.writer.merge([changes], checkpoint(20))

        assert lake.rows(ITEMS) == [(7, "after")]

    def test_a_table_without_a_key_gets_every_row_appended(self, lake: Lake) -> None:
        snapshot(lake)
        changes = TableChanges(APPENDED, lake.batch(APPENDED, [(1, "x"), (2, "y")], [], 20))

        lake.writer.merge([changes], checkpoint(20))

        assert lake.rows(LOG) == [(1, "x"), (1, "x"), (2, "y")]

    def test_each_table_records_the_frontier_of_its_last_write(self, lake: Lake) -> None:
        snapshot(lake)
        part = TableChanges(KEYED, lake.batch(KEYED, [(5, "e")], [], 25))

        lake.writer.merge([part], checkpoint(20, in_flight=(30, 26, 7)))  # a part of a transaction
        assert lake.writer.positions([ITEMS, LOG]) == {
            ITEMS: Frontier(30, 26, 7),
            LOG: Frontier(10),
        }

        lake.writer.merge([], checkpoint(40))  # only the checkpoint moves
        assert lake.writer.positions([ITEMS]) == {ITEMS: Frontier(30, 26, 7)}


@pytest.mark.parametrize("kind", ["delta", "duckdb"])
def test_a_run_killed_after_dlt_marked_its_package_loaded_leaves_the_next_run_working(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between dlt marking a package loaded and moving it aside leaves it pending and
    marked loaded, which dlt can never abort (every later run failed on it). The lake holds
    the load: the next run starts its working dir afresh and goes on."""
    lake = Lake(kind, tmp_path, monkeypatch)
    snapshot(lake)
    lake.writer.merge([TableChanges(KEYED, lake.batch(KEYED, [(2, "B")], [], 20))], checkpoint(20))
    load = Path(lake.writer.pipeline().working_dir) / "load"
    package = max((load / "loaded").iterdir())
    package.rename(load / "normalized" / package.name)  # what the kill leaves
    assert (load / "normalized" / package.name / "package_completed.json").exists()

    again = DltLakeWriter(lake.writer.settings)  # the next run
    again.merge([TableChanges(KEYED, lake.batch(KEYED, [(4, "d")], [], 30))], checkpoint(30))

    assert lake.rows(ITEMS) == [(1, "a"), (2, "B"), (3, "c"), (4, "d")]
    stored = DltCheckpointStore(again).load()
    assert stored is not None and stored.position == Lsn(30)
    assert again.positions([ITEMS, LOG]) == {ITEMS: Frontier(30), LOG: Frontier(10)}
