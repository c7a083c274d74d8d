"""Stored generated columns put back into the rows pgoutput sends without them."""

from __future__ import annotations

from typing import Any

from replicator.adapters.postgres.generated import (
    GENERATED,
    compute,
    expander,
    with_generated,
)
from replicator.adapters.postgres.pgoutput import UNCHANGED, Relation, RelationColumn
from replicator.domain.model import ColumnSchema, TableId, TableSchema

TABLE = TableSchema(
    TableId("public", "gen"),
    (
        ColumnSchema("id", "integer", 23),
        ColumnSchema("doubled", "integer", 23, generated="(a * 2)", generated_from=("a",)),
        ColumnSchema("a", "integer", 23),
        ColumnSchema("big", "text", 25),
        ColumnSchema("size", "integer", 23, generated="length(big)", generated_from=("big",)),
    ),
    primary_key=("id",),
)
SENT = Relation(
    1,
    "public",
    "gen",
    "d",
    (
        RelationColumn("id", 23, -1, True),
        RelationColumn("a", 23, -1, False),
        RelationColumn("big", 25, -1, False),
    ),
)


def test_the_relation_gets_the_generated_columns_back_in_their_place() -> None:
    relation, positions = with_generated(SENT, TABLE)
    assert [c.name for c in relation.columns] == ["id", "doubled", "a", "big", "size"]
    assert positions == (1, 4)
    assert expander(positions)((b"1", b"2", b"x")) == (b"1", GENERATED, b"2", b"x", GENERATED)
    assert with_generated(relation, TABLE) == (relation, ())  # sent whole (PostgreSQL 18)


def test_values_are_computed_unless_an_input_was_not_sent() -> None:
    asked: list[list[Any]] = []

    def query(statement: Any, params: list[Any]) -> list[tuple[Any, ...]]:
        asked.append(params)
        return [(str(int(a) * 2) if a else None, str(len(b)) if b else None)
                for _, _, a, b in zip(*[iter(params)] * 4, strict=True)]  # fmt: skip

    rows = [
        (b"1", GENERATED, b"21", b"abc", GENERATED),
        (b"2", GENERATED, b"5", UNCHANGED, GENERATED),  # big unchanged: size keeps its value
        (b"3", GENERATED, None, None, GENERATED),
    ]
    out, kept = compute(query, TABLE, rows)
    assert out == [
        (b"1", b"42", b"21", b"abc", b"3"),
        (b"2", b"10", b"5", UNCHANGED, None),
        (b"3", None, None, None, None),
    ]
    assert kept == [frozenset(), frozenset({4}), frozenset()]
    assert asked == [[0, "1", "21", "abc", 1, "2", "5", None, 2, "3", None, None]]


MIXED = TableSchema(
    TableId("public", "gen"),
    (
        ColumnSchema("id", "integer", 23),
        ColumnSchema("a", "integer", 23),
        ColumnSchema("big", "text", 25),
        ColumnSchema(
            "mix", "text", 25, generated="(a || left(big, 3))", generated_from=("a", "big")
        ),
    ),
    primary_key=("id",),
)


def test_an_expression_reading_an_unchanged_and_a_sent_value_reads_the_table_row() -> None:
    """The sent value may have changed, the unchanged one is not in the image: the table's row
    has the value while it still holds what the change sent (row 2 has changed since)."""
    asked: list[tuple[str, list[Any]]] = []

    def query(statement: Any, params: list[Any]) -> list[tuple[Any, ...]]:
        text = repr(statement)  # without a connection: the composed parts
        asked.append((text, params))
        if "JOIN" in text:
            assert params == [0, "1", "9", 1, "2", "8"]  # row, key, the sent column a
            return [(0, "9abc")]
        return [(None,)] * (len(params) // 3)

    rows = [(b"1", b"9", UNCHANGED, GENERATED), (b"2", b"8", UNCHANGED, GENERATED)]
    out, kept = compute(query, MIXED, rows)
    assert out[0] == (b"1", b"9", UNCHANGED, b"9abc")
    assert kept == [frozenset(), frozenset({3})]  # row 2: the lake's value until its next change
    assert len(asked) == 2
