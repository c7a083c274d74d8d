"""The lake's own columns: the protocol between the encoding of rows and the writing of them.

Every lake table holds, after its source columns, where the row's last change was in the WAL
(``lsn``), when it committed (``commit_ts``) and, for a delete kept as a row, when that
committed (``deleted_ts``). A table without a key (REPLICA IDENTITY FULL) keeps one row per
distinct row image: ``row_key`` (a digest of its values, the lake's key) and ``row_count`` (how
many identical rows the source has). On their way to the lake, change batches also carry, per
row, the columns whose stored value must stay (``unchanged``) and, for a row whose key moved,
where its values are stored (``stored_key(n)``, one per key column): the lake writer reads and
drops these (staging only).

The rule (documented in the README, sections *Names in the lake* and *Metadata columns*):
source columns keep their lake names; a metadata name one of them already has gets the first
free suffix ``_1``, ``_2``, ... (``_pg_lsn`` -> ``_pg_lsn_1``), compared with the columns' lake
names (lower case, see adapters/lake/naming.py). The stored-key columns take a prefix none of
whose ``<prefix><n>`` names is taken (``_pg_stored_key_`` -> ``_pg_stored_key_1_``). The names
are chosen once, when a table is loaded by a snapshot, and kept with its shape in the
checkpoint: a source column dropped later does not move them. A column added later under one of
them stops CDC (``clash``) until a snapshot chooses again.

Not ``__pg_lsn``: dlt's ``sql_ci_v1`` convention, which every lake identifier passes through,
collapses the doubled underscore, so that name would land on ``_pg_lsn`` again. Names with a
suffix are fixed points of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from replicator.domain.model import SchemaChange

LSN = "_pg_lsn"
COMMIT_TS = "_pg_commit_ts"
DELETED_TS = "_pg_deleted_ts"
UNCHANGED = "_pg_unchanged"
STORED_KEY_PREFIX = "_pg_stored_key_"
ROW_KEY = "_pg_row_key"
ROW_COUNT = "_pg_row_count"


@attrs.frozen
class LakeColumns:
    """The names of one table's metadata columns; the defaults are the names of lakes written
    before they were chosen per table."""

    lsn: str = LSN
    commit_ts: str = COMMIT_TS
    deleted_ts: str = DELETED_TS
    unchanged: str = UNCHANGED  # staging only
    stored_key_prefix: str = STORED_KEY_PREFIX  # staging only
    row_key: str = ROW_KEY
    row_count: str = ROW_COUNT

    @classmethod
    def avoiding(cls, taken: Iterable[str], key_size: int) -> LakeColumns:
        """Names colliding with none of ``taken`` (the lake names of the table's source
        columns; a source name equal to a metadata name is already canonical, so it is its own
        lake name), for a table whose key has ``key_size`` columns."""
        used = set(taken)
        chosen = {}
        for field in attrs.fields(cls):
            default: str = field.default
            if field.name == "stored_key_prefix":
                chosen[field.name] = _free_prefix(default, used, key_size)
            else:
                chosen[field.name] = _free_name(default, used)
        return cls(**chosen)

    def stored_key(self, position: int) -> str:
        """The staging column holding the stored row's key column number ``position``."""
        return f"{self.stored_key_prefix}{position}"

    @property
    def written(self) -> tuple[str, str, str]:
        """The columns every lake table has after its source columns, in this order."""
        return (self.lsn, self.commit_ts, self.deleted_ts)

    @property
    def counted(self) -> tuple[str, str]:
        """The columns a table without a key (REPLICA IDENTITY FULL) has after ``written``."""
        return (self.row_key, self.row_count)

    def names(self, key_size: int) -> Iterator[str]:
        """Every name of a table with a key of ``key_size`` columns, in the lake and staging."""
        yield from (*self.written, *self.counted, self.unchanged)
        yield from (self.stored_key(n) for n in range(key_size))


def clash(change: SchemaChange, lake_names: Mapping[str, str]) -> str | None:
    """Why CDC cannot follow ``change``: a column of the new shape (added or renamed by ALTER
    TABLE) whose lake name (``lake_names``: source name -> lake name) is one of the table's
    metadata names. Writing it would mix its values with ours, so CDC stops before the slot
    moves; a snapshot chooses the metadata names again. None when there is no such column."""
    ours = set(change.before.lake_columns.names(len(change.after.primary_key)))
    taken = [c for c in change.after.column_names if lake_names.get(c, c) in ours]
    if not taken:
        return None
    return (
        f"{change.table_id}: column(s) {', '.join(taken)} take the lake name of the table's "
        "own metadata column(s) (see README, Names in the lake); re-run "
        "`replicator --mode snapshot`, which chooses other names for them (the slot stays "
        "where it was)"
    )


def _free_name(name: str, used: set[str]) -> str:
    if name not in used:
        return name
    return next(f"{name}_{n}" for n in itertools.count(1) if f"{name}_{n}" not in used)


def _free_prefix(prefix: str, used: set[str], key_size: int) -> str:
    def free(candidate: str) -> bool:
        return all(f"{candidate}{n}" not in used for n in range(key_size))

    if free(prefix):
        return prefix
    stem = prefix.rstrip("_")
    return next(f"{stem}_{n}_" for n in itertools.count(1) if free(f"{stem}_{n}_"))
