"""End-to-end latency of ``replicator --mode cdc --follow`` (issue 14 point 4), for ``run.py``.

A steady multi-table workload (transactions of 1 to 10 rows, 70% inserts and 30% updates, over
four tables) runs at a fixed rate of changes per second against a source the replicator
follows into local Delta. A reader in this process tails each table's Delta log (a new
``_delta_log/<version>.json`` is a commit readers can see) every ``POLL_SECONDS`` and reads the
added data files; a row's latency is the moment its insert was first seen in a committed
version minus its ``created`` column (``clock_timestamp()`` at the insert, the same host's
clock, a few microseconds before its commit). Every inserted row is measured; those of the first
``WARM_UP_SECONDS`` are left out. The load generator is a separate process, so its pacing does
not share an interpreter with the reader.

Reported per rate: the rate reached, p50/p95/p99/max latency, p95 over the first and the last
third of the run (a backlog that grows shows as a rising p95), the time the lake took to hold
every row once the load stopped, Delta commits and data files per table at the end, and whether
``replicator verify`` finds the lake equal to the source afterwards.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

TABLES = ("lt1", "lt2", "lt3", "lt4")
PREFILL_ROWS = 5_000  # per table, so updates have rows to change and merges a table to search
DDL = "".join(
    f"CREATE TABLE {t} (id bigint PRIMARY KEY, created timestamptz NOT NULL "
    "DEFAULT clock_timestamp(), v int NOT NULL, note text NOT NULL);"
    f"INSERT INTO {t} (id, v, note) SELECT g, g, md5(g::text) "
    f"FROM generate_series(1, {PREFILL_ROWS}) g;"
    for t in TABLES
)
POLL_SECONDS = 0.02
WARM_UP_SECONDS = 5.0
# Once the load stops, how long the lake may take to hold every row before the run fails.
DRAIN_TIMEOUT_SECONDS = 120.0
_VERSION_FILE = re.compile(r"^(\d{20})\.json$")

# The load generator: paced transactions of 1-10 rows, one connection, printing its totals.
GENERATOR = """
import json, random, sys, time
import psycopg2

dsn, rate, seconds, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tables = sys.argv[5].split(",")
first = int(sys.argv[6])
rng = random.Random(seed)
next_id = {t: first for t in tables}
conn = psycopg2.connect(dsn)
cur = conn.cursor()
changes = transactions = 0
started = time.time()
print(json.dumps({"started": started}), flush=True)
while True:
    now = time.time()
    if now - started >= seconds:
        break
    due = started + changes / rate
    if due > now:
        time.sleep(due - now)
    table, rows = rng.choice(tables), rng.randint(1, 10)
    if rng.random() < 0.7:
        ids = range(next_id[table], next_id[table] + rows)
        next_id[table] += rows
        cur.execute(
            f"INSERT INTO {table} (id, v, note) SELECT g, g, md5(g::text) FROM unnest(%s) g",
            (list(ids),),
        )
    else:
        ids = [rng.randrange(1, next_id[table]) for _ in range(rows)]
        cur.execute(f"UPDATE {table} SET v = v + 1 WHERE id = ANY(%s)", (ids,))
        rows = cur.rowcount
    conn.commit()
    changes += rows
    transactions += 1
ended = time.time()
conn.close()
print(json.dumps({
    "changes": changes, "transactions": transactions, "seconds": ended - started,
    "ended": ended, "last_id": {t: i - 1 for t, i in next_id.items()},
}), flush=True)
"""


@dataclass
class _TableTail:
    """What the reader has seen of one Delta table: its versions and the ids inserted since."""

    path: Path
    first_new_id: int
    version: int = -1
    commits: int = 0
    seen: set[int] = field(default_factory=set)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (created, latency)

    def poll(self) -> None:
        import pyarrow.parquet as pq

        log = self.path / "_delta_log"
        try:
            names = [m for m in map(_VERSION_FILE.match, _listdir(log)) if m]
        except FileNotFoundError:
            return
        for version in sorted(int(m.group(1)) for m in names if int(m.group(1)) > self.version):
            visible = time.time()
            added = []
            for line in (log / f"{version:020d}.json").read_text().splitlines():
                action = json.loads(line)
                if "add" in action:
                    added.append(action["add"]["path"])
            self.version, self.commits = version, self.commits + 1
            for name in added:
                columns = pq.read_table(self.path / name, columns=["id", "created"])
                ids = columns.column("id").to_pylist()
                created = columns.column("created").to_pylist()
                for key, at in zip(ids, created, strict=True):
                    if key >= self.first_new_id and key not in self.seen:
                        self.seen.add(key)
                        stamp = at.timestamp()
                        self.latencies.append((stamp, visible - stamp))


def _listdir(path: Path) -> list[str]:
    import os

    return os.listdir(path)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait_streaming(dsn: str, follower: subprocess.Popen[bytes], log: Path) -> None:
    """Until the follower's slot is active (it streams), or it died."""
    deadline = time.monotonic() + 120
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                if follower.poll() is not None:
                    raise RuntimeError(f"the follower exited: {log.read_text()[-2000:]}")
                cur.execute("SELECT bool_or(active) FROM pg_replication_slots")
                if cur.fetchone()[0]:
                    return
                time.sleep(0.2)
    finally:
        conn.close()
    raise RuntimeError("the follower did not start streaming within 120 s")


def measure(
    dsn: str,
    env: Mapping[str, str],
    lake_tables: Path,
    *,
    rate: float,
    seconds: float,
    seed: int,
    replicator: Path,
    cwd: Path,
) -> dict[str, Any]:
    """One rate: follow, load, tail the lake until it holds every row; the follower is stopped
    (SIGTERM) at the end. The caller snapshotted the tables and checks values afterwards."""
    log = cwd / f"follow-{int(rate)}.log"
    with log.open("wb") as out:
        follower = subprocess.Popen(
            [str(replicator), "--mode", "cdc", "--follow"],
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_streaming(dsn, follower, log)
        first = PREFILL_ROWS + 1
        tails = {t: _TableTail(lake_tables / t, first) for t in TABLES}
        for tail in tails.values():
            tail.poll()  # the snapshot's versions
            tail.commits = 0
        generator = subprocess.Popen(
            [
                sys.executable,
                "-c",
                GENERATOR,
                *(dsn, str(rate), str(seconds), str(seed), ",".join(TABLES), str(first)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert generator.stdout is not None
        started = json.loads(generator.stdout.readline())["started"]
        while generator.poll() is None:
            for tail in tails.values():
                tail.poll()
            time.sleep(POLL_SECONDS)
        if generator.returncode != 0:
            raise RuntimeError(f"the load generator failed with {generator.returncode}")
        totals = json.loads(generator.stdout.read().strip().splitlines()[-1])
        expected = {t: totals["last_id"][t] - first + 1 for t in TABLES}
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while any(len(tails[t].seen) < expected[t] for t in TABLES):
            if time.monotonic() > deadline or follower.poll() is not None:
                missing = {t: expected[t] - len(tails[t].seen) for t in TABLES}
                raise RuntimeError(
                    f"rows never became readable: {missing}; {log.read_text()[-2000:]}"
                )
            for tail in tails.values():
                tail.poll()
            time.sleep(POLL_SECONDS)
        drained = time.time() - totals["ended"]
    finally:
        follower.terminate()
        try:
            follower.wait(60)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
    samples = [
        s for tail in tails.values() for s in tail.latencies if s[0] >= started + WARM_UP_SECONDS
    ]
    latencies = [lat for _, lat in samples]
    third = (seconds - WARM_UP_SECONDS) / 3
    early = [lat for at, lat in samples if at < started + WARM_UP_SECONDS + third]
    late = [lat for at, lat in samples if at >= started + seconds - third]
    return {
        "rate_target": rate,
        "rate_reached": round(totals["changes"] / totals["seconds"], 1),
        "changes": totals["changes"],
        "transactions": totals["transactions"],
        "rows_measured": len(latencies),
        "p50_s": round(_percentile(latencies, 0.50), 3),
        "p95_s": round(_percentile(latencies, 0.95), 3),
        "p99_s": round(_percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies, default=float("nan")), 3),
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "p95_first_third_s": round(_percentile(early, 0.95), 3),
        "p95_last_third_s": round(_percentile(late, 0.95), 3),
        "drained_after_load_s": round(drained, 2),
        "commits_per_table": {t: tails[t].commits for t in TABLES},
        "data_files_per_table": {t: _data_files(lake_tables / t) for t in TABLES},
    }


def _data_files(path: Path) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(str(path)).file_uris())
