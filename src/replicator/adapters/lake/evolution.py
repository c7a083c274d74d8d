"""A source ALTER TABLE applied to a lake table: new columns, their values in older rows, renames.

Rows the lake holds from before the change (the table's ``lsn`` column, ``_pg_lsn`` by default,
below the change's position, or none: a snapshot taken without a slot) get, in each added
column, the value PostgreSQL reports for them (a constant default) and, in a renamed column's
new name, the old column's value. The update is a predicate on that column, so applying it
again after a crash changes nothing more.
Dropped and renamed-away columns stay in the lake; rows written later hold NULL there.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc

from replicator.domain.errors import SourceSchemaError
from replicator.domain.lake_columns import LSN
from replicator.domain.model import SchemaChange

log = logging.getLogger(__name__)


@attrs.frozen
class Plan:
    """What one schema change asks of a lake table, in lake names."""

    table: str  # the source table, for messages
    lsn: int
    fields: tuple[pa.Field, ...]  # columns that must exist
    values: dict[str, pa.Scalar]  # column -> value for older rows (non-NULL only)
    copies: dict[str, str]  # column -> column whose value older rows take
    # Added columns whose older rows hold NULL: only written where the lake column already
    # exists (a column dropped earlier and now added again), else a new column is NULL anyway.
    nulls: tuple[str, ...] = ()
    # The table's WAL position column (its ``LakeColumns.lsn``): which rows are older.
    lsn_column: str = LSN

    @property
    def older_rows(self) -> str:
        # Unquoted: metadata names are sql_ci_v1 fixed points (lower case, digits, ``_``).
        return f"{self.lsn_column} IS NULL OR {self.lsn_column} < {int(self.lsn)}"

    def older_rows_of(self, alias: str) -> str:
        """``older_rows`` for a MERGE, where the target's columns carry its alias."""
        column = f"{alias}.{self.lsn_column}"
        return f"{column} IS NULL OR {column} < {int(self.lsn)}"


def plan(
    change: SchemaChange, before: dict[str, str], after: dict[str, str], lsn_column: str
) -> Plan | None:
    """``before``/``after``: source column name -> lake column name, for each shape;
    ``lsn_column``: the table's WAL position column."""
    if not change.added and not change.renamed:
        return None
    defaults: Any = change.defaults
    assert defaults is not None, "the change source attaches the added columns' values"
    fields = tuple(pa.field(after[f.name], f.type, nullable=True) for f in defaults.schema)
    values = {
        after[name]: defaults.column(name)[0] for name, text in change.added if text is not None
    }
    copies = {after[new]: before[old] for old, new in change.renamed}
    nulls = tuple(after[name] for name, text in change.added if text is None)
    return Plan(str(change.table_id), change.lsn, fields, values, copies, nulls, lsn_column)


def check_types(plan: Plan, present: dict[str, pa.DataType]) -> None:
    """A column the lake already has (dropped, then added again) must keep its lake type."""
    for field in plan.fields:
        held = present.get(field.name)
        if held is not None and held != field.type:
            raise SourceSchemaError(
                f"{plan.table}.{field.name}: the lake column (from an earlier, dropped column) "
                f"holds {held}, the new source column needs {field.type}; re-run "
                "`replicator --mode snapshot` (the slot stays where it was)"
            )


def evolve_delta(delta: Any, plan: Plan) -> None:
    """Delta via delta-rs: add the columns (metadata only), then one UPDATE of older rows."""
    from deltalake import Schema

    arrow = pa.schema(delta.schema().to_arrow())  # arro3 -> pyarrow, via the C interface
    present = {f.name: f.type for f in arrow}
    check_types(plan, _comparable(present))
    missing = [f for f in plan.fields if f.name not in present]
    if missing:
        delta.alter.add_columns(list(Schema.from_arrow(pa.schema(missing)).fields))
    updates = {column: _quote_ident(source) for column, source in plan.copies.items()}
    updates.update({column: "NULL" for column in plan.nulls if column in present})
    typed: dict[str, pa.Scalar] = {}  # values no SQL literal can spell: lists, binary
    for column, value in plan.values.items():
        literal = _delta_literal(value)
        if literal is None:
            typed[column] = value
        else:
            updates[column] = literal
    if updates:
        delta.update(updates=updates, predicate=plan.older_rows)
    if typed:
        # A MERGE from a one-row table of the values: every older row matches it and takes
        # them as they are typed, with no text in between.
        names = list(typed)
        source = pa.Table.from_arrays(
            [pa.array([typed[n].as_py()], typed[n].type) for n in names], names=names
        )
        older = plan.older_rows_of("target")
        (
            delta.merge(source, predicate="true", source_alias="source", target_alias="target")
            .when_matched_update(
                updates={_quote_ident(n): f"source.{_quote_ident(n)}" for n in names},
                predicate=older,
            )
            .execute()
        )


def evolve_sql(pipeline: Any, table: str, plan: Plan) -> None:
    """DuckDB, Databricks: ALTER TABLE ADD COLUMN in dlt's own column types, then one UPDATE.
    dlt later finds the columns present and does not add them again."""
    from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns

    with pipeline.sql_client() as client, pipeline.destination_client() as job_client:
        qualified = client.make_qualified_table_name(table)
        with client.execute_query(f"SELECT * FROM {qualified} LIMIT 0") as cursor:
            present = {d[0] for d in cursor.description}
        columns = py_arrow_to_table_schema_columns(pa.schema(list(plan.fields)))
        stored = pipeline.default_schema.tables.get(table, {"name": table, "columns": {}})
        for field in plan.fields:
            if field.name not in present:
                definition = job_client._get_column_def_sql(columns[field.name], stored)
                client.execute_sql(f"ALTER TABLE {qualified} ADD COLUMN {definition}")
        sets, args = [], []
        for column, source in plan.copies.items():
            sets.append(
                f"{client.escape_column_name(column)} = {client.escape_column_name(source)}"
            )
        for column, value in plan.values.items():
            sets.append(f"{client.escape_column_name(column)} = %s")
            args.append(value.as_py())
        sets += [f"{client.escape_column_name(c)} = NULL" for c in plan.nulls if c in present]
        if sets:
            lsn = client.escape_column_name(plan.lsn_column)
            client.execute_sql(
                f"UPDATE {qualified} SET {', '.join(sets)} "
                f"WHERE {lsn} IS NULL OR {lsn} < {int(plan.lsn)}",
                *args,
            )


def _comparable(types: dict[str, pa.DataType]) -> dict[str, pa.DataType]:
    """delta-rs reports timestamps as timestamp[us, tz=UTC] and strings as large or view types
    in some versions: compare the logical type only."""
    out = {}
    for name, kind in types.items():
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
            kind = pa.binary()
        out[name] = kind
    return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _delta_literal(value: pa.Scalar) -> str | None:
    """A SQL string literal delta-rs casts to the column's type (numbers, dates, timestamps,
    booleans, text); None for types it cannot take from text (lists, binary)."""
    kind = value.type
    if pa.types.is_nested(kind) or pa.types.is_binary(kind):
        return None
    text = pc.cast(value, pa.string()).as_py()
    return "'" + str(text).replace("'", "''") + "'"
