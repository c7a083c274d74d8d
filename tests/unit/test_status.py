import datetime as dt

from replicator.domain.lsn import Lsn
from replicator.domain.model import Checkpoint, LakeTableInfo, SlotState, TableId
from replicator.domain.status import StatusReport

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
