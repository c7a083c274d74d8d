"""kill -9 torture, per table kind and destination: a ``--follow`` process is killed again and
again while a writer keeps changing a keyed table, an insert-only table and a counted keyless
(REPLICA IDENTITY FULL) table, with transactions small and large (written in parts). Kills land
right after a table's commit and before the checkpoint's, inside a transaction written in
parts, and at random moments. A last drain run, then the lake as stored equals the source.

Seeded: the seed is printed; ``REPLICATOR_TEST_SEED=<seed>`` replays the schedule and the
workload (the moments a kill lands still depend on the machine's timing).
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import psycopg2
import pytest

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import snapshot
from tests.integration.processes import BIN, replicator_env
from tests.stored_lake import StoredLake

pytestmark = pytest.mark.integration

TABLES = """
CREATE TABLE k (id int PRIMARY KEY, v bigint NOT NULL, note text);
INSERT INTO k SELECT g, 0, NULL FROM generate_series(1, 50) g;
CREATE TABLE h (n bigint, at text);
CREATE TABLE f (n int, label text);
ALTER TABLE f REPLICA IDENTITY FULL;
INSERT INTO f SELECT g % 7, 'l' || (g % 3) FROM generate_series(1, 40) g;
"""
KILLS = 4


class Writer(threading.Thread):
    """Transactions against the three tables until stopped; every choice from one seeded RNG."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng = dsn, random.Random(seed)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.transactions = 0

    def run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            n = 0
            while not self.stop.is_set():
                with conn, conn.cursor() as cur:
                    size = 120 if self.rng.random() < 0.05 else self.rng.randint(1, 6)
                    for _ in range(size):  # a large one is written in parts
                        n += 1
                        self._statement(cur, n)
                self.transactions += 1
                time.sleep(self.rng.uniform(0.01, 0.05))
            conn.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _statement(self, cur: Any, n: int) -> None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.35:
            cur.execute("INSERT INTO h VALUES (%s, clock_timestamp()::text)", (n,))
        elif choice < 0.45:
            cur.execute("INSERT INTO h SELECT %s, 'bulk' FROM generate_series(1, 3)", (n,))
        elif choice < 0.75:
            cur.execute("UPDATE k SET v = v + 1, note = %s WHERE id = %s",
                        (rng.choice([None, "x" * rng.randint(1, 50)]), rng.randint(1, 50)))  # fmt: skip
        elif choice < 0.85:
            cur.execute(
                "INSERT INTO f VALUES (%s, %s)", (rng.randint(0, 6), f"l{rng.randint(0, 2)}")
            )
        elif choice < 0.93:
            cur.execute("UPDATE f SET n = n + 1 WHERE ctid = (SELECT ctid FROM f WHERE n = %s "
                        "LIMIT 1)", (rng.randint(0, 8),))  # fmt: skip
        else:
            cur.execute("DELETE FROM f WHERE ctid = (SELECT ctid FROM f WHERE n = %s LIMIT 1)",
                        (rng.randint(0, 8),))  # fmt: skip


def _packages(dlt_dir: Path) -> Path:
    """The load packages dlt has normalized, in the pipeline's own working dir (one per source,
    slot, destination and dataset, under DLT_DATA_DIR/pipelines)."""
    found = sorted((dlt_dir / "pipelines").glob("replicator-*/replicator"))
    assert len(found) <= 1, found
    return (found[0] if found else dlt_dir / "pipelines" / "none") / "load" / "normalized"


def _in_a_load(dlt_dir: Path, before: set[str]) -> bool:
    """A new load package whose jobs have started completing: some table committed, maybe not
    the checkpoint (dlt keeps a package under normalized/ until every job is done)."""
    try:
        return any(
            p.name not in before and any((p / "completed_jobs").iterdir())
            for p in _packages(dlt_dir).iterdir()
        )
    except OSError:
        return False


def _kill_when(
    process: subprocess.Popen[bytes], moment: str, dlt_dir: Path, rng: random.Random
) -> bool:
    before = {p.name for p in _packages(dlt_dir).glob("*")}
    deadline = time.monotonic() + 20
    if moment == "random":  # the process needs ~3 s to start: from then on, anywhere
        deadline = time.monotonic() + rng.uniform(2.5, 8.0)
    while time.monotonic() < deadline and process.poll() is None:
        if moment == "after a table's commit" and _in_a_load(dlt_dir, before):
            break
        time.sleep(0.002)
    if process.poll() is not None:
        return False
    process.kill()
    process.wait()
    return True


def _wait_inactive(dsn: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT bool_and(NOT active) FROM pg_replication_slots"
                    " WHERE database = current_database()"
                )
                row = cur.fetchone()
        finally:
            conn.close()
        if row and row[0] is not False:
            return
        time.sleep(0.2)
    pytest.fail("the server did not notice the killed consumer")


def _story(
    stored: list[dict[str, Any]],
    missing: Counter[tuple[Any, ...]],
    extra: Counter[tuple[Any, ...]],
    runs: list[Path],
    tmp_path: Path,
) -> str:
    """What a rare failure needs to be diagnosed from a CI log alone: the rows missing or
    doubled, the stored rows around them (their WAL positions), and every run's own account."""
    lines = [f"missing {sorted(missing.elements())[:10]}", f"extra {sorted(extra.elements())[:10]}"]
    around = sorted(stored, key=lambda r: str(r["at"]))
    first = min((str(at) for _, at in [*missing, *extra]), default="")
    near = [r for r in around if str(r["at"]) >= first][:5]
    lines += [f"stored after it: {[(r['n'], r['at'], r.get('_pg_lsn')) for r in near]}"]
    for log in [*runs, tmp_path / "drain.log"]:
        if log.exists():
            told = [ln for ln in log.read_text().splitlines() if "|dlt|" not in ln]
            lines += [f"== {log.name}", *told[-40:]]
    return "\n".join(lines)


@pytest.mark.parametrize("destination", ["delta", "duckdb"])
def test_kill_9_at_any_moment_leaves_every_table_kind_exact(
    destination: str,
    execute: Any,
    pg_dsn: str,
    pg_settings: PostgresSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
    print(f"kill -9 torture seed: {seed} (replay with REPLICATOR_TEST_SEED={seed})")
    rng = random.Random(seed)
    execute(TABLES)
    pg = attrs.evolve(pg_settings, keyless_tables="insert_only")
    extra: dict[str, str] = {}
    if destination == "duckdb":
        database = str(tmp_path / "lake.duckdb")
        monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", database)
        extra = {"DESTINATION__DUCKDB__CREDENTIALS": database, "REPLICATOR_DESTINATION": "duckdb"}
        lake = StoredLake(LakeSettings(destination="duckdb", pipelines_dir=str(tmp_path / "dlt")),
                          database)  # fmt: skip
    else:
        lake = StoredLake(
            LakeSettings(bucket_url=str(tmp_path / "lake"), pipelines_dir=str(tmp_path / "dlt"))
        )
    snapshot(pg, lake.settings)
    dlt_dir = tmp_path / "killed-dlt"
    env = replicator_env(pg_dsn, str(tmp_path / "lake"), dlt_dir, batch_max_changes="40",
                         batch_max_seconds="0.3", keyless_tables="insert_only")  # fmt: skip
    env.update(extra)
    command = [str(BIN / "replicator"), "--mode", "cdc"]

    writer = Writer(pg_dsn, seed)
    writer.start()
    started = time.monotonic()
    kills: list[str] = []
    exits: list[str] = []
    runs: list[Path] = []
    try:
        for _ in range(KILLS):
            moment = rng.choice(["after a table's commit", "after a table's commit", "random"])
            log = tmp_path / f"follow-{len(runs)}.log"
            runs.append(log)
            with log.open("w") as out:
                process = subprocess.Popen([*command, "--follow"], cwd=tmp_path, env=env,
                                           stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
                if _kill_when(process, moment, dlt_dir, rng):
                    kills.append(moment)
                else:  # a follow process never ends by itself: that is a failure of its own
                    exits.append(f"exit {process.returncode}: {log.read_text()[-1500:]}")
            _wait_inactive(pg_dsn)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    print(f"{len(kills)} kills in {time.monotonic() - started:.1f} s")
    assert writer.error is None, writer.error
    assert not exits, f"seed {seed}: a follow process ended by itself: {exits[0]}"
    assert len(kills) == KILLS, kills

    started = time.monotonic()
    drain_env = {k: v for k, v in env.items() if not k.endswith(("BATCH_MAX_CHANGES", "SECONDS"))}
    drained = subprocess.run(command, cwd=tmp_path, env=drain_env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    print(f"drain: {time.monotonic() - started:.1f} s")
    (tmp_path / "drain.log").write_text(drained.stderr)
    assert drained.returncode == 0, drained.stderr

    k = sorted((r["id"], r["v"], r["note"]) for r in lake.rows("k"))
    assert k == execute("SELECT id, v, note FROM k ORDER BY id"), f"seed {seed}: k differs"
    stored_h = lake.rows("h")
    h = Counter((r["n"], r["at"]) for r in stored_h)
    source_h = Counter(execute("SELECT n, at FROM h"))
    assert h == source_h, f"seed {seed}: h differs ({kills})\n" + _story(
        stored_h, source_h - h, h - source_h, runs, tmp_path
    )
    f: Counter[tuple[Any, ...]] = Counter()
    for row in lake.rows("f"):
        f[(row["n"], row["label"])] += row["_pg_row_count"]
    assert +f == Counter(execute("SELECT n, label FROM f")), f"seed {seed}: f differs ({kills})"
    print(f"{writer.transactions} transactions, kills: {kills}")
