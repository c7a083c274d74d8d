"""Every SQL statement the lake writer makes dlt send to Databricks, recorded offline.

No workspace is needed: ``databricks.sql.connect``, as dlt's Databricks SQL client calls it, is
replaced by a fake DB-API connection to a small in-memory warehouse (``FakeWarehouse``). The
warehouse keeps just enough of what Databricks would (schemas, tables with their columns and
rows, Unity Catalog volumes and the files PUT into them, each table's Delta history with the
session's commit ``userMetadata``) for dlt and the writer to take the paths they take against a
real workspace: a second load finds its tables, the checkpoint is read back from
``_dlt_pipeline_state``, positions from ``DESCRIBE HISTORY``. SELECTs run on sqlglot's Python
executor, MERGE on a small interpreter of its clauses. Parameters are rendered into the
statement by the connector's own escaper, as it does with ``use_inline_params="silent"``.

The scenario (``run_scenario``) drives the real writer once per module: a checkpoint read of an
empty lake, a snapshot, CDC merges of every kind, checkpoint, positions, status and verify reads
by fresh writers (as separate CLI runs make them), a schema change, and the admin commands.
Each statement is recorded with the operation that sent it; the tests check them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import databricks.sdk
import databricks.sql
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from databricks.sql.exc import ServerOperationError
from databricks.sql.utils import ParamEscaper, inject_parameters
from dlt.destinations.impl.databricks.sql_client import DatabricksSqlClient
from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.executor import execute as sqlglot_execute

from replicator.adapters.lake import sql_merge
from replicator.adapters.lake.admin import LakeAdmin, Volume
from replicator.adapters.lake.checkpoint_store import DltCheckpointStore
from replicator.adapters.lake.destinations import CONNECT_BUDGET
from replicator.adapters.lake.lake_rows import DltLakeRowReader
from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.lake.sql_tables import IN_LIST_SIZE
from replicator.adapters.lake.writer import DltLakeWriter
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Checkpoint,
    ColumnSchema,
    Frontier,
    LakeCensus,
    LakeTableInfo,
    ReplicaIdentity,
    SchemaChange,
    TableChanges,
    TableId,
    TableLoad,
    TableSchema,
)
from tests.unit.test_databricks_config import CREDENTIALS

CATALOG = "main"
BRONZE, STAGING = "bronze", "bronze_staging"
USER_METADATA = sql_merge.USER_METADATA

# Statements sqlglot 30's ``databricks`` dialect cannot model: (kind, pattern, why). Each either
# fails to parse or falls back to a bare ``exp.Command``; every other statement must parse to a
# real expression. ``test_the_exemptions_are_still_needed`` keeps the list honest.
KNOWN_UNPARSED: tuple[tuple[str, str, str], ...] = (
    ("PUT", r"PUT '", "volume file upload: only sqlglot's Snowflake dialect has PUT (ParseError)"),
    ("REMOVE", r"REMOVE '", "volume file delete: only Snowflake's dialect has REMOVE (ParseError)"),
    (
        "DESCRIBE HISTORY",
        r"DESCRIBE HISTORY \S+ LIMIT \d+",
        "Delta history: sqlglot parses DESCRIBE HISTORY but not its LIMIT (ParseError)",
    ),
    ("CREATE VOLUME", r"CREATE VOLUME ", "Unity Catalog volume DDL: no VOLUME objects (Command)"),
    ("SHOW VOLUMES", r"SHOW VOLUMES ", "Unity Catalog volume listing: not modelled (Command)"),
)

HISTORY_COLUMNS = (
    "version",
    "timestamp",
    "userId",
    "userName",
    "operation",
    "operationParameters",
    "job",
    "notebook",
    "clusterId",
    "readVersion",
    "isolationLevel",
    "isBlindAppend",
    "operationMetrics",
    "userMetadata",
    "engineInfo",
)
KINDS = (
    "INSERT OVERWRITE",
    "INSERT INTO",
    "MERGE INTO",
    "COPY INTO",
    "CREATE TABLE",
    "CREATE SCHEMA",
    "CREATE VOLUME",
    "ALTER TABLE",
    "TRUNCATE TABLE",
    "DROP SCHEMA",
    "DROP TABLE",
    "DESCRIBE HISTORY",
    "SHOW VOLUMES",
    "SELECT",
    "UPDATE",
    "DELETE FROM",
    "SET",
    "PUT",
    "REMOVE",
)
INFORMATION_SCHEMA = {  # the columns of the views dlt queries
    "columns": (
        "table_catalog",
        "table_schema",
        "table_name",
        "column_name",
        "ordinal_position",
        "data_type",
        "full_data_type",
        "is_nullable",
        "numeric_precision",
        "numeric_scale",
    ),
    "schemata": ("catalog_name", "schema_name"),
}
_QUALIFIED = re.compile(r"`?main`?\.`?(\w+)`?\.`?(\w+)`?", re.IGNORECASE)
_SCHEMA = re.compile(r"`?main`?\.`?(\w+)`?", re.IGNORECASE)
_INFO_SCHEMA = re.compile(r"INFORMATION_SCHEMA\.(\w+)", re.IGNORECASE)


def flat(sql: str) -> str:
    return " ".join(sql.split())


def kind_of(sql: str) -> str:
    text = flat(sql).upper()
    return next((k for k in KINDS if text.startswith(k)), text.split(" ", 1)[0])


def exemption(sql: str) -> tuple[str, str, str] | None:
    text = flat(sql)
    return next((e for e in KNOWN_UNPARSED if re.match(e[1], text, re.IGNORECASE)), None)


@dataclasses.dataclass
class Statement:
    """One statement as the connector would send it (parameters rendered inline)."""

    operation: str
    connection: int
    sql: str
    error: str | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.sql)

    @property
    def text(self) -> str:
        return flat(self.sql)

    @property
    def table(self) -> str | None:
        """``schema.table`` (or ``schema.volume``) of the first table named, else the schema."""
        info = _INFO_SCHEMA.search(self.text)
        if info:
            return f"information_schema.{info[1].lower()}"
        found = _QUALIFIED.search(self.text)
        if found:
            return f"{found[1]}.{found[2]}"
        schema = _SCHEMA.search(self.text)
        return schema[1] if schema else None

    @property
    def label(self) -> str:
        if self.kind in ("PUT", "REMOVE"):
            return f"{self.kind} <volume file>"
        if self.kind == "SET":
            return f"SET {self.text.split(' ', 1)[1]}"
        return f"{self.kind} {self.table or ''}".strip()

    def __str__(self) -> str:
        return f"[{self.operation}#{self.connection}] {self.text[:300]}"


@dataclasses.dataclass
class FakeTable:
    columns: dict[str, tuple[str, bool]]  # name -> (Databricks type, nullable)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def blank(self) -> dict[str, Any]:
        return dict.fromkeys(self.columns)


def _error(code: str, detail: str) -> Exception:
    """What the connector raises for a failed statement (dlt maps it by the code in it)."""
    server_error: Callable[[str], Exception] = ServerOperationError
    return server_error(f"[{code}] {detail}")


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self._connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self._rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, operation: str, parameters: Any = None) -> FakeCursor:
        rendered = operation
        if parameters is not None:  # what the connector does with use_inline_params
            escape: Callable[[Any], Any] = ParamEscaper().escape_args
            rendered = inject_parameters(operation, escape(parameters))
        names, self._rows = self._connection.warehouse.run(self._connection, rendered, parameters)
        self.description = None if names is None else [(n, "string", *[None] * 5) for n in names]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    def close(self) -> None:
        self._rows = []


class FakeConnection:
    def __init__(self, warehouse: FakeWarehouse, number: int, params: Mapping[str, Any]) -> None:
        self.warehouse = warehouse
        self.number = number
        self.operation = warehouse.operation  # the operation that opened it
        self.params = dict(params)
        self.session: dict[str, str] = {}  # SET key = value, per session as on Databricks
        self.staging_allowed_local_path: str | None = None  # dlt sets it before a PUT
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True


class FakeWarehouse:
    """A Databricks SQL warehouse in memory: the statements dlt and the writer send, answered."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.operation = "setup"
        self.statements: list[Statement] = []
        self.connections: list[FakeConnection] = []
        self.schemas: set[str] = set()
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.volumes: set[tuple[str, str]] = set()
        self.staged: dict[str, list[dict[str, Any]]] = {}  # volume file path -> its rows
        self.network: list[str] = []  # attempts to open a socket (none expected)
        self.workspace_clients: list[str] = []  # operations that built a WorkspaceClient

    # -- DB-API entry points ---------------------------------------------------------------

    def connect(self, **params: Any) -> FakeConnection:
        with self._lock:
            connection = FakeConnection(self, len(self.connections) + 1, params)
            self.connections.append(connection)
            return connection

    def run(
        self, connection: FakeConnection, sql: str, parameters: Any
    ) -> tuple[list[str] | None, list[tuple[Any, ...]]]:
        with self._lock:
            record = Statement(self.operation, connection.number, sql)
            self.statements.append(record)
            try:
                return self._dispatch(connection, record, parameters)
            except Exception as e:
                record.error = f"{type(e).__name__}: {e}"
                if isinstance(e, ServerOperationError):
                    raise
                # A statement the fake cannot answer: terminal, so the load fails visibly.
                raise _error("UNSUPPORTED_BY_FAKE", record.error) from e

    def by(self, *operations: str) -> list[Statement]:
        return [s for s in self.statements if s.operation in operations]

    # -- statements ------------------------------------------------------------------------

    def _dispatch(
        self, connection: FakeConnection, record: Statement, parameters: Any
    ) -> tuple[list[str] | None, list[tuple[Any, ...]]]:
        text, kind = record.text, record.kind
        if kind == "SET":
            key, value = (p.strip() for p in text[4:].split("=", 1))
            connection.session[key] = value
            return None, []
        if kind == "SELECT":
            return self._select(sqlglot.parse_one(record.sql, read="databricks"))
        if kind == "DESCRIBE HISTORY":
            match = re.fullmatch(r"DESCRIBE HISTORY (\S+)(?: LIMIT (\d+))?", text, re.I)
            assert match, text
            history = list(reversed(self._table(match[1]).history))
            if match[2]:
                history = history[: int(match[2])]
            return list(HISTORY_COLUMNS), [
                tuple(h.get(c) for c in HISTORY_COLUMNS) for h in history
            ]
        if kind == "SHOW VOLUMES":
            schema = self._schema(text.split(" IN ", 1)[1])
            names = sorted(v for s, v in self.volumes if s == schema)
            return ["database", "volume_name"], [(schema, v) for v in names]
        if kind in ("PUT", "REMOVE", "COPY INTO", "CREATE VOLUME"):
            self._files(connection, kind, text)
            return None, []
        if kind in ("CREATE SCHEMA", "DROP SCHEMA", "CREATE TABLE", "ALTER TABLE"):
            self._ddl(connection, kind, text)
            return None, []
        if kind == "DROP TABLE":
            self.tables.pop(self._key(text.rsplit(" ", 1)[1]), None)
            return None, []
        if kind == "TRUNCATE TABLE":
            table = self._table(text.rsplit(" ", 1)[1])
            table.rows = []
            self._commit(connection, table, "TRUNCATE")
            return None, []
        tree = sqlglot.parse_one(record.sql, read="databricks")
        if isinstance(tree, exp.Insert):
            self._insert(connection, tree, parameters)
        elif isinstance(tree, exp.Merge):
            self._merge(connection, tree)
        elif isinstance(tree, exp.Update):
            self._update(connection, tree)
        else:
            raise NotImplementedError(f"no fake for {kind}")
        return None, []

    # -- names -------------------------------------------------------------------------------

    def _key(self, name: str) -> tuple[str, str]:
        match = _QUALIFIED.fullmatch(name.strip())
        assert match, f"not a {CATALOG}.schema.table name: {name}"
        return match[1].lower(), match[2].lower()

    def _schema(self, name: str) -> str:
        parts = [p.strip("`").lower() for p in name.strip().split(".")]
        assert len(parts) == 2 and parts[0] == CATALOG, name
        if parts[1] not in self.schemas:
            raise _error(
                "SCHEMA_NOT_FOUND", f"The schema `{CATALOG}`.`{parts[1]}` cannot be found."
            )
        return parts[1]

    def _table(self, name: str | exp.Table) -> FakeTable:
        if isinstance(name, exp.Table):
            key = (name.db.lower(), name.name.lower())
        else:
            key = self._key(name)
        if key not in self.tables:
            raise _error("TABLE_OR_VIEW_NOT_FOUND", f"The table or view {name} cannot be found.")
        return self.tables[key]

    def _commit(self, connection: FakeConnection, table: FakeTable, operation: str) -> None:
        """A Delta commit: its operation and the session's userMetadata, as DESCRIBE HISTORY
        shows them."""
        table.history.append(
            {
                "version": len(table.history),
                "timestamp": dt.datetime.now(dt.UTC),
                "operation": operation,
                "userMetadata": connection.session.get(USER_METADATA),
            }
        )

    # -- DDL, volumes and files --------------------------------------------------------------

    def _ddl(self, connection: FakeConnection, kind: str, text: str) -> None:
        if kind == "CREATE SCHEMA":
            match = re.fullmatch(r"CREATE SCHEMA (IF NOT EXISTS )?(\S+)", text, re.I)
            assert match, text
            schema = match[2].split(".")[-1].strip("`").lower()
            if schema in self.schemas and not match[1]:
                raise _error("SCHEMA_ALREADY_EXISTS", schema)
            self.schemas.add(schema)
        elif kind == "DROP SCHEMA":
            match = re.fullmatch(r"DROP SCHEMA IF EXISTS (\S+) CASCADE", text, re.I)
            assert match, text
            schema = match[1].split(".")[-1].strip("`").lower()
            self.schemas.discard(schema)
            self.tables = {k: t for k, t in self.tables.items() if k[0] != schema}
            self.volumes = {v for v in self.volumes if v[0] != schema}
            prefix = f"/Volumes/{CATALOG}/{schema}/"
            self.staged = {p: r for p, r in self.staged.items() if not p.startswith(prefix)}
        elif kind == "CREATE TABLE":
            tree = sqlglot.parse_one(text, read="databricks")
            assert isinstance(tree, exp.Create) and isinstance(tree.this, exp.Schema), text
            target = tree.this.this
            key = (target.db.lower(), target.name.lower())
            self._schema(f"{CATALOG}.{key[0]}")
            if key in self.tables:
                if tree.args.get("exists"):
                    return
                raise _error("TABLE_OR_VIEW_ALREADY_EXISTS", ".".join(key))
            self.tables[key] = FakeTable(_column_defs(tree.this.expressions))
            self._commit(connection, self.tables[key], "CREATE TABLE")
        else:  # ALTER TABLE t ADD COLUMN a ..., b ...
            match = re.fullmatch(r"ALTER TABLE (\S+) ADD COLUMN (.+)", text, re.I)
            if match is None:
                raise NotImplementedError(text)
            table = self._table(match[1])
            create = sqlglot.parse_one(f"CREATE TABLE x ({match[2]})", read="databricks")
            added = _column_defs(create.this.expressions)
            if set(added) & set(table.columns):
                raise _error("FIELDS_ALREADY_EXISTS", ", ".join(sorted(added)))
            table.columns.update(added)
            for row in table.rows:
                row.update(dict.fromkeys(added))
            self._commit(connection, table, "ADD COLUMNS")

    def _files(self, connection: FakeConnection, kind: str, text: str) -> None:
        if kind == "CREATE VOLUME":
            name = text.rsplit(" ", 1)[1]
            catalog, schema, volume = (p.strip("`").lower() for p in name.split("."))
            assert catalog == CATALOG, text
            self._schema(f"{CATALOG}.{schema}")
            self.volumes.add((schema, volume))
        elif kind == "PUT":
            match = re.fullmatch(r"PUT '([^']+)' INTO '([^']+)' OVERWRITE", text, re.I)
            assert match, text
            local, path = match[1], match[2]
            parts = path.split("/")
            assert parts[:3] == ["", "Volumes", CATALOG], path
            if (parts[3], parts[4]) not in self.volumes:
                raise _error("VOLUME_NOT_FOUND", path)
            allowed = connection.staging_allowed_local_path
            if allowed is None or not Path(local).resolve().is_relative_to(Path(allowed).resolve()):
                # The connector refuses uploads outside staging_allowed_local_path.
                raise _error("STAGING_PATH_NOT_ALLOWED", local)
            self.staged[path] = pq.read_table(local).to_pylist()
        elif kind == "REMOVE":
            path = text.split("'")[1]
            self.staged = {
                p: r for p, r in self.staged.items() if p != path and not p.startswith(path + "/")
            }
        else:  # COPY INTO t FROM 'dir' FILEFORMAT = PARQUET
            match = re.fullmatch(r"COPY INTO (\S+) FROM '([^']+)' FILEFORMAT = PARQUET", text, re.I)
            assert match, text
            table = self._table(match[1])
            for path in sorted(p for p in self.staged if p.startswith(match[2] + "/")):
                for row in self.staged[path]:
                    table.rows.append({c: row.get(c) for c in table.columns})
            self._commit(connection, table, "COPY INTO")

    # -- queries -----------------------------------------------------------------------------

    def _information_schema(self) -> dict[str, list[dict[str, Any]]]:
        columns: list[dict[str, Any]] = []
        for (schema, name), table in sorted(self.tables.items()):
            for position, (column, (kind, nullable)) in enumerate(table.columns.items(), 1):
                values: tuple[Any, ...] = (CATALOG, schema, name, column, position)
                values += (kind.split("(")[0].split("<")[0],)
                values += (kind, "YES" if nullable else "NO", None, None)
                columns.append(dict(zip(INFORMATION_SCHEMA["columns"], values, strict=True)))
        schemata = [
            dict(zip(INFORMATION_SCHEMA["schemata"], (CATALOG, s), strict=True))
            for s in sorted(self.schemas)
        ]
        return {"columns": columns, "schemata": schemata}

    def _select(self, tree: exp.Expr) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A SELECT on sqlglot's executor, given only the tables it reads."""
        tables: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {CATALOG: {}}
        types: dict[str, dict[str, dict[str, dict[str, str]]]] = {CATALOG: {}}
        for table in tree.find_all(exp.Table):
            schema, name = table.db.lower(), table.name.lower()
            if schema == "information_schema":
                table.set("catalog", exp.to_identifier(CATALOG))
                rows = self._information_schema()[name]
                columns = {
                    c: "BIGINT" if c == "ordinal_position" else "STRING"
                    for c in INFORMATION_SCHEMA[name]
                }
            else:
                stored = self._table(table)  # TABLE_OR_VIEW_NOT_FOUND, as Databricks says it
                rows = [{**stored.blank(), **r} for r in stored.rows]
                columns = {c: kind for c, (kind, _) in stored.columns.items()}
            tables[CATALOG].setdefault(schema, {})[name] = rows
            types[CATALOG].setdefault(schema, {})[name] = columns
        result = sqlglot_execute(tree, schema=types, tables=tables, dialect="databricks")
        return list(result.columns), [tuple(r) for r in result.rows]

    # -- writes ------------------------------------------------------------------------------

    def _insert(self, connection: FakeConnection, tree: exp.Insert, parameters: Any) -> None:
        target = tree.this
        columns = [i.name for i in target.expressions] if isinstance(target, exp.Schema) else []
        table_expr = target.this if isinstance(target, exp.Schema) else target
        table = self._table(table_expr)
        columns = columns or list(table.columns)
        source = tree.expression
        if isinstance(source, exp.Values):
            if parameters is not None:  # the values as the caller passed them
                values = [tuple(parameters)]
            else:
                values = [tuple(v.to_py() for v in row.expressions) for row in source.expressions]
        else:
            values = self._select(source)[1]
        rows = [{**table.blank(), **dict(zip(columns, v, strict=True))} for v in values]
        table.rows = rows if tree.args.get("overwrite") else table.rows + rows
        self._commit(connection, table, "WRITE")

    def _update(self, connection: FakeConnection, tree: exp.Update) -> None:
        table_expr = tree.this
        table = self._table(table_expr)
        where = tree.args.get("where")
        condition = where.this if where is not None else exp.true()
        sets = [(eq.this.name, eq.expression) for eq in tree.expressions]
        select = exp.select(
            exp.Case().when(condition, exp.true()).else_(exp.false()),
            *[value.copy() for _, value in sets],
        ).from_(table_expr.copy())
        for row, (hit, *values) in zip(table.rows, self._select(select)[1], strict=True):
            if hit:
                row.update({name: value for (name, _), value in zip(sets, values, strict=True)})
        self._commit(connection, table, "UPDATE")

    def _merge(self, connection: FakeConnection, tree: exp.Merge) -> None:
        """MERGE as Delta runs it: each target row matched by at most one source row."""
        target_expr, source_expr = tree.this, tree.args["using"]
        if not isinstance(source_expr, exp.Table):
            raise NotImplementedError("MERGE from a subquery")
        table, source = self._table(target_expr), self._table(source_expr)
        t_alias, s_alias = target_expr.alias_or_name, source_expr.alias_or_name
        pairs = _key_pairs(tree.args["on"], t_alias, s_alias)
        index: dict[tuple[Any, ...], list[int]] = {}
        for i, row in enumerate(table.rows):
            index.setdefault(tuple(row[t] for t, _ in pairs), []).append(i)
        touched: set[int] = set()
        deleted: set[int] = set()
        inserted: list[dict[str, Any]] = []
        whens = tree.args["whens"].expressions
        for source_row in source.rows:
            hits = index.get(tuple(source_row[s] for _, s in pairs), [])
            if len(hits) > 1 or touched & set(hits):
                raise _error("DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE", "")
            env = {s_alias: source_row, t_alias: table.rows[hits[0]] if hits else {}}
            for when in whens:
                if when.args.get("source"):
                    raise NotImplementedError("WHEN NOT MATCHED BY SOURCE")
                if bool(when.args.get("matched")) != bool(hits):
                    continue
                condition = when.args.get("condition")
                if condition is not None and not _value(condition, env):
                    continue
                then = when.args["then"]
                if hits:
                    touched.add(hits[0])
                if isinstance(then, exp.Var) and then.name.upper() == "DELETE":
                    deleted.add(hits[0])
                elif isinstance(then, exp.Update):
                    updates = {eq.this.name: _value(eq.expression, env) for eq in then.expressions}
                    table.rows[hits[0]] = {**table.rows[hits[0]], **updates}
                elif isinstance(then, exp.Insert):
                    names = [c.name for c in then.this.expressions]
                    values = [_value(v, env) for v in then.expression.expressions]
                    inserted.append({**table.blank(), **dict(zip(names, values, strict=True))})
                else:
                    raise NotImplementedError(then.sql())
                break
        table.rows = [r for i, r in enumerate(table.rows) if i not in deleted] + inserted
        self._commit(connection, table, "MERGE")


def _column_defs(definitions: Sequence[exp.Expr]) -> dict[str, tuple[str, bool]]:
    columns = {}
    for definition in definitions:
        assert isinstance(definition, exp.ColumnDef), definition.sql()
        kind = definition.args["kind"].sql("databricks").lower()
        nullable = not any(
            isinstance(c.kind, exp.NotNullColumnConstraint) for c in definition.constraints
        )
        columns[definition.name.lower()] = (kind, nullable)
    return columns


def _key_pairs(on: exp.Expr, target: str, source: str) -> list[tuple[str, str]]:
    """(target column, source column) of an ON made of equalities only."""
    pairs = []
    for eq in on.flatten() if isinstance(on, exp.And) else [on]:
        if not isinstance(eq, exp.EQ):
            raise NotImplementedError(f"MERGE ON {on.sql()}")
        sides = {eq.this.table: eq.this.name, eq.expression.table: eq.expression.name}
        pairs.append((sides[target], sides[source]))
    return pairs


def _value(expression: exp.Expr, env: Mapping[str, Mapping[str, Any]]) -> Any:
    """The few expressions the replicator's MERGE uses, for one target and one source row."""
    if isinstance(expression, exp.Column):
        return env[expression.table][expression.name]
    if isinstance(expression, exp.Null):
        return None
    if isinstance(expression, exp.Paren):
        return _value(expression.this, env)
    if isinstance(expression, exp.Not):
        return not _value(expression.this, env)
    if isinstance(expression, exp.Is) and isinstance(expression.expression, exp.Null):
        return _value(expression.this, env) is None
    if isinstance(expression, exp.And):
        return _value(expression.this, env) and _value(expression.expression, env)
    if isinstance(expression, exp.Or):
        return _value(expression.this, env) or _value(expression.expression, env)
    if isinstance(expression, exp.EQ):
        return _value(expression.this, env) == _value(expression.expression, env)
    raise NotImplementedError(expression.sql())


# -- the scenario ----------------------------------------------------------------------------

UTC = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ID, V = ColumnSchema("id", "integer", 23), ColumnSchema("v", "text", 25)
ITEMS = TableSchema(TableId("public", "items"), (ID, V), ("id",))
GONE = TableSchema(TableId("public", "gone"), (ID, V), ("id",))
SOFT = TableSchema(TableId("public", "soft"), (ID, V), ("id",))
LOG = TableSchema(TableId("public", "log"), (ID, V), inserts_only=True)
TALLY = TableSchema(TableId("public", "tally"), (ID, V), replica_identity=ReplicaIdentity.FULL)
DOCS = TableSchema(
    TableId("public", "docs"),
    (ID, ColumnSchema("n", "integer", 23), ColumnSchema("body", "text", 25)),
    ("id",),
)
TABLES = (ITEMS, GONE, SOFT, LOG, TALLY, DOCS)
TABLE_IDS = frozenset(t.table_id for t in TABLES)
DOCS_ROWS = IN_LIST_SIZE + IN_LIST_SIZE // 2  # stored rows read back in two IN lists
W = ColumnSchema("w", "text", 25)
ITEMS_WITH_W = TableSchema(ITEMS.table_id, (ID, V, W), ("id",))
EVOLVE_LSN = 850

# The operations, in the order the scenario runs them, and the checkpoint each write commits.
SNAPSHOT = "snapshot"
MERGE_KEYED = "merge keyed upsert+delete"
MERGE_TRUNCATED = "merge truncated"
MERGE_INSERT_ONLY = "merge insert-only"
MERGE_SOFT = "merge soft-delete"
MERGE_UNCHANGED = "merge _pg_unchanged"
MERGE_KEYLESS = "merge keyless (row counts)"
MERGE_EMPTY = "merge []"
MERGE_AFTER_EVOLVE = "merge after evolve"
CHECKPOINTS = {
    SNAPSHOT: Checkpoint(Lsn(100), TABLE_IDS),
    MERGE_KEYED: Checkpoint(Lsn(200), TABLE_IDS),
    MERGE_TRUNCATED: Checkpoint(Lsn(300), TABLE_IDS),
    MERGE_INSERT_ONLY: Checkpoint(Lsn(400), TABLE_IDS),
    MERGE_SOFT: Checkpoint(Lsn(500), TABLE_IDS),
    MERGE_UNCHANGED: Checkpoint(Lsn(600), TABLE_IDS),
    MERGE_KEYLESS: Checkpoint(Lsn(700), TABLE_IDS),
    MERGE_EMPTY: Checkpoint(Lsn(800), TABLE_IDS),
    MERGE_AFTER_EVOLVE: Checkpoint(Lsn(900), TABLE_IDS),
}
WRITTEN_BY = {  # the last write of each table
    ITEMS.table_id: MERGE_AFTER_EVOLVE,
    GONE.table_id: MERGE_TRUNCATED,
    LOG.table_id: MERGE_INSERT_ONLY,
    SOFT.table_id: MERGE_SOFT,
    DOCS.table_id: MERGE_UNCHANGED,
    TALLY.table_id: MERGE_KEYLESS,
}
OPERATIONS = (
    "checkpoint (empty lake)",
    SNAPSHOT,
    MERGE_KEYED,
    MERGE_TRUNCATED,
    MERGE_INSERT_ONLY,
    MERGE_SOFT,
    MERGE_UNCHANGED,
    MERGE_KEYLESS,
    MERGE_EMPTY,
    "evolve",
    MERGE_AFTER_EVOLVE,
    "checkpoint",
    "positions",
    "status",
    "verify",
    "volumes",
    "cleanup",
)


def batch(
    table: TableSchema,
    rows: Sequence[tuple[Any, ...]],
    lsn: int,
    deleted: Sequence[bool] = (),
    extra: Mapping[str, pa.Array] | None = None,
) -> pa.RecordBatch:
    """Rows as the change source hands them: source columns, ``_pg_lsn``, ``_pg_commit_ts``,
    ``_pg_deleted_ts`` (set on deletes), then ``extra`` (``_pg_unchanged``, row counts)."""
    marks = list(deleted) or [False] * len(rows)
    arrays: list[pa.Array] = []
    fields = []
    for i, column in enumerate(table.columns):
        kind = pa.int64() if column.pg_type == "integer" else pa.string()
        arrays.append(pa.array([r[i] for r in rows], kind))
        fields.append(pa.field(column.name, kind, nullable=column.name not in table.primary_key))
    arrays += [
        pa.array([lsn] * len(rows), pa.int64()),
        pa.array([T0] * len(rows), UTC),
        pa.array([T0 if m else None for m in marks], UTC),
    ]
    fields += [
        pa.field("_pg_lsn", pa.int64()),
        pa.field("_pg_commit_ts", UTC),
        pa.field("_pg_deleted_ts", UTC),
    ]
    for name, array in (extra or {}).items():
        arrays.append(array)
        fields.append(pa.field(name, array.type, nullable=name != "_pg_row_key"))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def counted(rows: Sequence[tuple[int, str, str, int]], lsn: int) -> pa.RecordBatch:
    """A keyless table's rows: (id, v, row key, count or change in count)."""
    extra = {
        "_pg_row_key": pa.array([r[2] for r in rows], pa.string()),
        "_pg_row_count": pa.array([r[3] for r in rows], pa.int64()),
    }
    return batch(TALLY, [r[:2] for r in rows], lsn, extra=extra)


def unchanged(lists: Sequence[list[str]]) -> dict[str, pa.Array]:
    return {"_pg_unchanged": pa.array(lists, pa.list_(pa.string()))}


@dataclasses.dataclass
class Scenario:
    warehouse: FakeWarehouse
    settings: LakeSettings
    empty_checkpoint: Checkpoint | None = None
    snapshot_infos: list[LakeTableInfo] = dataclasses.field(default_factory=list)
    checkpoint: Checkpoint | None = None
    positions: dict[TableId, Frontier] = dataclasses.field(default_factory=dict)
    status: list[LakeTableInfo] = dataclasses.field(default_factory=list)
    verified: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    census: LakeCensus = dataclasses.field(default_factory=LakeCensus)
    sampled: Sequence[tuple[Any, ...]] = ()
    tally_census: LakeCensus = dataclasses.field(default_factory=LakeCensus)
    tally: list[tuple[tuple[Any, ...], int]] = dataclasses.field(default_factory=list)
    volumes: list[Volume] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    stored: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    staged_left: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def rows(self, table: TableSchema) -> list[dict[str, Any]]:
        """A bronze table's rows before cleanup, by id."""
        return sorted(self.stored[table.table_id.name], key=lambda r: int(r["id"]))


def _offline(warehouse: FakeWarehouse, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    """Credentials from dlt env vars, no workspace SDK, no network, the fake warehouse."""
    monkeypatch.chdir(tmp)
    written_by_the_writer = (  # set in os.environ by destinations.py and dlt_tuning.py
        "DESTINATION__DATABRICKS__CREDENTIALS__CONNECTION_PARAMETERS",
        "DESTINATION__DATABRICKS__KEEP_STAGED_FILES",
        "DESTINATION__FILESYSTEM__DELTALAKE_STREAMED_EXEC",
        "LOAD__RAISE_ON_FAILED_JOBS",
    )
    for key in (
        *written_by_the_writer,
        "DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_ID",
        "DESTINATION__DATABRICKS__CREDENTIALS__CLIENT_SECRET",
    ):
        monkeypatch.setenv(key, "")  # so that undoing the patch removes what the writer sets
        monkeypatch.delenv(key)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")

    def no_workspace(*args: Any, **kwargs: Any) -> Any:
        warehouse.workspace_clients.append(warehouse.operation)
        raise RuntimeError("no Databricks workspace in unit tests")

    def no_network(*args: Any, **kwargs: Any) -> Any:
        warehouse.network.append(f"socket connect {args[1:] or args}")
        raise OSError("no network in unit tests")

    monkeypatch.setattr(databricks.sdk, "WorkspaceClient", no_workspace)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # What dlt's Databricks SQL client opens its connections with: ``databricks_lib.connect``
    # in sql_client.py, the module it also declares as its DB-API.
    assert DatabricksSqlClient.dbapi is databricks.sql
    monkeypatch.setattr(databricks.sql, "connect", warehouse.connect)


def run_scenario(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    warehouse = FakeWarehouse()
    _offline(warehouse, monkeypatch, tmp)
    settings = LakeSettings(destination="databricks", pipelines_dir=str(tmp / "dlt"))
    scenario = Scenario(warehouse, settings)

    def fresh() -> DltLakeWriter:  # another replicator run (status, verify, ...)
        return DltLakeWriter(settings)

    warehouse.operation = "checkpoint (empty lake)"
    scenario.empty_checkpoint = DltCheckpointStore(fresh()).load()

    writer = fresh()
    warehouse.operation = SNAPSHOT
    tally = [(1, "a", "key-a", 2), (2, "b", "key-b", 1)]
    loads = [
        TableLoad(ITEMS, iter([batch(ITEMS, [(1, "a"), (2, "b"), (3, "c")], 100)])),
        TableLoad(GONE, iter([batch(GONE, [(1, "old"), (2, "old")], 100)])),
        TableLoad(SOFT, iter([batch(SOFT, [(1, "a"), (2, "b")], 100)])),
        TableLoad(LOG, iter([batch(LOG, [(1, "x")], 100)])),
        TableLoad(TALLY, iter([counted(tally, 100)])),
        TableLoad(
            DOCS,
            iter([batch(DOCS, [(i, 0, f"body-{i}") for i in range(1, DOCS_ROWS + 1)], 100)]),
        ),
    ]
    scenario.snapshot_infos = writer.replace(loads, CHECKPOINTS[SNAPSHOT])
    scenario.staged_left[SNAPSHOT] = sorted(warehouse.staged)

    changes: dict[str, list[TableChanges]] = {
        # 1 updated, 4 inserted, 2 deleted, 99 deleted without ever being in the lake
        MERGE_KEYED: [
            TableChanges(
                ITEMS,
                batch(
                    ITEMS,
                    [(1, "a2"), (4, "d"), (2, None), (99, None)],
                    200,
                    [False, False, True, True],
                ),
            )
        ],
        MERGE_TRUNCATED: [
            TableChanges(GONE, batch(GONE, [(3, "after truncate")], 300), truncated=True)
        ],
        MERGE_INSERT_ONLY: [TableChanges(LOG, batch(LOG, [(2, "y"), (2, "y")], 400))],
        # 1 updated, 2 deleted by key only: its other values are kept from the lake
        MERGE_SOFT: [
            TableChanges(
                SOFT,
                batch(SOFT, [(1, "a2"), (2, None)], 500, [False, True], unchanged([[], ["v"]])),
                soft_delete=True,
            )
        ],
        # every stored row updated with an unchanged TOAST body, and one new row
        MERGE_UNCHANGED: [
            TableChanges(
                DOCS,
                batch(
                    DOCS,
                    [(i, 1, None) for i in range(1, DOCS_ROWS + 1)] + [(DOCS_ROWS + 1, 1, "new")],
                    600,
                    extra=unchanged([["body"]] * DOCS_ROWS + [[]]),
                ),
            )
        ],
        # key-a counted down to 1, key-b to 0 (deleted), key-c new
        MERGE_KEYLESS: [
            TableChanges(
                TALLY,
                counted([(1, "a", "key-a", -1), (2, "b", "key-b", -1), (3, "c", "key-c", 1)], 700),
            )
        ],
        MERGE_EMPTY: [],
    }
    for operation, change in changes.items():
        warehouse.operation = operation
        writer.merge(change, CHECKPOINTS[operation])
        scenario.staged_left[operation] = sorted(warehouse.staged)

    warehouse.operation = "evolve"
    defaults = pa.record_batch([pa.array(["older"], pa.string())], names=["w"])
    writer.evolve(
        SchemaChange(
            ITEMS.table_id,
            ITEMS,
            ITEMS_WITH_W,
            EVOLVE_LSN,
            added=(("w", "older"),),
            defaults=defaults,
        )
    )

    warehouse.operation = MERGE_AFTER_EVOLVE
    row = batch(ITEMS_WITH_W, [(3, "c2", "w3")], 900)
    writer.merge([TableChanges(ITEMS_WITH_W, row)], CHECKPOINTS[MERGE_AFTER_EVOLVE])

    warehouse.operation = "checkpoint"
    scenario.checkpoint = DltCheckpointStore(fresh()).load()
    warehouse.operation = "positions"
    scenario.positions = fresh().positions(t.table_id for t in TABLES)
    warehouse.operation = "status"
    scenario.status = fresh().describe(
        [t.table_id for t in TABLES], last_change={t.table_id: t.lake_columns for t in TABLES}
    )
    warehouse.operation = "verify"
    reader = DltLakeRowReader(fresh())
    scenario.census = reader.census(SOFT)
    scenario.verified = sorted(
        (r for b in reader.batches(SOFT) for r in zip(*b.columns, strict=True)), key=repr
    )
    scenario.sampled = list(zip(*reader.rows_with_keys(SOFT, [(1,), (2,)]).columns, strict=True))
    scenario.tally_census = reader.census(TALLY)
    scenario.tally = sorted(
        (r, n)
        for b in reader.batches(TALLY)
        for r, n in zip(zip(*b.columns, strict=True), b.counts or (), strict=True)
    )
    scenario.stored = {
        name: [dict(r) for r in table.rows]
        for (schema, name), table in warehouse.tables.items()
        if schema == BRONZE
    }
    warehouse.operation = "volumes"
    scenario.volumes = LakeAdmin(settings).volumes()
    warehouse.operation = "cleanup"
    scenario.removed = LakeAdmin(settings).cleanup()
    warehouse.operation = "done"
    return scenario


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield run_scenario(tmp_path_factory.mktemp("databricks"), monkeypatch)


# -- helpers for the assertions --------------------------------------------------------------


def data_writes(statements: Sequence[Statement]) -> list[Statement]:
    """Writes of rows into a replicated bronze table (not dlt's ``_dlt_*`` tables)."""
    return [
        s
        for s in statements
        if s.kind in ("MERGE INTO", "INSERT OVERWRITE", "INSERT INTO", "UPDATE", "COPY INTO")
        and (s.table or "").startswith(f"{BRONZE}.")
        and not (s.table or "").startswith(f"{BRONZE}._dlt")
    ]


def session(statements: Sequence[Statement], statement: Statement) -> list[Statement]:
    return [s for s in statements if s.connection == statement.connection]


def parsed(statement: Statement) -> exp.Expr:
    tree = sqlglot.parse_one(statement.sql, read="databricks")
    assert tree is not None
    return tree


def merge_of(lake: Scenario, operation: str) -> exp.Merge:
    (merge,) = [s for s in lake.warehouse.by(operation) if s.kind == "MERGE INTO"]
    tree = parsed(merge)
    assert isinstance(tree, exp.Merge)
    return tree


def when(tree: exp.Merge, *, matched: bool) -> list[tuple[str | None, str]]:
    """(condition, action) of a MERGE's WHEN [NOT] MATCHED clauses, as SQL."""
    found = []
    for clause in tree.args["whens"].expressions:
        if bool(clause.args.get("matched")) == matched:
            condition = clause.args.get("condition")
            action = clause.args["then"]
            name = action.name if isinstance(action, exp.Var) else type(action).__name__
            found.append((None if condition is None else condition.sql("databricks"), name))
    return found


# -- the tests -------------------------------------------------------------------------------


class TestTheScenarioRanOffline:
    def test_every_operation_sent_statements_and_none_failed_unexpectedly(
        self, lake: Scenario
    ) -> None:
        sent = {s.operation for s in lake.warehouse.statements}
        assert set(OPERATIONS) <= sent
        failed = [s for s in lake.warehouse.statements if s.error]
        # Only lookups of tables that do not exist yet, which dlt expects and handles.
        assert all("TABLE_OR_VIEW_NOT_FOUND" in (s.error or "") for s in failed), failed
        assert {s.operation for s in failed} <= {"checkpoint (empty lake)", SNAPSHOT}, failed

    def test_nothing_reached_the_network(self, lake: Scenario) -> None:
        assert lake.warehouse.network == []

    def test_connections_render_parameters_inline_with_the_connect_budget(
        self, lake: Scenario
    ) -> None:
        params = [c.params for c in lake.warehouse.connections]
        assert params
        for p in params:
            assert p["use_inline_params"] == "silent"
            assert p["catalog"] == CATALOG
            assert (
                p["server_hostname"]
                == CREDENTIALS["DESTINATION__DATABRICKS__CREDENTIALS__SERVER_HOSTNAME"]
            )
            assert {k: p[k] for k in CONNECT_BUDGET} == CONNECT_BUDGET
        assert all(c.closed for c in lake.warehouse.connections)


class TestStatementsParse:
    def test_every_statement_parses_in_sqlglots_databricks_dialect(self, lake: Scenario) -> None:
        failures = []
        for statement in lake.warehouse.statements:
            if exemption(statement.sql) is not None:
                continue
            try:
                tree = sqlglot.parse_one(statement.sql, read="databricks")
            except ParseError as e:
                failures.append(f"{statement}: {str(e).splitlines()[0]}")
                continue
            if isinstance(tree, exp.Command):
                failures.append(f"{statement}: parsed only as a Command")
        assert failures == []

    def test_the_exemptions_are_still_needed(self, lake: Scenario) -> None:
        for kind, pattern, reason in KNOWN_UNPARSED:
            examples = [
                s for s in lake.warehouse.statements if exemption(s.sql) == (kind, pattern, reason)
            ]
            assert examples, f"no {kind} statement was sent: drop the exemption"
            for statement in examples:
                try:
                    tree = sqlglot.parse_one(statement.sql, read="databricks")
                except ParseError:
                    continue
                assert isinstance(tree, exp.Command), f"sqlglot parses {statement} now: {reason}"

    def test_merges_are_single_line_statements_dlt_does_not_split(self, lake: Scenario) -> None:
        # dlt's SQL job runner splits a job at newlines and semicolons (sql_merge.py).
        for statement in lake.warehouse.statements:
            if statement.kind in ("MERGE INTO", "INSERT OVERWRITE") or (
                statement.kind == "SET" and USER_METADATA in statement.text
            ):
                assert "\n" not in statement.sql.strip() and ";" not in statement.sql


class TestMerges:
    def test_a_keyed_merge_deletes_marked_rows_and_never_inserts_them(self, lake: Scenario) -> None:
        tree = merge_of(lake, MERGE_KEYED)
        assert tree.args["on"].sql("databricks") == "d.`id` = s.`id`"
        assert when(tree, matched=True) == [
            ("NOT s.`_pg_deleted_ts` IS NULL", "DELETE"),
            (None, "Update"),
        ]
        assert when(tree, matched=False) == [("s.`_pg_deleted_ts` IS NULL", "Insert")]
        assert "WHEN NOT MATCHED AND s.`_pg_deleted_ts` IS NULL THEN INSERT" in (
            next(s for s in lake.warehouse.by(MERGE_KEYED) if s.kind == "MERGE INTO").text
        )
        # 2 deleted, 99 (deleted, never stored) not inserted as a row of NULLs
        assert [r["id"] for r in lake.rows(ITEMS)] == [1, 3, 4]

    def test_one_keyed_table_in_a_cdc_batch_costs_these_statements(self, lake: Scenario) -> None:
        """The hot path, a CDC batch of one table: any change here is a cost to review."""
        token = sql_merge.token(CHECKPOINTS[MERGE_KEYED].frontier)
        assert Counter(s.label for s in lake.warehouse.by(MERGE_KEYED)) == Counter(
            {
                # no state query: the writer's one dlt pipeline synced once, at its first load
                "SELECT information_schema.schemata": 3,
                f"SELECT {BRONZE}._dlt_version": 1,
                f"SELECT {STAGING}._dlt_version": 1,
                f"TRUNCATE TABLE {STAGING}.items": 1,
                f"CREATE VOLUME {STAGING}._dlt_staging_load_volume": 1,
                f"CREATE VOLUME {BRONZE}._dlt_staging_load_volume": 1,
                "PUT <volume file>": 2,
                f"COPY INTO {STAGING}.items": 1,
                f"COPY INTO {BRONZE}._dlt_pipeline_state": 1,
                "REMOVE <volume file>": 4,
                f"SET {USER_METADATA} = {token}": 1,
                f"MERGE INTO {BRONZE}.items": 1,
                f"INSERT INTO {BRONZE}._dlt_loads": 1,
            }
        )

    def test_a_soft_delete_merge_keeps_the_row_with_its_stored_values(self, lake: Scenario) -> None:
        tree = merge_of(lake, MERGE_SOFT)
        assert when(tree, matched=True) == [(None, "Update")]
        assert when(tree, matched=False) == [(None, "Insert")]
        rows = lake.rows(SOFT)
        assert [(r["id"], r["v"], r["_pg_deleted_ts"] is not None) for r in rows] == [
            (1, "a2", False),
            (2, "b", True),  # "b" read back from the lake (_pg_unchanged)
        ]

    def test_a_truncated_table_is_replaced_by_one_insert_overwrite(self, lake: Scenario) -> None:
        writes = data_writes(lake.warehouse.by(MERGE_TRUNCATED))
        assert [(w.kind, w.table) for w in writes] == [("INSERT OVERWRITE", "bronze.gone")]
        assert [(r["id"], r["v"]) for r in lake.rows(GONE)] == [(3, "after truncate")]

    def test_an_insert_only_table_is_appended_by_one_insert_select(self, lake: Scenario) -> None:
        writes = data_writes(lake.warehouse.by(MERGE_INSERT_ONLY))
        assert [(w.kind, w.table) for w in writes] == [("INSERT INTO", "bronze.log")]
        assert isinstance(parsed(writes[0]).expression, exp.Select)
        assert [(r["id"], r["v"]) for r in lake.rows(LOG)] == [(1, "x"), (2, "y"), (2, "y")]

    def test_a_keyless_table_counts_identical_rows(self, lake: Scenario) -> None:
        rows = lake.rows(TALLY)
        assert [(r["_pg_row_key"], r["_pg_row_count"]) for r in rows] == [
            ("key-a", 1),
            ("key-c", 1),
        ]

    def test_an_empty_merge_writes_no_table_but_commits_the_checkpoint(
        self, lake: Scenario
    ) -> None:
        statements = lake.warehouse.by(MERGE_EMPTY)
        assert data_writes(statements) == []
        assert [s.table for s in statements if s.kind == "COPY INTO"] == [
            "bronze._dlt_pipeline_state"
        ]


class TestPositions:
    def test_a_set_of_the_commit_metadata_precedes_each_write_to_a_bronze_table(
        self, lake: Scenario
    ) -> None:
        all_statements = lake.warehouse.statements
        writes = [w for w in data_writes(all_statements) if w.operation in CHECKPOINTS]
        assert {w.operation for w in writes} == set(CHECKPOINTS) - {MERGE_EMPTY}
        for write in writes:
            if write.kind == "COPY INTO":  # staging copies go to bronze_staging, never here
                pytest.fail(f"rows copied straight into a bronze table: {write}")
            same = session(all_statements, write)
            at = same.index(write)
            token = sql_merge.token(CHECKPOINTS[write.operation].frontier)
            assert same[at - 1].text == f"SET {USER_METADATA} = {token}", write
            # and nothing of the job after it, which could fail and make dlt run it again
            later = [s for s in same[at + 1 :] if s.operation == write.operation]
            assert not any(s.table == write.table for s in later), write

    def test_a_schema_change_rewrites_older_rows_without_a_position(self, lake: Scenario) -> None:
        statements = lake.warehouse.by("evolve")
        assert [s.kind for s in statements if s.table == "bronze.items"][-2:] == [
            "ALTER TABLE",
            "UPDATE",
        ]
        update = next(s for s in statements if s.kind == "UPDATE")
        assert update.text.endswith(f"WHERE `_pg_lsn` IS NULL OR `_pg_lsn` < {EVOLVE_LSN}")
        assert all(s.kind != "SET" for s in session(lake.warehouse.statements, update))
        assert [(r["id"], r["v"], r["w"]) for r in lake.rows(ITEMS)] == [
            (1, "a2", "older"),
            (3, "c2", "w3"),  # written by the merge after the change
            (4, "d", "older"),
        ]
        # dlt finds the column present in bronze and does not add it again (evolution.py); it
        # adds it only to its staging table
        altered = [
            s.table for s in lake.warehouse.by(MERGE_AFTER_EVOLVE) if s.kind == "ALTER TABLE"
        ]
        assert altered == [f"{STAGING}.items"]

    def test_positions_are_the_newest_tokens_of_each_tables_history(self, lake: Scenario) -> None:
        assert lake.positions == {
            table: CHECKPOINTS[operation].frontier for table, operation in WRITTEN_BY.items()
        }
        histories = [s for s in lake.warehouse.by("positions") if s.kind == "DESCRIBE HISTORY"]
        assert sorted(s.table or "" for s in histories) == sorted(
            f"bronze.{t.table_id.name}" for t in TABLES
        )
        assert all(s.text.endswith(f"LIMIT {sql_merge.HISTORY_DEPTH}") for s in histories)


class TestStagedFiles:
    def test_staged_files_are_removed_after_their_copy_into(self, lake: Scenario) -> None:
        statements = lake.warehouse.statements
        puts = [s for s in statements if s.kind == "PUT"]
        assert puts
        for put in puts:
            file = put.text.split("'")[3]
            folder = file.rsplit("/", 1)[0]
            after = session(statements, put)
            after = after[after.index(put) + 1 :]
            assert [s.kind for s in after[:3]] == ["COPY INTO", "REMOVE", "REMOVE"], put
            assert f"FROM '{folder}'" in after[0].text
            assert [s.text for s in after[1:3]] == [f"REMOVE '{file}'", f"REMOVE '{folder}'"]

    def test_no_load_leaves_files_in_a_volume(self, lake: Scenario) -> None:
        assert lake.staged_left == {operation: [] for operation in lake.staged_left}


class TestStoredRowReads:
    def reads(self, lake: Scenario, operation: str) -> list[Statement]:
        return [
            s
            for s in lake.warehouse.by(operation)
            if s.kind == "SELECT"
            and (s.table or "").startswith(f"{BRONZE}.")
            and not (s.table or "").startswith(f"{BRONZE}._dlt")
        ]

    def test_stored_values_are_read_by_named_columns_in_lists_of_at_most_in_list_size(
        self, lake: Scenario
    ) -> None:
        reads = [
            s for op in (MERGE_UNCHANGED, MERGE_SOFT, MERGE_KEYLESS) for s in self.reads(lake, op)
        ]
        assert len(self.reads(lake, MERGE_UNCHANGED)) == 2  # DOCS_ROWS keys, IN_LIST_SIZE a list
        for read in reads:
            tree = parsed(read)
            assert isinstance(tree, exp.Select)
            assert not any(isinstance(e, exp.Star) for e in tree.expressions), read
            assert all(isinstance(e, exp.Column) for e in tree.expressions), read
            lists = list(tree.find_all(exp.In))
            assert lists and all(len(i.expressions) <= IN_LIST_SIZE for i in lists), read
        columns = [[c.name for c in parsed(r).expressions] for r in reads]
        assert columns == [["id", "body"]] * 2 + [["id", "v"]] + [["_pg_row_key", "_pg_row_count"]]

    def test_unchanged_values_are_filled_from_the_stored_rows(self, lake: Scenario) -> None:
        rows = lake.rows(DOCS)
        assert len(rows) == DOCS_ROWS + 1
        assert all(r["n"] == 1 for r in rows)
        assert [r["body"] for r in rows] == [f"body-{i}" for i in range(1, DOCS_ROWS + 1)] + ["new"]


class TestReads:
    def test_an_empty_lake_has_no_checkpoint(self, lake: Scenario) -> None:
        assert lake.empty_checkpoint is None

    def test_the_checkpoint_is_read_back_from_the_lake(self, lake: Scenario) -> None:
        assert lake.checkpoint is not None
        assert lake.checkpoint.position == CHECKPOINTS[MERGE_AFTER_EVOLVE].position
        assert lake.checkpoint.tables == TABLE_IDS
        (state,) = [s for s in lake.warehouse.by("checkpoint") if s.kind == "SELECT"]
        assert "`_dlt_pipeline_state` AS s JOIN" in state.text

    def test_snapshot_and_status_count_the_rows(self, lake: Scenario) -> None:
        assert {i.lake_name: i.rows for i in lake.snapshot_infos} == {
            "items": 3,
            "gone": 2,
            "soft": 2,
            "log": 1,
            "tally": 2,
            "docs": DOCS_ROWS,
        }
        assert {i.lake_name: (i.rows, i.last_lsn) for i in lake.status} == {
            "items": (3, 900),
            "gone": (1, 300),
            "soft": (2, 500),
            "log": (3, 400),
            "tally": (2, 700),
            "docs": (DOCS_ROWS + 1, 600),
        }
        counts = [s.text for s in lake.warehouse.by("status") if s.kind == "SELECT"][1:]
        assert counts == [
            f"SELECT count(*), max(`_pg_lsn`) FROM `{CATALOG}`.`{BRONZE}`.`{t.table_id.name}`"
            for t in TABLES
        ]

    def test_verify_reads_the_live_rows(self, lake: Scenario) -> None:
        assert lake.verified == [(1, "a2")]
        assert lake.census == LakeCensus(live=1, soft_deleted=1)
        assert lake.sampled == [(1, "a2")]  # the soft-deleted key 2 is not live
        census, live, sampled = [s for s in lake.warehouse.by("verify") if s.table.endswith("soft")]
        table = f"`{CATALOG}`.`{BRONZE}`.`soft`"
        marked = "`_pg_deleted_ts` IS NOT NULL"
        assert census.text == (
            f"SELECT SUM(CASE WHEN NOT ({marked}) THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {marked} AND NOT (`v` IS NULL) THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {marked} AND `v` IS NULL THEN 1 ELSE 0 END), SUM(0) FROM {table}"
        )
        # a whole-table read of the live rows, only the source's columns: one statement whose
        # rows the connector streams
        assert live.text == f"SELECT `id`, `v` FROM {table} WHERE `_pg_deleted_ts` IS NULL"
        assert sampled.text.startswith(f"SELECT `id`, `v`, `_pg_deleted_ts` FROM {table} WHERE")

    def test_verify_reads_counted_rows_with_their_counts(self, lake: Scenario) -> None:
        assert lake.tally_census.live == sum(n for _, n in lake.tally)
        assert lake.tally and all(n > 0 for _, n in lake.tally)

    def test_volumes_and_cleanup(self, lake: Scenario) -> None:
        assert lake.volumes == [
            Volume(BRONZE, "_dlt_staging_load_volume"),
            Volume(STAGING, "_dlt_staging_load_volume"),
        ]
        assert [s.text for s in lake.warehouse.by("cleanup")] == [
            f"DROP SCHEMA IF EXISTS `{CATALOG}`.`{BRONZE}` CASCADE",
            f"DROP SCHEMA IF EXISTS `{CATALOG}`.`{STAGING}` CASCADE",
        ]
        assert lake.removed[:2] == [
            f"schema `{CATALOG}`.`{BRONZE}`",
            f"schema `{CATALOG}`.`{STAGING}`",
        ]
        assert lake.warehouse.schemas == set()


class TestTableFeatures:
    """Tables the replicator creates on Databricks: change data feed and deletion vectors on,
    liquid clustering on the lake key (none for a table without one), as sqlglot reads the
    CREATE TABLE dlt renders."""

    @staticmethod
    def _created(lake: Scenario) -> dict[str, exp.Create]:
        created = {}
        for statement in lake.warehouse.statements:
            if statement.kind == "CREATE TABLE" and statement.table:
                schema, name = statement.table.split(".")
                if schema == BRONZE:
                    created[name] = sqlglot.parse_one(statement.sql, read="databricks")
        return created

    @staticmethod
    def _clustered(tree: exp.Create) -> list[str]:
        found = tree.find(exp.ClusterProperty)
        return [c.name for c in found.expressions] if found is not None else []

    @staticmethod
    def _properties(tree: exp.Create) -> dict[str, str]:
        return {
            p.name: p.args["value"].sql().lower()
            for p in tree.find_all(exp.Property)
            if p.name.startswith("delta.")
        }

    def test_keyed_tables_cluster_by_their_key_with_change_feed_and_deletion_vectors(
        self, lake: Scenario
    ) -> None:
        created = self._created(lake)
        assert self._clustered(created["items"]) == ["id"]
        assert self._properties(created["items"]) == {
            "delta.enableChangeDataFeed": "true",
            "delta.enableDeletionVectors": "true",
        }

    def test_a_keyless_table_clusters_by_its_row_key_and_an_insert_only_one_not_at_all(
        self, lake: Scenario
    ) -> None:
        created = self._created(lake)
        assert self._clustered(created["tally"]) == [TALLY.lake_columns.row_key]
        assert self._clustered(created["log"]) == []
        assert self._properties(created["log"])  # the features all the same


class TestMaintenanceStatements:
    def test_the_table_s_own_retention_by_default(self) -> None:
        from replicator.adapters.lake.maintenance import databricks_statements

        statements = databricks_statements("`main`.`bronze`.`t`", None)
        assert statements == ["OPTIMIZE `main`.`bronze`.`t`", "VACUUM `main`.`bronze`.`t`"]

    def test_a_shorter_retention_turns_the_check_off_for_that_vacuum_only(self) -> None:
        from replicator.adapters.lake.maintenance import databricks_statements

        statements = databricks_statements("`main`.`bronze`.`t`", 24)
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        assert statements == [
            "OPTIMIZE `main`.`bronze`.`t`",
            f"SET {check} = false",
            "VACUUM `main`.`bronze`.`t` RETAIN 24 HOURS",
            f"SET {check} = true",
        ]
        assert databricks_statements("t", 200)[1:] == ["VACUUM t RETAIN 200 HOURS"]
