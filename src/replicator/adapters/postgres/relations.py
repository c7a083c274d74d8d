"""Schema changes in the stream: a Relation message compared with the shape the lake follows.

pgoutput sends a Relation message before a table's first change in a session and again after
its columns changed, always with the shape of the changes that follow (the catalog as of that
WAL position). What changed is read off the two shapes:
- a column whose ``attnum`` survives under a new name was renamed;
- a column only in the new shape was added: rows older than it hold ``attmissingval`` (a
  constant default) or NULL;
- a column only in the old shape was dropped: the lake keeps it;
- a column whose type changed must still fit its lake column (``int`` -> ``bigint``,
  ``varchar(n)`` -> ``text``, a wider ``numeric``); anything else stops CDC before the slot
  moves, naming the column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import pyarrow as pa

from replicator.adapters.postgres.arrow_types import transport_for
from replicator.adapters.postgres.pgoutput import Relation
from replicator.adapters.postgres.text_values import column_from_text
from replicator.domain.model import (
    ColumnSchema,
    ReplicaIdentity,
    SchemaChange,
    TableId,
    TableSchema,
)

log = logging.getLogger(__name__)

# (column name, type oid, typmod) -> the column, described by its type alone.
Describe = Callable[[str, int, int], ColumnSchema]

RESNAPSHOT = "re-run `replicator --mode snapshot` (the slot stays where it was)"


def same_shape(schema: TableSchema, relation: Relation) -> bool:
    known = [(c.name, c.type_oid, c.typmod) for c in schema.columns]
    sent = [(c.name, c.type_oid, c.type_modifier) for c in relation.columns]
    return known == sent


def schema_change(
    before: TableSchema,
    relation: Relation,
    lsn: int,
    current: TableSchema | None,
    missing: dict[str, str | None],
    describe: Describe,
    dropped_attnums: Callable[[], frozenset[int]],
) -> SchemaChange:
    """What changed between ``before`` and the shape ``relation`` announces at ``lsn``.

    ``current``: the table as the catalog describes it now (for type details, key and attnums;
    it may be ahead of the stream), ``missing``: per column, what older rows hold (as text),
    ``describe``: a column from its type alone, where neither shape has it as sent,
    ``dropped_attnums``: those of the table's dropped columns now.
    """
    table_id = before.table_id
    after, aliases, doubt = _shape_of(before, relation, current, describe, dropped_attnums)
    if doubt is not None:
        return SchemaChange(
            table_id,
            before,
            after,
            lsn,
            reload=(
                f"its columns changed several times since the lake last saw it, and the stream "
                f"cannot tell which became which ({doubt})"
            ),
        )
    by_name = {c.name: c for c in before.columns}
    by_attnum = {c.attnum: c for c in before.columns if c.attnum}
    # new column name -> the old column it continues: same name and attnum (an attnum unknown
    # to older checkpoints counts as the same), else same attnum under a new name (renamed).
    matched: dict[str, ColumnSchema] = {}
    for column in after.columns:
        old = by_name.get(column.name)
        if old is not None and (not old.attnum or not column.attnum or old.attnum == column.attnum):
            matched[column.name] = old
    used = {old.name for old in matched.values()}
    renamed: list[tuple[str, str]] = []
    for column in after.columns:
        prior = by_attnum.get(column.attnum) if column.name not in matched else None
        if prior is not None and prior.name not in used:
            matched[column.name] = prior
            used.add(prior.name)
            renamed.append((prior.name, column.name))
    # A column whose attnum is unknown (the catalog changed it again since) continues the old
    # column at the same position with the same type, if that one is otherwise gone: a rename.
    # Not when the catalog has a column of that name elsewhere (a column added, then changed
    # again) and the old one is gone for good: that was a drop and an add.
    live = {c.attnum for c in current.columns} if current is not None else set()
    named = {c.name for c in current.columns} if current is not None else set()
    # Either side's attnum may be the unknown one (a column described by its type alone, then
    # renamed again): the old name must then be gone from the catalog.
    claimed = {c.attnum for c in before.columns if c.attnum}
    for index, column in enumerate(after.columns):
        if column.name in matched or index >= len(before.columns):
            continue
        prior = before.columns[index]
        if column.attnum and prior.attnum:
            continue  # both known: the attnum rule above has decided
        if column.attnum:
            plausible = column.attnum not in claimed and prior.name not in named
        else:
            plausible = prior.attnum in live or column.name not in named
        if prior.name not in used and prior.type_oid == column.type_oid and plausible:
            matched[column.name] = prior
            used.add(prior.name)
            renamed.append((prior.name, column.name))
    added = tuple(
        (c.name, missing.get(aliases.get(c.name, c.name)))
        for c in after.columns
        if c.name not in matched
    )
    for name, value in added:
        if aliases.get(name, name) in missing and value is None:
            log.warning(
                "%s.%s was added with a default that PostgreSQL wrote into the rows (a volatile "
                "default, or the table was rewritten since): rows older than the column keep "
                "NULL in the lake until they change; re-run `replicator --mode snapshot` if "
                "they must hold the default",
                table_id,
                name,
            )
    dropped = tuple(n for n in before.column_names if n not in used)
    retyped = []
    # What the lake cannot follow: reported with the change, for CDC to stop on (unless the
    # change is already in a snapshot of the table, taken later, which the lake then follows).
    problems = []
    for column in after.columns:
        old = matched.get(column.name)
        if old is None or (old.type_oid, old.typmod) == (column.type_oid, column.typmod):
            continue
        problem = _widening_problem(table_id, old, column)
        if problem:
            problems.append(problem)
        retyped.append((column.name, old.pg_type, column.pg_type))
    if before.keyless_full and (added or dropped):
        problems.append(
            f"{table_id}: has no key, so its lake rows are identified by all their values; a "
            f"column added or dropped changes every row's identity; {RESNAPSHOT}"
        )
    if after.primary_key != tuple(_renamed(k, renamed) for k in before.primary_key):
        problems.append(
            f"{table_id}: its primary key changed while replicating (from "
            f"{', '.join(before.primary_key) or 'none'} to {', '.join(after.primary_key) or 'none'}"
            f"): the lake table cannot be re-keyed in place; {RESNAPSHOT}"
        )
    return SchemaChange(
        table_id,
        before,
        after,
        lsn,
        added=added,
        renamed=tuple(renamed),
        dropped=dropped,
        retyped=tuple(retyped),
        problems=tuple(problems),
    )


def defaults_batch(change: SchemaChange) -> pa.RecordBatch:
    """One row holding, for each added or renamed-to column, the value older rows get (NULL for
    renamed ones: they copy the old column), in the column's lake type."""
    names = [n for n, _ in change.added] + [new for _, new in change.renamed]
    values = dict(change.added)
    arrays, fields = [], []
    for name in names:
        transport = transport_for(change.after.column(name))
        arrays.append(column_from_text(transport, [_utf8(values.get(name))]))
        fields.append(pa.field(name, transport.arrow_type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _utf8(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def _renamed(name: str, renamed: list[tuple[str, str]]) -> str:
    for old, new in renamed:
        if old == name:
            return new
    return name


def _shape_of(
    before: TableSchema,
    relation: Relation,
    current: TableSchema | None,
    describe: Describe,
    dropped: Callable[[], frozenset[int]],
) -> tuple[TableSchema, dict[str, str], str | None]:
    """The table's shape as the Relation message announces it, each column with its attnum and
    the catalog's details (type names, array and enum facts) where the catalog still agrees; a
    column the catalog has changed again since is described by its type alone.

    The message carries no attnums, so they are proven, never guessed:
    - by name: the attnum the lake last knew under that name, or the catalog's for it now, when
      the two do not disagree (the catalog's alone is no proof once a column created after the
      lake's shape was dropped again: a name can then have passed from one column to another);
    - by position: the message lists the columns in attnum order, and attnums are never reused
      (pg_attribute keeps dropped ones), so between two columns placed by name lie exactly the
      attnums that existed then; where there are as many of those as unplaced columns, each is
      the next one's.
    The third value says why the attnums could not be proven (the message's columns cannot be
    told from the catalog's: ALTERs of one column with writes between them, while CDC was
    stopped); the lake's table must then be reloaded rather than evolved by a guess. Also
    returned: stream name -> catalog name, where a column was renamed since (the catalog keeps
    its ``attmissingval`` under the newer name).
    """
    now = {c.name: c for c in current.columns} if current is not None else {}
    then = {c.name: c for c in before.columns}
    drops = dropped() if current is not None else frozenset()
    horizon = max((c.attnum for c in before.columns), default=0)
    names_moved = any(attnum > horizon for attnum in drops)
    columns: list[ColumnSchema] = []
    for sent in relation.columns:
        attnum = _attnum_by_name(then.get(sent.name), now.get(sent.name), names_moved)
        for known in (now.get(sent.name), then.get(sent.name)):
            if known is not None and (known.attnum, known.type_oid, known.typmod) == (
                attnum,
                sent.type_oid,
                sent.type_modifier,
            ):
                columns.append(known)
                break
        else:
            column = describe(sent.name, sent.type_oid, sent.type_modifier)
            columns.append(attrs.evolve(column, attnum=attnum))
    aliases: dict[str, str] = {}
    doubt = None
    if current is not None:
        doubt = _place_by_position(columns, current, drops, aliases)
    names = {c.name for c in columns}
    if current is not None and all(k in names for k in current.primary_key):
        key = current.primary_key
    else:
        key = tuple(k for k in before.primary_key if k in names)
    shape = TableSchema(
        before.table_id,
        tuple(columns),
        primary_key=key,
        replica_identity=ReplicaIdentity(relation.replica_identity),
        inserts_only=before.inserts_only,
        deferrable_key=current.deferrable_key if current is not None else before.deferrable_key,
        lake_columns=before.lake_columns,  # chosen by the table's snapshot, never again here
    )
    return shape, aliases, doubt


def _attnum_by_name(then: ColumnSchema | None, now: ColumnSchema | None, names_moved: bool) -> int:
    """A message column's attnum as its name proves it (0: unproven)."""
    known = then.attnum if then is not None else 0
    found = now.attnum if now is not None else 0
    if known and found:
        return known if known == found else 0
    if known:
        return known
    return 0 if names_moved else found


def _place_by_position(
    columns: list[ColumnSchema],
    current: TableSchema,
    drops: frozenset[int],
    aliases: dict[str, str],
) -> str | None:
    """Give the columns without a proven attnum theirs by position (in place), and check that
    the placed ones are in attnum order with no live column missing between them. Why not, if
    they cannot be."""
    sent = {c.name for c in columns}
    # Generated columns a server up to 17 leaves out of the message are not among its columns.
    live = {c.attnum: c for c in current.columns if not c.generated or c.name in sent}
    every = sorted(set(live) | drops)
    placed = [c.attnum for c in columns if c.attnum]
    if placed != sorted(set(placed)):
        return "the columns it names are not in the catalog's order"
    at = 0
    while at < len(columns):
        if columns[at].attnum:
            at += 1
            continue
        end = at
        while end < len(columns) and not columns[end].attnum:
            end += 1
        lower = columns[at - 1].attnum if at else 0
        upper = columns[end].attnum if end < len(columns) else 1 << 30
        between = [a for a in every if lower < a < upper]
        if len(between) != end - at:
            unplaced = ", ".join(c.name for c in columns[at:end])
            return (
                f"the catalog has {len(between)} column(s), live or dropped, where the stream "
                f"has {unplaced}"
            )
        for index, attnum in zip(range(at, end), between, strict=True):
            columns[index] = attrs.evolve(columns[index], attnum=attnum)
            if attnum in live and live[attnum].name != columns[index].name:
                aliases[columns[index].name] = live[attnum].name
        at = end
    highest = max((c.attnum for c in columns), default=0)
    held = {c.attnum for c in columns}
    absent = [c.name for c in live.values() if c.attnum < highest and c.attnum not in held]
    if absent:
        return f"it lacks {', '.join(absent)}, which the catalog has had since before it"
    return None


def _widening_problem(table_id: TableId, old: ColumnSchema, new: ColumnSchema) -> str | None:
    held, needed = transport_for(old).arrow_type, transport_for(new).arrow_type
    if held == needed:
        return None
    return (
        f"{table_id}.{new.name}: its type changed from {old.pg_type} to {new.pg_type}, "
        f"which its lake column ({held}) cannot hold; {RESNAPSHOT}"
    )
