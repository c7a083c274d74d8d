"""Random ALTER histories against ``schema_change``: every attnum it gives is the true one, or
it asks for a reload.

A history is a table's ALTERs (ADD, DROP, RENAME, ALTER TYPE, names reused after a drop or a
rename) with writes between them. Only the shapes at writes reach the stream, as Relation
messages without attnums; the lake follows the shape of one write (with its true attnums) and
the catalog is at the end of the history. Each message after the lake's write is fed as the
change stream does (``_on_relation``: a message with the lake's names and types is only
compared when the catalog gives one of them another attnum, ``_renumbered``), and the answer
is checked against the history: the attnums, and what was added, renamed and dropped. Once an
answer is a reload, the history ends (the lake then holds the catalog's shape).

Seeded: the seed is printed; ``REPLICATOR_TEST_SEED=<seed>`` replays it. A failure names the
smallest history (shrunk by leaving out events) that still fails, and what went wrong.
"""

from __future__ import annotations

import os
import random

import attrs

from replicator.adapters.postgres.pgoutput import Relation, RelationColumn
from replicator.adapters.postgres.relations import same_shape, schema_change
from replicator.domain.model import ColumnSchema, TableId, TableSchema

TABLE = TableId("public", "t")
# kind -> (type oid, typmod); ALTER TYPE widens int4, numeric(7,0) and varchar(20).
TYPES = {
    "int4": (23, -1),
    "int8": (20, -1),
    "n7": (1700, 458756),
    "n11": (1700, 720900),
    "vc": (1043, 24),
    "text": (25, -1),
}
WIDER = {"int4": "int8", "n7": "n11", "vc": "text"}
NAMES = ("a", "b", "c", "d", "e")  # few, so that names come back
HISTORIES = 400

# One event: ("add", name, kind), ("drop", name), ("rename", old, new), ("retype", name),
# ("write",) or ("lake",): a write whose shape the lake follows.
Event = tuple[str, ...]
# A shape: (attnum, name, kind) in attnum order.
Shape = tuple[tuple[int, str, str], ...]


@attrs.define
class Table:
    """The catalog's truth: live columns by attnum, and the attnums handed out so far."""

    live: dict[int, tuple[str, str]] = attrs.field(factory=lambda: {1: ("id", "int4")})
    next_attnum: int = 2
    dropped: set[int] = attrs.field(factory=set)

    def attnum_of(self, name: str) -> int | None:
        return next((a for a, (n, _) in self.live.items() if n == name), None)

    def apply(self, event: Event) -> bool:
        """Apply one ALTER; False (and no change) if it cannot run on this shape."""
        kind = event[0]
        if kind == "add":
            if self.attnum_of(event[1]) is not None:
                return False
            self.live[self.next_attnum] = (event[1], event[2])
            self.next_attnum += 1
        elif kind == "drop":
            attnum = self.attnum_of(event[1])
            if attnum is None or event[1] == "id":
                return False
            del self.live[attnum]
            self.dropped.add(attnum)
        elif kind == "rename":
            attnum = self.attnum_of(event[1])
            if attnum is None or event[1] == "id" or self.attnum_of(event[2]) is not None:
                return False
            self.live[attnum] = (event[2], self.live[attnum][1])
        elif kind == "retype":
            attnum = self.attnum_of(event[1])
            if attnum is None or self.live[attnum][1] not in WIDER:
                return False
            name, was = self.live[attnum]
            self.live[attnum] = (name, WIDER[was])
        return True

    def shape(self) -> Shape:
        return tuple((a, n, k) for a, (n, k) in sorted(self.live.items()))


def column(name: str, kind: str, attnum: int) -> ColumnSchema:
    oid, typmod = TYPES[kind]
    return ColumnSchema(name, kind, oid, attnum=attnum, typmod=typmod)


def schema(shape: Shape) -> TableSchema:
    return TableSchema(TABLE, tuple(column(n, k, a) for a, n, k in shape), primary_key=("id",))


def message(shape: Shape) -> Relation:
    return Relation(
        1,
        "public",
        "t",
        "d",
        tuple(RelationColumn(n, *TYPES[k], is_key=n == "id") for _, n, k in shape),
    )


def describe(name: str, type_oid: int, typmod: int) -> ColumnSchema:
    return column(name, _kind(ColumnSchema(name, "", type_oid, typmod=typmod)), 0)


def random_history(rng: random.Random) -> list[Event]:
    """ALTERs and writes; one write (not necessarily the first) is the lake's."""
    table = Table()
    events: list[Event] = []
    for name in rng.sample(NAMES, rng.randint(1, 3)):
        events.append(("add", name, rng.choice(("int4", "n7", "vc"))))
        table.apply(events[-1])
    for _ in range(rng.randint(2, 12)):
        if rng.random() < 0.35:
            events.append(("write",))
            continue
        others = [n for n, _ in table.live.values() if n != "id"]
        free = [n for n in NAMES if table.attnum_of(n) is None]
        options: list[Event] = []
        if free:
            options.append(("add", rng.choice(free), rng.choice(("int4", "n7", "vc"))))
        if others:
            options.append(("drop", rng.choice(others)))
            options.append(("retype", rng.choice(others)))
        if others and free:
            options.append(("rename", rng.choice(others), rng.choice(free)))
        event = rng.choice(options)
        if table.apply(event):
            events.append(event)
    events.append(("write",))
    writes = [i for i, e in enumerate(events) if e == ("write",)]
    # Writes before the table's first ALTER are just as good a lake shape as later ones.
    lake = rng.choice(writes[:-1] or writes) if rng.random() < 0.8 else writes[0]
    events[lake] = ("lake",)
    return events


def replay(events: list[Event]) -> tuple[Shape, list[Shape], Table] | None:
    """The lake's shape, the shapes of the writes after it, and the catalog at the end (None if
    the history cannot run, or has no lake's write)."""
    table = Table()
    lake: Shape | None = None
    stream: list[Shape] = []
    for event in events:
        if event[0] == "lake":
            if lake is not None:
                return None
            lake = table.shape()
        elif event[0] == "write":
            if lake is not None:
                stream.append(table.shape())
        elif not table.apply(event):
            return None
    return (lake, stream, table) if lake is not None else None


@attrs.define
class Tally:
    """Histories outside what the check can hold ``schema_change`` to (see the test)."""

    assumed: int = 0  # wrong, where relations.py's one assumption is false
    unseen: int = 0  # never compared (``_renumbered``), though the attnums moved


def first_wrong(events: list[Event], tally: Tally | None = None) -> str | None:
    """What the first wrong answer for this history is, if any."""
    replayed = replay(events)
    if replayed is None:
        return None
    lake_shape, stream, table = replayed
    current = schema(table.shape())
    drops = frozenset(table.dropped)
    now = {c.name: c for c in current.columns}
    lake, known = schema(lake_shape), lake_shape
    for number, truth in enumerate(stream, 1):
        sent = message(truth)
        if same_shape(lake, sent) and all(
            c.name in now and now[c.name].attnum == c.attnum for c in lake.columns
        ):
            # _renumbered: same names and types, and the catalog has each under its attnum.
            if truth != known and tally is not None:
                tally.unseen += 1
            if truth != known:
                return None
            continue
        found = schema_change(lake, sent, 0, current, {}, describe, lambda: drops)
        if found.reload is not None:
            return None  # the lake reloads the table: safe, whatever came before
        given = tuple((c.attnum, c.name, _kind(c)) for c in found.after.columns)
        old = {a: n for a, n, _ in known}
        new = {a: n for a, n, _ in truth}
        expected = (
            sorted(new[a] for a in new if a not in old),
            sorted((old[a], new[a]) for a in new if a in old and old[a] != new[a]),
            sorted(old[a] for a in old if a not in new),
        )
        answered = (
            sorted(n for n, _ in found.added),
            sorted(found.renamed),
            sorted(found.dropped),
        )
        if given != truth or answered != expected:
            if _assumption_false(known, truth, table) and tally is not None:
                tally.assumed += 1
                return None
            return (
                f"message {number}: lake {_show(known)}, truth {_show(truth)}, catalog "
                f"{_show(table.shape())} dropped {sorted(drops)}; got {_show(given)} "
                f"added/renamed/dropped {answered}, expected {expected}"
            )
        lake, known = found.after, truth
    return None


def _assumption_false(known: Shape, truth: Shape, table: Table) -> bool:
    """relations.py assumes, where positions alone leave a choice, that a name the catalog
    gives a column is that column's at the message, if the lake's shape gives it the same
    column, or if the column was added after the lake's shape and no column added since was
    dropped. False if the name was another column's at the message."""
    horizon = max(a for a, _, _ in known)
    moved = any(d > horizon for d in table.dropped)
    lake = {n: a for a, n, _ in known}
    catalog = {n: (a, k) for a, n, k in table.shape()}
    for attnum, name, _ in truth:
        if name not in catalog or catalog[name][0] == attnum:
            continue
        if lake.get(name) == catalog[name][0]:
            return True
        if name not in lake and not moved and catalog[name][0] > horizon:
            return True
    return False


def _kind(column: ColumnSchema) -> str:
    return next(k for k, t in TYPES.items() if t == (column.type_oid, column.typmod))


def _show(shape: Shape) -> str:
    return " ".join(f"{n}:{k}@{a}" for a, n, k in shape)


def shrink(events: list[Event]) -> list[Event]:
    """The history with events left out (one, or two that go together) while it still fails."""
    smaller = True
    while smaller:
        smaller = False
        for index in range(len(events)):
            for width in (1, 2):
                candidate = events[:index] + events[index + width :]
                if first_wrong(candidate) is not None:
                    events, smaller = candidate, True
                    break
            if smaller:
                break
    return events


def test_attnums_are_proven_or_the_table_is_reloaded() -> None:
    seed = int(os.environ.get("REPLICATOR_TEST_SEED", random.SystemRandom().randint(0, 10**6)))
    print(f"random ALTER histories seed: {seed} (replay with REPLICATOR_TEST_SEED={seed})")
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(HISTORIES):
        events = random_history(rng)
        if first_wrong(events, tally) is not None:
            events = shrink(events)
            raise AssertionError(f"seed {seed}: {events}\n{first_wrong(events)}")
    print(f"outside the check: {tally}")
