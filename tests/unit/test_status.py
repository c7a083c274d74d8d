import datetime as dt

from replicator.adapters.memory.fakes import (
    InMemoryChangeSource,
    InMemoryCheckpointStore,
    InMemoryLakeWriter,
)
from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.lsn import Lsn
from replicator.domain.model import Checkpoint, LakeTableInfo, SlotState, TableId
from replicator.domain.status import StatusReport, StatusService

ORDERS = TableId("public", "orders")


def report(**overrides: object) -> StatusReport:
    values: dict[str, object] = {
        "server_position": Lsn.parse("0/3000"),
        "slot": SlotState(
            "s", "pgoutput", Lsn.parse("0/2000"), Lsn.parse("0/1000"), True, "reserved"
        ),
        "checkpoint": Checkpoint(
            Lsn.parse("0/2000"), frozenset({ORDERS}), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ),
        "tables": (LakeTableInfo(ORDERS, "orders", 5, 3, "lake/orders", 0x1F00),),
    }
    values.update(overrides)
    return StatusReport(**values)  # type: ignore[arg-type]


class TestStatusReport:
    def test_retained_wal_and_lag_in_bytes(self) -> None:
        assert report().retained_wal_bytes == 0x2000
        assert report().lag_bytes == 0x1000

    def test_json_shape(self) -> None:
        data = report().as_dict()
        assert data["slot"]["confirmed_flush_lsn"] == "0/2000"
        assert data["lake"] == {
            "checkpoint_lsn": "0/2000",
            "source": None,
            "lag_bytes": 4096,
            "lag_seconds": None,
            "last_commit_ts": None,
            "last_run_at": "2026-01-01T00:00:00+00:00",
        }
        assert data["tables"] == [
            {
                "table": "public.orders",
                "lake_table": "orders",
                "rows": 5,
                "last_change_lsn": "0/1F00",
            }
        ]

    def test_lag_in_seconds_is_the_age_of_the_last_transaction_the_lake_holds(self) -> None:
        committed = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
        checkpoint = Checkpoint(Lsn.parse("0/2000"), frozenset({ORDERS}), commit_ts=committed)
        now = committed + dt.timedelta(seconds=42.5)
        assert report(checkpoint=checkpoint, at=now).lag_seconds == 42.5
        assert report(checkpoint=checkpoint, at=now).as_dict()["lake"]["last_commit_ts"] == (
            "2026-01-01T12:00:00+00:00"
        )
        caught_up = report(checkpoint=checkpoint, at=now, server_position=Lsn.parse("0/2000"))
        assert caught_up.lag_seconds == 0.0
        assert report(at=now).lag_seconds is None  # a checkpoint of an older version

    def test_missing_slot_and_checkpoint_are_reported_not_crashing(self) -> None:
        data = report(slot=None, checkpoint=None, tables=()).as_dict()
        assert (data["slot"], data["lake"], data["tables"]) == (None, None, [])
        assert report(slot=None).retained_wal_bytes is None


def status(
    lake: InMemoryLakeWriter, source: InMemoryChangeSource, slot: str = "fake_slot"
) -> StatusReport:
    return StatusService(source, LsnCheckpoint(InMemoryCheckpointStore(lake), slot), lake).run()


def lake_at(position: str, rows: int = 3, slot: str | None = None) -> InMemoryLakeWriter:
    lake = InMemoryLakeWriter()
    lake.tables = {ORDERS: [{"id": i} for i in range(rows)]}
    lake.checkpoint = Lsn.parse(position)
    lake.checkpoint_tables = {ORDERS}
    lake.checkpoint_slot = slot
    return lake


class TestStatusService:
    """What ``status`` reads from the fakes: the slot, the lake's checkpoint, the gap."""

    def test_a_slot_and_a_checkpoint_give_the_lag_and_the_retained_wal(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/5000"), confirmed_flush=Lsn(0x2000))
        source.active.add("fake_slot")
        found = status(lake_at("0/2000"), source)
        assert found.slot == SlotState(
            "fake_slot", "pgoutput", Lsn(0x2000), Lsn(0x2000), active=True
        )
        assert (found.lag_bytes, found.retained_wal_bytes) == (0x3000, 0x3000)
        assert found.checkpoint is not None and found.checkpoint.position == Lsn.parse("0/2000")
        assert [(str(t.table_id), t.rows) for t in found.tables] == [("public.orders", 3)]
        assert found.as_dict()["slot"]["active"] is True

    def test_a_lake_caught_up_with_the_server_lags_nothing(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/2000"), confirmed_flush=Lsn(0x2000))
        found = status(lake_at("0/2000"), source)
        assert (found.lag_bytes, found.lag_seconds, found.retained_wal_bytes) == (0, 0.0, 0)

    def test_a_missing_slot_is_reported_with_the_lake_as_it_stands(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/5000"), slot_exists=False)
        found = status(lake_at("0/2000"), source)
        assert found.slot is None and found.retained_wal_bytes is None
        assert found.lag_bytes == 0x3000
        assert found.as_dict()["slot"] is None
        assert found.as_dict()["lake"]["checkpoint_lsn"] == "0/2000"

    def test_a_lost_slot_reports_its_wal_status_and_retains_nothing_known(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/5000"), confirmed_flush=Lsn(0x2000))
        source.lost.add("fake_slot")
        found = status(lake_at("0/2000"), source)
        assert found.slot is not None and found.slot.wal_status == "lost"
        assert found.retained_wal_bytes is None
        assert found.as_dict()["slot"]["wal_status"] == "lost"
        assert found.as_dict()["slot"]["restart_lsn"] is None
        assert found.lag_bytes == 0x3000

    def test_without_a_checkpoint_only_the_configured_slot_is_reported(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/5000"), confirmed_flush=Lsn(0x1000))
        found = status(InMemoryLakeWriter(), source)
        assert found.checkpoint is None and found.tables == ()
        assert (found.lag_bytes, found.lag_seconds) == (None, None)
        assert found.slot is not None and found.slot.name == "fake_slot"
        assert found.as_dict()["lake"] is None and found.as_dict()["tables"] == []

    def test_the_slot_read_is_the_one_the_lake_continues_from(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/5000"), confirmed_flush=Lsn(0x1000))
        source.slots["fake_slot_2"] = Lsn(0x4000)
        found = status(lake_at("0/4000", slot="fake_slot_2"), source)
        assert found.slot is not None and found.slot.name == "fake_slot_2"
        assert (found.retained_wal_bytes, found.lag_bytes) == (0x1000, 0x1000)

    def test_a_checkpoint_ahead_of_the_server_position_lags_nothing(self) -> None:
        source = InMemoryChangeSource(position=Lsn.parse("0/1000"))
        assert status(lake_at("0/2000"), source).lag_bytes == 0
