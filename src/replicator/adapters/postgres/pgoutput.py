"""A decoder for PostgreSQL's ``pgoutput`` logical replication protocol (version 1).

Pure parsing, no I/O: bytes in, message objects out. Every message type of protocol version 1
is understood (Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate) plus the
logical decoding Message (``messages=true``, PG 14+); an unknown type raises an error naming the
byte. Tuple values stay as PostgreSQL's text output (or raw bytes for binary mode): converting
them to typed columns happens later, column by column, only for the rows that survive compaction.

Message layouts: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Final

import attrs

from replicator.domain.errors import SourceReadError

# Timestamps in the protocol count microseconds from the PostgreSQL epoch.
PG_EPOCH: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class _Unchanged:
    """A TOASTed value the server did not send because the update did not touch it."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

# A decoded tuple: one entry per column; str for text, bytes for binary, None, or UNCHANGED.
TupleValues = tuple[str | bytes | _Unchanged | None, ...]


@attrs.frozen(slots=True)
class Begin:
    final_lsn: int
    commit_ts: dt.datetime
    xid: int


@attrs.frozen(slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: dt.datetime


@attrs.frozen(slots=True)
class Origin:
    commit_lsn: int
    name: str


@attrs.frozen(slots=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@attrs.frozen(slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]


@attrs.frozen(slots=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


@attrs.frozen(slots=True)
class Insert:
    relation_id: int
    new: TupleValues


@attrs.frozen(slots=True)
class Update:
    relation_id: int
    new: TupleValues
    # 'K': the old key (the key changed); 'O': the whole old row (REPLICA IDENTITY FULL).
    old_kind: str | None = None
    old: TupleValues | None = None


@attrs.frozen(slots=True)
class Delete:
    relation_id: int
    old_kind: str
    old: TupleValues


@attrs.frozen(slots=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@attrs.frozen(slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | TypeInfo
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)

_I8 = struct.Struct(">b")
_U8 = struct.Struct(">B")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">BQQq")
_TRUNCATE_HEAD = struct.Struct(">IB")
_MESSAGE_HEAD = struct.Struct(">BQ")


class ProtocolError(SourceReadError):
    """The replication stream carried something this decoder cannot read."""


def _timestamp(micros: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=micros)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode("utf-8"), end + 1


_unpack_i16 = _I16.unpack_from
_unpack_i32 = _I32.unpack_from


def decode_tuple(buf: bytes, pos: int, *, raw: bool = False) -> tuple[TupleValues, int]:
    """TupleData: Int16 column count, then per column a kind byte and maybe a value.

    ``raw``: leave text values as UTF-8 bytes; the change stream converts whole columns later
    (validating UTF-8 in Arrow), which is cheaper than decoding value by value here. This loop
    runs once per column of every replicated row: keep it lean (locals, one branch per kind).
    """
    (count,) = _unpack_i16(buf, pos)
    pos += 2
    values: list[str | bytes | _Unchanged | None] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        if kind == 0x74:  # 't': text
            (length,) = _unpack_i32(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length] if raw else buf[pos : pos + length].decode("utf-8"))
            pos += length
        elif kind == 0x6E:  # 'n': null
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u': unchanged TOASTed value, not sent
            append(UNCHANGED)
            pos += 1
        elif kind == 0x62:  # 'b': binary
            (length,) = _unpack_i32(buf, pos + 1)
            pos += 5
            append(bytes(buf[pos : pos + length]))
            pos += length
        else:
            raise ProtocolError(f"pgoutput: unknown tuple value kind {chr(kind)!r} (0x{kind:02x})")
    return tuple(values), pos


def _decode_relation(buf: bytes) -> Relation:
    (relation_id,) = _U32.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    identity = chr(buf[pos])
    (count,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _cstring(buf, pos + 1)
        (type_oid,) = _U32.unpack_from(buf, pos)
        (typmod,) = _I32.unpack_from(buf, pos + 4)
        pos += 8
        columns.append(RelationColumn(column, type_oid, typmod, bool(flags & 1)))
    return Relation(relation_id, namespace or "pg_catalog", name, identity, tuple(columns))


def relation_id_of(buf: bytes) -> int:
    """The relation of an Insert, Update or Delete message."""
    value: int = _U32.unpack_from(buf, 1)[0]
    return value


def update_tuples(
    buf: bytes, *, raw: bool = False
) -> tuple[TupleValues, str | None, TupleValues | None]:
    """An Update's new tuple, and its old key ('K') or old row ('O') when sent."""
    marker = chr(buf[5])
    if marker in ("K", "O"):
        old, pos = decode_tuple(buf, 6, raw=raw)
        if chr(buf[pos]) != "N":
            raise ProtocolError(f"pgoutput: Update without a new tuple (got {chr(buf[pos])!r})")
        new, _ = decode_tuple(buf, pos + 1, raw=raw)
        return new, marker, old
    if marker != "N":
        raise ProtocolError(f"pgoutput: Update with unknown tuple marker {marker!r}")
    new, _ = decode_tuple(buf, 6, raw=raw)
    return new, None, None


def _decode_update(buf: bytes) -> Update:
    new, marker, old = update_tuples(buf)
    return Update(relation_id_of(buf), new, marker, old)


def decode(buf: bytes) -> Message:
    """Decode one pgoutput message (the payload of one XLogData record)."""
    if not buf:
        raise ProtocolError("pgoutput: empty message")
    kind = buf[0]
    try:
        if kind == 0x49:  # 'I'
            (relation_id,) = _U32.unpack_from(buf, 1)
            if buf[5] != 0x4E:
                raise ProtocolError(f"pgoutput: Insert without a new tuple ({chr(buf[5])!r})")
            new, _ = decode_tuple(buf, 6)
            return Insert(relation_id, new)
        if kind == 0x55:  # 'U'
            return _decode_update(buf)
        if kind == 0x44:  # 'D'
            (relation_id,) = _U32.unpack_from(buf, 1)
            old, _ = decode_tuple(buf, 6)
            return Delete(relation_id, chr(buf[5]), old)
        if kind == 0x42:  # 'B'
            final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
            return Begin(final_lsn, _timestamp(ts), xid)
        if kind == 0x43:  # 'C'
            flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
            return Commit(flags, commit_lsn, end_lsn, _timestamp(ts))
        if kind == 0x52:  # 'R'
            return _decode_relation(buf)
        if kind == 0x59:  # 'Y'
            (type_oid,) = _U32.unpack_from(buf, 1)
            namespace, pos = _cstring(buf, 5)
            name, _ = _cstring(buf, pos)
            return TypeInfo(type_oid, namespace, name)
        if kind == 0x54:  # 'T'
            count, options = _TRUNCATE_HEAD.unpack_from(buf, 1)
            ids = struct.unpack_from(f">{count}I", buf, 6)
            return Truncate(tuple(ids), bool(options & 1), bool(options & 2))
        if kind == 0x4F:  # 'O'
            (commit_lsn,) = _U64.unpack_from(buf, 1)
            name, _ = _cstring(buf, 9)
            return Origin(commit_lsn, name)
        if kind == 0x4D:  # 'M'
            flags, lsn = _MESSAGE_HEAD.unpack_from(buf, 1)
            prefix, pos = _cstring(buf, 10)
            (length,) = _I32.unpack_from(buf, pos)
            content = bytes(buf[pos + 4 : pos + 4 + length])
            return LogicalMessage(bool(flags & 1), lsn, prefix, content)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(
            f"pgoutput: malformed {chr(kind)!r} message ({len(buf)} bytes): {e}"
        ) from e
    raise ProtocolError(
        f"pgoutput: unknown message type {chr(kind)!r} (byte 0x{kind:02x}); streaming "
        "(protocol 2+) messages are not enabled by this replicator"
    )
