"""The change stream: pgoutput over psycopg2's ``LogicalReplicationConnection``.

Messages are decoded as they arrive and assembled into whole transactions; values stay text
until a batch is cut, then only the rows that survived compaction are converted, column by
column (``text_values``), into the same Arrow types the snapshot produces.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import attrs
import psycopg2
import psycopg2.extras

from replicator.adapters.postgres import generated as generated_columns
from replicator.adapters.postgres.batch_encoder import PgBatchEncoder
from replicator.adapters.postgres.catalog import PostgresTableCatalog
from replicator.adapters.postgres.connection import (
    connect,
    connection,
    startup_options,
    translate_error,
)
from replicator.adapters.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Relation,
    Truncate,
    decode,
    decode_tuple,
    relation_id_of,
    update_tuples,
)
from replicator.adapters.postgres.relations import defaults_batch, same_shape, schema_change
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import (
    drop_slot,
    ensure_publication,
    pipeline_lock,
    read_slot,
    server_position,
    slot_exists,
    source_identity,
)
from replicator.domain.errors import SourceUnavailableError
from replicator.domain.lsn import Lsn
from replicator.domain.model import (
    Change,
    ChangeKind,
    Idle,
    SchemaChange,
    SlotState,
    SourceIdentity,
    StreamEvent,
    TableId,
    TableSchema,
    TransactionEnd,
    TransactionStart,
    Truncation,
)
from replicator.domain.ports import ChangeSource, ChangeStream

log = logging.getLogger(__name__)

_INSERT, _UPDATE, _DELETE, _OLD_ROW = b"I"[0], b"U"[0], b"D"[0], b"O"[0]
_ROW_KINDS = frozenset((_INSERT, _UPDATE, _DELETE))
_NONE_UNCHANGED: frozenset[int] = frozenset()
HEARTBEAT_PREFIX = "replicator_heartbeat"
_IDLE_POLL_SECONDS = 0.5
_KEEPALIVE_SECONDS = 5.0
_ACK_WAIT_SECONDS = 5.0


class _RelationInfo:
    __slots__ = ("deferrable", "expand", "key_of", "table_id")

    def __init__(
        self,
        schema: TableSchema,
        key_idx: tuple[int, ...],
        rows: Iterator[int],
        generated: tuple[int, ...] = (),
    ) -> None:
        self.table_id = schema.table_id
        self.deferrable = schema.deferrable_key
        # Stored generated columns the server does not send: a marker in their place.
        self.expand = generated_columns.expander(generated) if generated else None
        self.key_of: Callable[[tuple[Any, ...]], tuple[Any, ...]]
        # Keys are tuples; itemgetter builds them in C (one index needs the 1-tuple by hand).
        if not key_idx:
            # No key at all: a fresh one per row, so no two rows ever merge. From the stream's
            # one counter: the server sends a table's Relation message again after any cache
            # invalidation (an autovacuum ANALYZE is enough), and a counter per message would
            # hand out keys again that rows earlier in the batch hold, which then vanish.
            self.key_of = lambda row: (next(rows),)
        elif len(key_idx) == 1:
            only = key_idx[0]
            self.key_of = lambda row: (row[only],)
        else:
            self.key_of = operator.itemgetter(*key_idx)


class PgOutputStream(ChangeStream):
    def __init__(
        self, settings: PostgresSettings, tables: Sequence[TableSchema], start: Lsn, slot: str
    ) -> None:
        self._settings = settings
        self._slot = slot
        self._tables = {t.table_id: t for t in tables}
        self._relations: dict[int, _RelationInfo] = {}
        self._row_numbers = itertools.count()  # the keys of rows of tables without a key
        self._lock = threading.Lock()
        self._acked: Lsn | None = None
        self._size = 0  # row data bytes of the transaction in flight
        # Shapes of tables whose Relation messages changed, on one connection for the session.
        self._catalog = PostgresTableCatalog(settings, keep_open=True)
        self._encoder = PgBatchEncoder(self._catalog)
        self._conn = connect(
            settings,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            options=startup_options(),
        )
        self._cur = self._conn.cursor()
        publications = [settings.pub_name]
        if any(t.inserts_only for t in tables):
            publications.append(settings.inserts_pub_name)
        options = {"proto_version": "1", "publication_names": ",".join(map(_quote, publications))}
        if self._conn.server_version >= 140000:
            options["messages"] = "true"
        try:
            self._cur.start_replication(
                slot_name=slot,
                decode=False,
                start_lsn=int(start),
                options=options,
                status_interval=10,
            )
        except psycopg2.Error as e:
            self._conn.close()
            raise translate_error(e, f"starting replication from slot {slot!r}") from e
        self._position = start

    # -- reading -----------------------------------------------------------------------------

    def events(self) -> Iterator[StreamEvent]:
        cur = self._cur
        relations = self._relations
        xid = 0
        # Shape changes announced by Relation messages, per table, until its next change.
        pending: dict[TableId, list[SchemaChange]] = {}
        in_transaction = False
        last_prompt = 0.0
        last_beat = time.monotonic()
        heartbeat = self._settings.heartbeat_s
        while True:
            try:
                with self._lock:
                    message = cur.read_message()
            except psycopg2.Error as e:
                raise translate_error(e, "reading the replication stream") from e
            if message is None:
                if not in_transaction:
                    yield Idle(Lsn(max(cur.wal_end, int(self._position))))
                now = time.monotonic()
                if now - last_prompt >= _IDLE_POLL_SECONDS:
                    # Wake the server: once it has sent everything and waits for WAL, it answers
                    # with a keepalive whose WAL position tells when a drain is complete. Never
                    # ask for a reply: the server answers that at once, even in the middle of
                    # sending a transaction, and psycopg2, seeing our acknowledgement at or past
                    # the last message read (an early change of a transaction that began before
                    # the one acknowledged), would report the keepalive's position as flushed
                    # by itself, moving the slot past transactions received but not yet written
                    # to the lake. A keepalive sent unasked follows whole transactions only.
                    with self._lock:
                        cur.send_feedback(force=True)
                    last_prompt = now
                if heartbeat and not in_transaction and now - last_beat >= heartbeat:
                    self._heartbeat()
                    last_beat = now
                watched = [self._conn, *self._catalog.idle_sockets()]
                readable, _, _ = select.select(watched, [], [], _IDLE_POLL_SECONDS)
                if any(r is not self._conn for r in readable):
                    # The idle catalog session heard from the server unasked: it was ended, as
                    # a shutting-down server ends every plain session first. The server then
                    # waits for this stream to end, which nothing else would make it do (the
                    # slot is confirmed only up to the lake), so it ends here; the run
                    # reconnects once the server is back (`--follow`), losing nothing.
                    raise SourceUnavailableError(
                        "the source PostgreSQL ended our session (shutting down or restarting?)"
                    )
                continue
            payload = message.payload
            kind = payload[0]
            # The hot path: row changes are decoded straight into domain changes, values kept
            # as UTF-8 bytes until a batch converts whole columns.
            if kind in _ROW_KINDS:
                info = relations.get(relation_id_of(payload))
                if info is None:
                    continue  # published, but not one of ours
                if pending and info.table_id in pending:  # its first change in the new shape
                    for change in pending.pop(info.table_id):
                        yield attrs.evolve(change, lsn=message.data_start)
                self._size += len(payload)
                if kind == _INSERT:
                    row, _ = decode_tuple(payload, 6, raw=True)
                    if info.expand is not None:
                        row = info.expand(row)
                    yield Change(
                        info.table_id, ChangeKind.INSERT, message.data_start, info.key_of(row), row
                    )
                elif kind == _UPDATE:
                    yield self._update(info, payload, message.data_start)
                else:
                    old, _ = decode_tuple(payload, 6, raw=True)
                    if info.expand is not None:
                        old = info.expand(old)
                    key = info.key_of(old)
                    image = old if payload[5] == _OLD_ROW else None
                    yield Change(info.table_id, ChangeKind.DELETE, message.data_start, key, image)
                continue
            decoded = decode(payload)
            if isinstance(decoded, Begin):
                in_transaction, self._size, xid = True, 0, decoded.xid
                yield TransactionStart(xid, decoded.commit_ts, Lsn(decoded.final_lsn))
            elif isinstance(decoded, Commit):
                in_transaction = False
                end = Lsn(decoded.end_lsn)
                self._position = max(self._position, end)
                size, self._size = self._size, 0
                yield TransactionEnd(xid, end, size)
            elif isinstance(decoded, Relation):
                # Sent just before the table's next change (or TRUNCATE), which has the new
                # shape; Relation messages themselves carry no WAL position.
                announced = self._on_relation(decoded)
                if announced is not None:
                    pending.setdefault(announced.table_id, []).append(announced)
            elif isinstance(decoded, Truncate):
                ids = tuple(relations[r].table_id for r in decoded.relation_ids if r in relations)
                for table_id in ids:
                    for change in pending.pop(table_id, ()):
                        yield attrs.evolve(change, lsn=message.data_start)
                if ids:
                    yield Truncation(ids, message.data_start)
            # Type, Origin and logical Message carry nothing to apply.

    def _heartbeat(self) -> None:
        """A non-transactional logical message: WAL in our database for the walsender to pass."""
        try:
            with connection(self._settings) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_logical_emit_message(false, %s, now()::text)",
                        (HEARTBEAT_PREFIX,),
                    )
        except psycopg2.Error as e:
            log.warning("heartbeat failed (will retry): %s", str(e).strip().splitlines()[0])

    def _renumbered(
        self, schema: TableSchema
    ) -> tuple[TableSchema | None, dict[str, str | None]] | None:
        """Same names and types can still hide a column dropped and added again under its name:
        it has a new attnum, which only the catalog tells. The catalog's view if so, else None."""
        if not any(c.attnum for c in schema.columns):
            return None  # a shape from an older checkpoint: no attnums to compare
        current, missing = self._catalog.describe(schema.table_id)
        now = {c.name: c.attnum for c in current.columns} if current is not None else {}
        # A name the catalog no longer has may have been dropped and added again (under a new
        # attnum) before the message, then dropped once more: only the attnums can tell.
        if all(now.get(c.name) == c.attnum for c in schema.columns if c.attnum):
            return None
        return current, missing

    @staticmethod
    def _update(info: _RelationInfo, payload: bytes, lsn: int) -> Change:
        row, marker, old = update_tuples(payload, raw=True)
        if info.expand is not None:
            row = info.expand(row)
            old = None if old is None else info.expand(old)
        if marker == "O" and old is not None and UNCHANGED in row:
            # REPLICA IDENTITY FULL: the old row is whole, unchanged values are in it.
            row = tuple(
                was if value is UNCHANGED else value for value, was in zip(row, old, strict=True)
            )
        key = info.key_of(row)
        old_key = None
        if old is not None:
            before = info.key_of(old)
            # 'O' (REPLICA IDENTITY FULL) always sends the old row; only a moved key matters.
            old_key = before if before != key else None
        unchanged = (
            frozenset(i for i, v in enumerate(row) if v is UNCHANGED)
            if UNCHANGED in row
            else _NONE_UNCHANGED
        )
        old_row = old if info.deferrable and marker == "O" else None
        return Change(info.table_id, ChangeKind.UPDATE, lsn, key, row, old_key, unchanged, old_row)

    def _on_relation(self, relation: Relation) -> SchemaChange | None:
        """Register a relation; if its shape differs from the one the lake follows, say how."""
        table_id = TableId(relation.namespace, relation.name)
        schema = self._tables.get(table_id)
        if schema is None:
            return None  # published, but not ours to replicate
        change = None
        catalog = self._catalog
        # Stored generated columns the server leaves out (up to PostgreSQL 17) stay in place.
        relation, generated = generated_columns.with_generated(relation, schema)
        found = (
            self._renumbered(schema) if same_shape(schema, relation) else catalog.describe(table_id)
        )
        if found is not None:
            current, missing = found
            change = schema_change(
                schema,
                relation,
                0,
                current,
                missing,
                functools.partial(catalog.column_of_type, table_id),
                functools.partial(catalog.dropped_attnums, table_id),
            )
            if change.reload is None and change.after == schema:
                change = None  # the same columns after all (a name dropped after the message)
            else:
                if change.reload is None:
                    change = attrs.evolve(change, defaults=defaults_batch(change))
                schema = self._tables[table_id] = change.after
        columns = list(schema.column_names)
        if schema.primary_key:
            key_idx = tuple(columns.index(k) for k in schema.primary_key)
        elif schema.inserts_only:  # every insert is a row of its own, identical ones too
            key_idx = ()
        else:  # REPLICA IDENTITY FULL without a key: the whole row identifies it
            key_idx = tuple(range(len(columns)))
        self._relations[relation.relation_id] = _RelationInfo(
            schema, key_idx, self._row_numbers, generated
        )
        return change

    @property
    def encoder(self) -> PgBatchEncoder:
        return self._encoder

    # -- acknowledgement ---------------------------------------------------------------------

    def pending_bytes(self) -> int:
        return self._size

    def adopt(self, schema: TableSchema) -> None:
        self._tables[schema.table_id] = schema

    def acknowledge(self, position: Lsn) -> None:
        # One byte before it: the server still skips the transaction ending there (its commit
        # record starts earlier), and psycopg2 does not take the acknowledgement for "all
        # received is confirmed", after which it reports the server's WAL end from keepalives
        # as flushed by itself, moving the slot past the lake's checkpoint.
        confirmed = max(0, int(position) - 1)
        with self._lock:
            self._cur.send_feedback(write_lsn=confirmed, flush_lsn=confirmed, force=True)
        self._acked = Lsn(confirmed)

    @contextmanager
    def _beating(self) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(_KEEPALIVE_SECONDS):
                try:
                    with self._lock:  # without force, psycopg2 only records feedback
                        self._cur.send_feedback(force=True)
                except psycopg2.Error as e:  # the main thread will see the broken stream
                    log.debug("keepalive failed: %s", e)
                    return

        thread = threading.Thread(target=beat, name="replication-keepalive", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def keepalive(self) -> AbstractContextManager[None]:
        return self._beating()

    def close(self) -> None:
        try:
            if self._acked is not None:
                self._wait_for_ack(self._acked)
        finally:
            self._catalog.close()
            self._conn.close()

    def _wait_for_ack(self, position: Lsn) -> None:
        """The server applies feedback asynchronously: wait until the slot shows it."""
        deadline = time.monotonic() + _ACK_WAIT_SECONDS
        while time.monotonic() < deadline:
            slot = read_slot(self._settings, self._slot)
            if slot is None or (
                slot.confirmed_flush is not None and slot.confirmed_flush >= position
            ):
                return
            with self._lock:
                self._cur.send_feedback(force=True)
            time.sleep(0.05)
        log.warning(
            "the server has not confirmed position %s yet; the next run re-reads it", position
        )


def _quote(name: str) -> str:
    """pgoutput parses publication_names as an identifier list."""
    return '"' + name.replace('"', '""') + '"'


class PgOutputChangeSource(ChangeSource):
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def prepare(self, tables: Sequence[TableSchema]) -> None:
        ensure_publication(self._settings, tables)

    def slot(self, name: str) -> SlotState | None:
        return read_slot(self._settings, name)  # also checks its plugin and database

    def retire(self, name: str) -> bool:
        return drop_slot(self._settings, name)

    def occupied(self, name: str) -> bool:
        return slot_exists(self._settings, name)

    def exclusive(self) -> AbstractContextManager[None]:
        return pipeline_lock(self._settings)

    def identity(self) -> SourceIdentity:
        return source_identity(self._settings)

    def server_position(self) -> Lsn:
        return server_position(self._settings)

    def open(
        self, tables: Sequence[TableSchema], start: Lsn, slot: str
    ) -> AbstractContextManager[ChangeStream]:
        return self._open(tables, start, slot)

    @contextmanager
    def _open(self, tables: Sequence[TableSchema], start: Lsn, slot: str) -> Iterator[ChangeStream]:
        stream = PgOutputStream(self._settings, tables, start, slot)
        try:
            yield stream
        except psycopg2.Error as e:
            raise translate_error(e, "replication stream failed") from e
        finally:
            stream.close()
