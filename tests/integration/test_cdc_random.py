"""A seeded random workload the tests did not hand-pick: several tables, thousands of changes in
transactions of random size, writers running during the snapshot, several CDC runs with small
batches and the local dlt state wiped in between. The lake must end equal to the source."""

from __future__ import annotations

import os
import random
import shutil
import threading
from typing import Any

import psycopg2
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import assert_lake_equals_source, cdc, snapshot

pytestmark = pytest.mark.integration

TABLES = """
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(14,2), tags text[],
                       opened timestamptz, note text);
CREATE TABLE events (id bigint PRIMARY KEY, account_id int, kind text, payload jsonb, at timestamptz);
CREATE TABLE pairs (a int, b int, label text, PRIMARY KEY (a, b));
"""


class RandomWorkload:
    """Random statements against the three tables; every choice comes from one seeded RNG."""

    def __init__(self, seed: int, instance: int) -> None:
        self.rng = random.Random(seed * 100 + instance)
        self.first_event = self.next_event = instance * 1_000_000

    def statement(self) -> tuple[str, tuple[Any, ...]]:
        rng = self.rng
        table = rng.choice(["accounts", "accounts", "events", "pairs"])
        op = rng.choices(["insert", "update", "delete", "key"], weights=[5, 4, 2, 1])[0]
        if table == "accounts":
            key = rng.randint(1, 300)
            if op == "insert":
                return (
                    "INSERT INTO accounts VALUES (%s, %s, %s, %s, now(), %s) ON CONFLICT (id) DO "
                    "UPDATE SET balance = EXCLUDED.balance, note = EXCLUDED.note",
                    (key, f"owner {key}", rng.randint(-10**6, 10**6) / 100,
                     rng.choice([None, [], ["a", None], ["x", "y, z", 'q"uote']]),
                     rng.choice([None, "", "ünï", "n" * rng.randint(1, 3000)])),
                )  # fmt: skip
            if op == "update":
                return ("UPDATE accounts SET balance = balance + %s, note = %s WHERE id = %s",
                        (rng.randint(1, 500) / 100, rng.choice([None, "upd"]), key))  # fmt: skip
            if op == "key":
                return ("UPDATE accounts SET id = %s WHERE id = %s AND NOT EXISTS "
                        "(SELECT 1 FROM accounts WHERE id = %s)", (key + 1000, key, key + 1000))  # fmt: skip
            return ("DELETE FROM accounts WHERE id = %s", (key,))
        if table == "events":
            if op in ("insert", "key"):
                self.next_event += 1
                return ("INSERT INTO events VALUES (%s, %s, %s, %s, now())",
                        (self.next_event, rng.randint(1, 300), rng.choice(["in", "out"]),
                         rng.choice([None, '{"k": 1}', '{"deep": {"list": [1, null, "x"]}}', "null"])))  # fmt: skip
            key = rng.randint(self.first_event, self.next_event)
            if op == "update":
                return (
                    "UPDATE events SET kind = %s WHERE id = %s",
                    (rng.choice(["fix", None]), key),
                )
            return ("DELETE FROM events WHERE id = %s", (key,))
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if op == "insert":
            return (
                "INSERT INTO pairs VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (a, b, f"{a}-{b}"),
            )
        if op == "update":
            return ("UPDATE pairs SET label = label || '!' WHERE a = %s", (a,))
        if op == "key":
            return ("UPDATE pairs SET b = b + 100 WHERE a = %s AND b = %s AND NOT EXISTS "
                    "(SELECT 1 FROM pairs WHERE a = %s AND b = %s)", (a, b, a, b + 100))  # fmt: skip
        return ("DELETE FROM pairs WHERE a = %s AND b = %s", (a, b))

    def run(self, dsn: str, transactions: int) -> int:
        conn = psycopg2.connect(dsn)
        changes = 0
        try:
            for _ in range(transactions):
                with conn, conn.cursor() as cur:
                    for _ in range(self.rng.choice([1, 1, 2, 5, 20])):
                        cur.execute(*self.statement())
                        changes += 1
        finally:
            conn.close()
        return changes


def test_random_workload_ends_with_lake_equal_to_source(
    execute: Any, pg_dsn: str, pg_settings: PostgresSettings, delta_settings: LakeSettings
) -> None:
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
    print(f"random workload seed: {seed} (rerun with REPLICATOR_TEST_SEED={seed})")
    execute(TABLES)
    RandomWorkload(seed, 0).run(pg_dsn, 300)

    during = RandomWorkload(seed, 1)
    failures: list[BaseException] = []

    def write_during_snapshot() -> None:
        try:
            during.run(pg_dsn, 150)
        except Exception as e:  # noqa: BLE001 - surfaced below, not lost in the thread
            failures.append(e)

    writer = threading.Thread(target=write_during_snapshot)
    writer.start()
    try:
        snapshot(pg_settings, delta_settings)
    finally:
        writer.join()
    assert not failures, failures

    for round_ in range(3):
        RandomWorkload(seed, 2 + round_).run(pg_dsn, 200)
        cdc(pg_settings, delta_settings, max_changes=250)
        if round_ == 1 and delta_settings.pipelines_dir:
            shutil.rmtree(delta_settings.pipelines_dir)  # an empty working dir between runs

    for table, key in (("accounts", "id"), ("events", "id"), ("pairs", "a, b")):
        assert_lake_equals_source(execute, delta_settings, table, key)
