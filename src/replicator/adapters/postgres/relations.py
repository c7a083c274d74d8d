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

import itertools
import logging
import math
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

    The message carries no attnums, and names prove none: between two writes a column can be
    renamed into a name another one had, and a column carrying a name can be dropped and the
    name added again. What proves them is position (``_attnums_by_position``): the message
    lists the columns in attnum order, attnums are never reused (pg_attribute keeps dropped
    ones), and the lake's shape and the catalog's bound which attnums existed at the message.
    Names only veto: a name pointing (``_attnum_by_name``) at another attnum than its
    position's says the columns changed places.
    The third value says why the attnums could not be proven (ALTERs of one column with
    writes between them, while CDC was stopped); the lake's table must then be reloaded
    rather than evolved by a guess. Also returned: stream name -> catalog name, where a column
    was renamed since (the catalog keeps its ``attmissingval`` under the newer name).
    """
    now = {c.name: c for c in current.columns} if current is not None else {}
    then = {c.name: c for c in before.columns}
    drops = dropped() if current is not None else frozenset()
    horizon = max((c.attnum for c in before.columns), default=0)
    names_moved = any(attnum > horizon for attnum in drops)
    claims = [
        _attnum_by_name(then.get(sent.name), now.get(sent.name), names_moved)
        for sent in relation.columns
    ]
    attnums = claims
    aliases: dict[str, str] = {}
    doubt = None
    if current is not None:
        sent = {c.name for c in relation.columns}
        # Generated columns a server up to 17 leaves out of the message are not among them.
        live = {c.attnum: c for c in current.columns if not c.generated or c.name in sent}
        pointers = {
            at: now[s.name].attnum
            for at, s in enumerate(relation.columns)
            if s.name in now
            and (
                (s.name in then and then[s.name].attnum == now[s.name].attnum)
                or (s.name not in then and not names_moved and now[s.name].attnum > horizon)
            )
        }
        proven, doubt = _attnums_by_position(relation, before, live, drops, pointers)
        if proven is not None:
            contradicted = [
                s.name
                for s, claim, attnum in zip(relation.columns, claims, proven, strict=True)
                if claim and claim != attnum
            ]
            if contradicted:
                doubt = (
                    f"the columns it names are not in the catalog's order "
                    f"({', '.join(contradicted)})"
                )
            else:
                attnums = proven
                for s, attnum in zip(relation.columns, proven, strict=True):
                    if attnum in live and live[attnum].name != s.name:
                        aliases[s.name] = live[attnum].name
    columns: list[ColumnSchema] = []
    for sent_column, attnum in zip(relation.columns, attnums, strict=True):
        for known in (now.get(sent_column.name), then.get(sent_column.name)):
            if known is not None and (known.attnum, known.type_oid, known.typmod) == (
                attnum,
                sent_column.type_oid,
                sent_column.type_modifier,
            ):
                columns.append(known)
                break
        else:
            column = describe(sent_column.name, sent_column.type_oid, sent_column.type_modifier)
            columns.append(attrs.evolve(column, attnum=attnum))
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
    """The attnum a message column's name points at (0: none): the lake's for that name, or
    the catalog's when the lake has none, and no column created after the lake's shape was
    dropped again. No proof (see ``_shape_of``): only checked against the positions."""
    known = then.attnum if then is not None else 0
    found = now.attnum if now is not None else 0
    if known and found:
        return known if known == found else 0
    if known:
        return known
    return 0 if names_moved else found


def _attnums_by_position(
    relation: Relation,
    before: TableSchema,
    live: dict[int, ColumnSchema],
    drops: frozenset[int],
    pointers: dict[int, int],
) -> tuple[list[int] | None, str | None]:
    """The message's attnums, if only one set of attnums can be the table's at the message;
    else None and why.

    What bounds that set: attnums only grow and are never reused, so
    - it holds the lake's columns that are still live (they lived from the lake's shape on),
      and every live column below its highest attnum (that one lived from before it on);
    - it holds no column dropped before the lake's shape: when the lake's attnums are all
      known, one at or below the lake's highest that the lake does not have;
    - anything else may be in it: a column the lake has and the catalog has dropped since, or
      one added after the lake's shape (dropped again or not).
    Where several sets fit, ``pointers`` (message position -> attnum) choose among them, by
    the one assumption: a name the catalog gives a column is that column's at the message
    when the lake's shape gives it the same column, or when the column was added after the
    lake's shape and no column added since was dropped (a drop and an add in one migration,
    its type changed again since or not). Wrong only if the
    name was another column's at the message (renamed into it, written, then dropped or
    renamed away, and the name given back).
    """
    held = {c.attnum for c in before.columns if c.attnum}
    horizon = max(held, default=0)
    complete = all(c.attnum for c in before.columns)
    maybe = {d for d in drops if d > horizon or d in held or not complete}
    required = held & set(live)
    count = len(relation.columns)
    fits: list[list[int]] = []
    for highest in sorted(set(live) | maybe):
        if required and highest < max(required):
            continue
        base = required | {a for a in live if a < highest} | {highest}
        optional = sorted(d for d in maybe if d < highest and d not in base)
        wanted = count - len(base)
        if not 0 <= wanted <= len(optional):
            continue
        if len(fits) + math.comb(len(optional), wanted) > _MAX_FITS:
            return None, (
                f"the catalog has too many columns, live or dropped, that the stream's "
                f"{_names(relation)} can be"
            )
        fits += (sorted(base | set(c)) for c in itertools.combinations(optional, wanted))
    if not fits:
        names = {c.name for c in relation.columns}
        lacking = [live[a].name for a in sorted(required) if live[a].name not in names]
        lacking = lacking or [live[a].name for a in sorted(required)]
        return None, (
            f"it has {count} column(s) and lacks {', '.join(lacking)}, which the catalog has "
            f"had since before it"
        )
    if len(fits) > 1:
        fits = [f for f in fits if all(f[at] == attnum for at, attnum in pointers.items())]
    if len(fits) == 1:
        return fits[0], None
    return None, (
        f"the catalog has more than one set of columns, live or dropped, that the stream's "
        f"{_names(relation)} can be"
    )


# More ways to read one message than this: reloaded rather than all tried.
_MAX_FITS = 256


def _names(relation: Relation) -> str:
    return ", ".join(c.name for c in relation.columns)


def _widening_problem(table_id: TableId, old: ColumnSchema, new: ColumnSchema) -> str | None:
    held, needed = transport_for(old).arrow_type, transport_for(new).arrow_type
    if held == needed:
        return None
    return (
        f"{table_id}.{new.name}: its type changed from {old.pg_type} to {new.pg_type}, "
        f"which its lake column ({held}) cannot hold; {RESNAPSHOT}"
    )
