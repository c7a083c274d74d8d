"""A transaction larger than the batch limits, against a real PostgreSQL and local Delta: it is
written in parts, the checkpoint and the slot move only at its commit, and a crash between two
parts still ends with the lake equal to the source (issue 4, point 6)."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.lsn import Lsn
from tests.integration.helpers import assert_lake_equals_source, container, snapshot
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

PART = 500  # batch_max_changes: the transaction below has ~3,400 changes, so ~7 parts

DDL = "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text, body text)"


def _random_text(rng: random.Random, size: int) -> str:
    """Random letters: pglz cannot shrink them below the TOAST threshold (~2 kB)."""
    return "".join(rng.choices(string.ascii_letters + string.digits + " ", k=size))


def _seed_rows(execute: Any, rng: random.Random) -> None:
    """1,000 rows; every tenth has a TOASTed body (3 kB of random text), the rest a short one."""
    rows = [
        (i, i % 7, f"item {i}", _random_text(rng, 3000) if i % 10 == 0 else f"short {i}")
        for i in range(1, 1001)
    ]
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    execute(f"INSERT INTO items VALUES {values}", tuple(v for row in rows for v in row))


def _large_transaction(execute: Any, rng: random.Random) -> None:
    """One transaction, ~3,400 changes. The key moves and the updates that leave a TOASTed body
    unchanged (pgoutput sends it as 'u', no value) come first, so they land in the first parts;
    inserts, updates of rows inserted in an earlier part, and deletes follow."""
    big = [_random_text(rng, 2500) for _ in range(20)]
    inserted = [
        (i, i % 5, f"new {i}", big[i % 20] if i % 4 == 0 else None) for i in range(10_001, 12_001)
    ]
    values = ", ".join(["(%s, %s, %s, %s)"] * len(inserted))
    execute(
        "BEGIN;"
        # 45 key moves of rows with short bodies (a moved row with an unchanged TOASTed body:
        # see test_a_key_move_with_an_unchanged_toasted_value_before_a_crash)
        "UPDATE items SET id = id + 100000 WHERE id BETWEEN 601 AND 650 AND id %% 10 <> 0;"
        # 600 updates leaving body unchanged (60 of them TOASTed)
        "UPDATE items SET qty = qty + 1, label = label || ' upd' WHERE id <= 600;"
        f"INSERT INTO items VALUES {values};"  # 2,000 inserts, a quarter with TOASTed bodies
        # 500 updates of rows inserted parts earlier, TOASTed bodies unchanged
        "UPDATE items SET label = 'touched' WHERE id BETWEEN 10001 AND 10500;"
        "UPDATE items SET body = 'rewritten' WHERE id BETWEEN 10 AND 50;"  # 41 updates
        "DELETE FROM items WHERE id BETWEEN 700 AND 799;"  # 100 deletes of snapshot rows
        "DELETE FROM items WHERE id BETWEEN 11001 AND 11100;"  # 100 deletes of new rows
        "COMMIT",
        tuple(v for row in inserted for v in row),
    )


def _checkpoint(pg: PostgresSettings, lake: LakeSettings) -> Lsn:
    checkpoint = container(pg, lake).checkpoint_store().load()
    assert checkpoint is not None
    return checkpoint.position


def _confirmed_flush(execute: Any) -> Lsn:
    (position,) = execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        ("dlt_cdc_slot",),
    )[0]
    return Lsn.parse(str(position))


class Crash(Exception):
    pass


class _CrashOnThirdMerge:
    """The lake writer, dying in its third merge (after two parts of the transaction were
    written), installed by a container override."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def merge(self, changes: Any, checkpoint: Any) -> None:
        self.calls += 1
        if self.calls == 3:
            raise Crash("killed after the second part of the transaction was written")
        self.inner.merge(changes, checkpoint)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _crash_on_third_part(pg: PostgresSettings, lake: LakeSettings) -> None:
    """A CDC run that dies in its third lake write, after two parts of the transaction."""
    failing = container(pg, lake, max_changes=PART)
    writer = _CrashOnThirdMerge(failing.lake_writer())
    failing.lake_writer.override(writer)
    with pytest.raises(Crash):
        failing.cdc_service().run()
    assert writer.calls == 3


@pytest.fixture
def items(execute: Any, pg_settings: PostgresSettings, delta_settings: LakeSettings) -> Lsn:
    """The snapshotted table, and the lake's checkpoint before the large transaction."""
    execute(DDL)
    _seed_rows(execute, random.Random(4))
    snapshot(pg_settings, delta_settings)
    (toasted,) = execute(
        "SELECT count(*) FROM items WHERE pg_column_size(body) > 2000 AND id % 10 = 0"
    )[0]
    assert toasted == 100  # stored out of line, so unchanged values arrive as 'u'
    before = _checkpoint(pg_settings, delta_settings)
    _large_transaction(execute, random.Random(6))
    return before


class TestLargeTransaction:
    def test_a_transaction_over_the_batch_limit_is_written_in_parts_and_lands_exactly(
        self,
        items: Lsn,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
    ) -> None:
        report = container(pg_settings, delta_settings, max_changes=PART).cdc_service().run()

        assert report.transactions == 1
        assert report.batches >= 6, "the transaction was not split into parts"
        assert_lake_equals_source(execute, delta_settings, "items")
        assert _checkpoint(pg_settings, delta_settings) == report.position > items
        # The slot is confirmed one byte before the checkpoint (see ChangeStream.acknowledge).
        assert _confirmed_flush(execute) == Lsn(int(report.position) - 1)

    def test_a_crash_between_parts_keeps_the_checkpoint_and_the_next_run_ends_exact(
        self,
        items: Lsn,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
    ) -> None:
        _crash_on_third_part(pg_settings, delta_settings)

        # Two parts are in the lake (the key moves among them), yet its checkpoint is still
        # the position before the transaction, and the slot has not been confirmed beyond it.
        ids = {r["id"] for r in delta_rows(delta_settings, "items")}
        assert 100_601 in ids and 601 not in ids and len(ids) != 1000
        assert _checkpoint(pg_settings, delta_settings) == items
        assert _confirmed_flush(execute) <= items

        report = container(pg_settings, delta_settings, max_changes=PART).cdc_service().run()

        assert report.transactions == 1  # the whole transaction, read again from its start
        assert_lake_equals_source(execute, delta_settings, "items")
        assert _checkpoint(pg_settings, delta_settings) == report.position > items

    def test_a_key_move_with_an_unchanged_toasted_value_before_a_crash(
        self,
        execute: Any,
        pg_settings: PostgresSettings,
        delta_settings: LakeSettings,
    ) -> None:
        """The replay skips the changes the written parts hold: moving those rows again would
        look for their unchanged TOASTed values under keys they no longer have."""
        execute(DDL)
        _seed_rows(execute, random.Random(4))
        snapshot(pg_settings, delta_settings)
        execute(
            "BEGIN;"
            "UPDATE items SET id = id + 100000 WHERE id BETWEEN 601 AND 650;"  # 5 TOASTed
            "UPDATE items SET qty = qty + 1 WHERE id <= 600;"
            "INSERT INTO items SELECT g, 0, 'new', NULL FROM generate_series(10001, 11000) g;"
            "COMMIT"
        )
        _crash_on_third_part(pg_settings, delta_settings)

        container(pg_settings, delta_settings, max_changes=PART).cdc_service().run()

        assert_lake_equals_source(execute, delta_settings, "items")
