"""Relation messages against the catalog: attnums proven by name or position, or a reload.

A Relation message names a table's columns in attnum order but carries no attnums; the catalog
may be several ALTERs ahead of it (CDC stopped, writes between the ALTERs). Each case is a
history of ALTERs, the message sent in the middle of it, and the catalog at its end.
"""

from __future__ import annotations

from replicator.adapters.postgres.pgoutput import Relation, RelationColumn
from replicator.adapters.postgres.relations import schema_change
from replicator.domain.model import ColumnSchema, SchemaChange, TableId, TableSchema

TABLE = TableId("public", "t")
TYPES = {"int4": (23, -1), "int8": (20, -1), "n7": (1700, 458756), "n11": (1700, 720900)}


def column(name: str, kind: str, attnum: int) -> ColumnSchema:
    oid, typmod = TYPES[kind]
    return ColumnSchema(name, kind, oid, attnum=attnum, typmod=typmod)


def table(*columns: ColumnSchema) -> TableSchema:
    return TableSchema(TABLE, tuple(columns), primary_key=("id",))


def message(*columns: tuple[str, str]) -> Relation:
    return Relation(
        1,
        "public",
        "t",
        "d",
        tuple(RelationColumn(name, *TYPES[kind], is_key=name == "id") for name, kind in columns),
    )


def change(
    lake: TableSchema,
    sent: Relation,
    catalog: TableSchema,
    dropped: frozenset[int] = frozenset(),
    missing: dict[str, str | None] | None = None,
) -> SchemaChange:
    def describe(name: str, type_oid: int, typmod: int) -> ColumnSchema:
        kind = next(k for k, t in TYPES.items() if t == (type_oid, typmod))
        return column(name, kind, 0)

    return schema_change(lake, sent, 0, catalog, missing or {}, describe, lambda: dropped)


def attnums(shape: TableSchema) -> dict[str, int]:
    return {c.name: c.attnum for c in shape.columns}


def test_a_column_added_then_renamed_and_retyped_is_placed_by_position() -> None:
    # ADD c1 numeric(7,0); writes (the message); DROP memo; RENAME c1 TO c3, TYPE numeric(11,0).
    lake = table(column("id", "int4", 1), column("v", "int4", 2), column("memo", "int4", 3))
    sent = message(("id", "int4"), ("v", "int4"), ("memo", "int4"), ("c1", "n7"))
    now = table(column("id", "int4", 1), column("v", "int4", 2), column("c3", "n11", 4))
    found = change(lake, sent, now, frozenset({3}), {"c3": "7"})
    assert found.reload is None
    assert attnums(found.after) == {"id": 1, "v": 2, "memo": 3, "c1": 4}
    assert found.added == (("c1", "7"),)  # the default older rows hold, by the catalog's name
    assert found.dropped == ()


def test_a_column_renamed_twice_continues_under_its_middle_name() -> None:
    # RENAME v TO w; writes (the message); RENAME w TO x.
    lake = table(column("id", "int4", 1), column("v", "int4", 2), column("z", "int4", 3))
    sent = message(("id", "int4"), ("w", "int4"), ("z", "int4"))
    now = table(column("id", "int4", 1), column("x", "int4", 2), column("z", "int4", 3))
    found = change(lake, sent, now)
    assert found.reload is None
    assert found.renamed == (("v", "w"),)
    assert found.added == found.dropped == ()


def test_a_drop_and_an_add_in_one_migration_need_no_reload() -> None:
    lake = table(column("id", "int4", 1), column("a", "int4", 2), column("b", "int4", 3))
    sent = message(("id", "int4"), ("a", "int4"), ("c", "int8"))
    now = table(column("id", "int4", 1), column("a", "int4", 2), column("c", "int8", 4))
    found = change(lake, sent, now, frozenset({3}))
    assert found.reload is None
    assert found.added == (("c", None),)
    assert found.dropped == ("b",)


def test_a_name_dropped_and_added_again_after_the_message_is_reloaded() -> None:
    # ADD c1; writes (the message: c1 is attnum 3); DROP c1; ADD c1 (attnum 4); writes. The
    # catalog's c1 is not the message's, and nothing in the stream says which one it named.
    lake = table(column("id", "int4", 1), column("a", "int4", 2))
    sent = message(("id", "int4"), ("a", "int4"), ("c1", "int4"))
    now = table(column("id", "int4", 1), column("a", "int4", 2), column("c1", "int4", 4))
    found = change(lake, sent, now, frozenset({3}))
    assert found.reload is not None and "c1" in found.reload
    assert found.problems == ()


def test_names_that_disagree_with_the_catalog_order_are_reloaded() -> None:
    # RENAME a TO tmp, b TO a, tmp TO b between the lake's shape and the message, then more:
    # the lake's attnums by name now contradict the message's order.
    lake = table(column("id", "int4", 1), column("a", "int4", 2), column("b", "int4", 3))
    sent = message(("id", "int4"), ("b", "int4"), ("a", "int4"))
    now = table(column("id", "int4", 1), column("p", "int4", 2), column("q", "int4", 3))
    found = change(lake, sent, now)
    assert found.reload is not None


def test_a_message_without_a_column_the_catalog_had_before_it_is_reloaded() -> None:
    lake = table(column("id", "int4", 1), column("a", "int4", 2), column("b", "int4", 3))
    sent = message(("id", "int4"), ("b", "int4"))
    now = table(column("id", "int4", 1), column("a", "int4", 2), column("b", "int4", 3))
    found = change(lake, sent, now)
    assert found.reload is not None and "a" in found.reload
