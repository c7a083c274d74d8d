"""Stored generated columns, which pgoutput does not publish (PostgreSQL up to 17).

A stored generated column's value is a function of the row's other columns, and its expression
is immutable by definition. The stream knows where the columns sit (the catalog's shape), puts a
``GENERATED`` marker there in every decoded row, and before a batch is encoded PostgreSQL
computes the values from the changed row images themselves, in one query per chunk of rows:
``SELECT format('%s', <expression>) FROM (VALUES ($1::type, ...), ...) AS r(<columns>)``, under
the stream's session settings, so each value reads exactly as the snapshot's does.

When a generated column reads an unchanged TOAST value the server did not send (REPLICA
IDENTITY DEFAULT, that column not updated), the image cannot give its value:
- if the expression reads nothing else, the value did not change: the lake keeps the one it
  stores, like the unchanged column itself;
- else the value is the table's own, read from the row (by key) while the columns the change
  sent are still the row's: the unchanged value is then the same too, unless a later change
  changed it, which the stream brings with the exact value. A row changed again since keeps
  the lake's value until its later change arrives, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
from psycopg2 import sql

from replicator.adapters.postgres.pgoutput import UNCHANGED, Relation, RelationColumn
from replicator.domain.model import TableSchema

log = logging.getLogger(__name__)

# Rows computed per query.
CHUNK_ROWS = 1000


class _Generated:
    def __repr__(self) -> str:
        return "GENERATED"


GENERATED: Final = _Generated()

Row = tuple[Any, ...]


def _pending(value: Any) -> bool:
    return value is GENERATED


def with_generated(relation: Relation, schema: TableSchema) -> tuple[Relation, tuple[int, ...]]:
    """``relation`` with the table's stored generated columns it lacks put back in their place
    (after the column that precedes each in the catalog), and their positions in it; the
    relation unchanged and no positions when it lacks none."""
    sent = {c.name for c in relation.columns}
    missing = [c for c in schema.columns if c.generated and c.name not in sent]
    if not missing:
        return relation, ()
    columns: list[RelationColumn] = list(relation.columns)
    order = [c.name for c in schema.columns]
    for column in missing:
        before = order[: order.index(column.name)]
        names = [c.name for c in columns]
        at = max((names.index(n) + 1 for n in before if n in names), default=0)
        columns.insert(at, RelationColumn(column.name, column.type_oid, column.typmod, False))
    positions = tuple(i for i, c in enumerate(columns) if c.name in {m.name for m in missing})
    return attrs.evolve(relation, columns=tuple(columns)), positions


def expander(positions: tuple[int, ...]) -> Callable[[Row], Row]:
    """Puts the marker at ``positions`` (ascending) of a row as the server sent it."""

    def expand(row: Row) -> Row:
        full = list(row)
        for position in positions:
            full.insert(position, GENERATED)
        return tuple(full)

    return expand


def compute(
    query: Callable[[sql.Composable, list[Any]], list[tuple[Any, ...]]],
    schema: TableSchema,
    rows: Sequence[Row],
) -> tuple[list[Row], list[frozenset[int]]]:
    """``rows`` with their markers replaced by the values PostgreSQL computes, and per row the
    positions it could not compute (an unchanged TOAST value among the inputs): those keep the
    lake's stored value."""
    generated = [i for i, c in enumerate(schema.columns) if c.generated]
    inputs = [i for i, c in enumerate(schema.columns) if not c.generated]
    position = {c.name: i for i, c in enumerate(schema.columns)}
    reads = {i: [position[n] for n in schema.columns[i].generated_from] for i in generated}
    out = list(rows)
    kept: list[frozenset[int]] = [frozenset()] * len(rows)
    computable = []
    written: list[tuple[int, frozenset[int]]] = []  # rows whose table row holds the values
    for n, row in enumerate(rows):
        if not any(_pending(row[i]) for i in generated):
            continue
        if UNCHANGED in row:  # generated columns reading an unchanged value
            stale = frozenset(i for i in generated if any(row[j] is UNCHANGED for j in reads[i]))
            if stale:
                kept[n] = stale
                # Reading a value the server sent too, which may have changed: the table's.
                sent = frozenset(i for i in stale if any(row[j] is not UNCHANGED for j in reads[i]))
                if sent and schema.primary_key:
                    written.append((n, sent))
                out[n] = row = tuple(None if j in stale else v for j, v in enumerate(row))
        computable.append(n)
    if written:
        _read_written(query, schema, rows, written, out, kept)
    if not computable:
        return out, kept
    names = sql.SQL(", ").join(sql.Identifier(schema.columns[i].name) for i in inputs)
    cast = sql.SQL(", ").join(
        sql.SQL("%s::{}").format(sql.SQL(schema.columns[i].pg_type)) for i in inputs
    )
    selected = sql.SQL(", ").join(
        _printed(sql.SQL(f"({schema.columns[i].generated})")) for i in generated
    )
    for start in range(0, len(computable), CHUNK_ROWS):
        chunk = computable[start : start + CHUNK_ROWS]
        values = sql.SQL(", ").join(sql.SQL("(%s, {})").format(cast) for _ in chunk)
        statement = sql.SQL(
            "SELECT {selected} FROM (VALUES {values}) AS r(_replicator_row, {names}) "
            "ORDER BY _replicator_row"
        ).format(selected=selected, values=values, names=names)
        params: list[Any] = []
        for ordinal, n in enumerate(chunk):
            params.append(ordinal)
            params.extend(_text(out[n][i]) for i in inputs)
        for n, computed in zip(chunk, query(statement, params), strict=True):
            filled = list(out[n])
            for i, value in zip(generated, computed, strict=True):
                if _pending(filled[i]):
                    filled[i] = None if value is None else value.encode()
            out[n] = tuple(filled)
    return out, kept


def _read_written(
    query: Callable[[sql.Composable, list[Any]], list[tuple[Any, ...]]],
    schema: TableSchema,
    rows: Sequence[Row],
    written: list[tuple[int, frozenset[int]]],
    out: list[Row],
    kept: list[frozenset[int]],
) -> None:
    """Fill ``written`` rows' positions with the table row's values, where the row (by key)
    still holds every value the change sent; the others keep the lake's value."""
    position = {c.name: i for i, c in enumerate(schema.columns)}
    key = [position[k] for k in schema.primary_key]
    columns = sorted(set().union(*(positions for _, positions in written)))
    # Rows sent with the same columns unchanged are read in one query.
    shapes: dict[tuple[int, ...], list[tuple[int, frozenset[int]]]] = {}
    for n, positions in written:
        sent = tuple(
            i
            for i, c in enumerate(schema.columns)
            if not c.generated and rows[n][i] is not UNCHANGED and i not in key
        )
        shapes.setdefault(sent, []).append((n, positions))
    missed = 0
    for sent, group in shapes.items():
        compared = [*key, *sent]
        names = sql.SQL(", ").join(sql.Identifier(schema.columns[i].name) for i in compared)
        # The key by its type (the table's index finds the row), the rest as the stream prints.
        same = sql.SQL(" AND ").join(
            [
                sql.SQL("t.{c} = r.{c}::{t}").format(
                    c=sql.Identifier(schema.columns[i].name), t=sql.SQL(schema.columns[i].pg_type)
                )
                for i in key
            ]
            + [
                # As the stream prints it (::text prints boolean, char(n), inet otherwise).
                sql.SQL("({printed}) IS NOT DISTINCT FROM r.{c}").format(
                    printed=_printed(
                        sql.SQL("t.{}").format(sql.Identifier(schema.columns[i].name))
                    ),
                    c=sql.Identifier(schema.columns[i].name),
                )
                for i in sent
            ]
        )
        selected = sql.SQL(", ").join(
            _printed(sql.SQL("t.{}").format(sql.Identifier(schema.columns[i].name)))
            for i in columns
        )
        table = sql.Identifier(schema.table_id.schema, schema.table_id.name)
        row_values = sql.SQL("({})").format(
            sql.SQL(", ").join([sql.SQL("%s")] * (1 + len(compared)))
        )
        for start in range(0, len(group), CHUNK_ROWS):
            chunk = group[start : start + CHUNK_ROWS]
            statement = sql.SQL(
                "SELECT r._replicator_row, {selected} FROM (VALUES {values}) "
                "AS r(_replicator_row, {names}) JOIN {table} t ON {same}"
            ).format(
                selected=selected,
                values=sql.SQL(", ").join([row_values] * len(chunk)),
                names=names,
                table=table,
                same=same,
            )
            params: list[Any] = []
            for ordinal, (n, _) in enumerate(chunk):
                params += [ordinal, *(_text(rows[n][i]) for i in compared)]
            found = {int(r[0]): r[1:] for r in query(statement, params)}
            for ordinal, (n, positions) in enumerate(chunk):
                if ordinal not in found:
                    missed += 1
                    continue
                filled = list(out[n])
                for i, value in zip(columns, found[ordinal], strict=True):
                    if i in positions:
                        filled[i] = None if value is None else value.encode()
                out[n] = tuple(filled)
                kept[n] = kept[n] - positions
    if missed:
        log.warning(
            "%s: %d row(s) changed again since a change that left a TOASTed value unchanged: "
            "their generated columns keep the lake's value until the stream brings the later "
            "change",
            schema.table_id,
            missed,
        )


def _printed(value: sql.Composable) -> sql.Composable:
    """``value`` as the stream prints it: format('%s') is the type's output function; it makes
    '' of NULL, so NULL is kept apart."""
    return sql.SQL("CASE WHEN {v} IS NULL THEN NULL ELSE format('%%s', {v}) END").format(v=value)


def _text(value: Any) -> str | None:
    if value is None or value is UNCHANGED:  # read by no expression computed here
        return None
    return (
        bytes(value).decode() if isinstance(value, bytes | bytearray | memoryview) else str(value)
    )
