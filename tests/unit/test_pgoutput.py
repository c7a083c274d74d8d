"""The pgoutput decoder, fed byte sequences captured from a real PostgreSQL 15 server
(``pg_logical_slot_peek_binary_changes(..., 'proto_version', '1', 'messages', 'true')``)."""

from __future__ import annotations

import datetime as dt

import pytest

from replicator.adapters.postgres.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    ProtocolError,
    Relation,
    RelationColumn,
    Truncate,
    TypeInfo,
    Update,
    decode,
)

# Captured: CREATE TYPE mood AS ENUM ('sad','happy');
# CREATE TABLE t (id int primary key, name text, m mood, big text); and t2 f (a int, b text)
# with REPLICA IDENTITY FULL, both in one publication.
BEGIN = "42000000000150a3b000030429a8d913d7000002d5"
TYPE = "59000040017075626c6963006d6f6f6400"
RELATION_T = (
    "52000040057075626c69630074006400040169640000000017ffffffff006e616d650000000019ffffffff"
    "006d0000004001ffffffff006269670000000019ffffffff"
)
RELATION_F = "520000400c7075626c696300660066000201610000000017ffffffff01620000000019ffffffff"
INSERT_NULLS = "49000040054e00047400000001326e74000000037361646e"
COMMIT = "4300000000000150a3b0000000000150a3e000030429a8d913d7"
UPDATE_UNCHANGED_TOAST = "55000040054e00047400000001317400000001627400000005686170707975"
UPDATE_KEY_CHANGE = "55000040054b00047400000001326e6e6e4e00047400000001336e74000000037361646e"
DELETE_KEY = "44000040054b00047400000001336e6e6e"
UPDATE_FULL = "550000400c4f00027400000001317400000001784e0002740000000131740000000179"
DELETE_FULL = "440000400c4f0002740000000131740000000179"
TRUNCATE = "540000000200000040050000400c"
MESSAGE = "4d010000000001509dd87265706c696361746f72000000000568656c6c6f"


def msg(hex_text: str) -> object:
    return decode(bytes.fromhex(hex_text))


class TestTransactionMessages:
    def test_begin(self) -> None:
        begin = msg(BEGIN)
        assert isinstance(begin, Begin)
        assert (begin.final_lsn, begin.xid) == (0x150A3B0, 725)
        assert begin.commit_ts.tzinfo is dt.UTC
        assert begin.commit_ts.year == 2026

    def test_commit(self) -> None:
        commit = msg(COMMIT)
        assert isinstance(commit, Commit)
        assert (commit.flags, commit.commit_lsn, commit.end_lsn) == (0, 0x150A3B0, 0x150A3E0)
        assert commit.commit_ts == msg(BEGIN).commit_ts  # type: ignore[attr-defined]

    def test_origin(self) -> None:
        origin = decode(b"O" + (0x16B3A8).to_bytes(8, "big") + b"upstream\x00")
        assert origin == Origin(0x16B3A8, "upstream")


class TestSchemaMessages:
    def test_relation(self) -> None:
        assert msg(RELATION_T) == Relation(
            relation_id=0x4005,
            namespace="public",
            name="t",
            replica_identity="d",
            columns=(
                RelationColumn("id", 23, -1, True),
                RelationColumn("name", 25, -1, False),
                RelationColumn("m", 0x4001, -1, False),
                RelationColumn("big", 25, -1, False),
            ),
        )

    def test_relation_with_replica_identity_full(self) -> None:
        relation = msg(RELATION_F)
        assert isinstance(relation, Relation)
        assert relation.replica_identity == "f"
        assert [c.is_key for c in relation.columns] == [True, True]

    def test_type(self) -> None:
        assert msg(TYPE) == TypeInfo(0x4001, "public", "mood")


class TestRowMessages:
    def test_insert_with_nulls(self) -> None:
        assert msg(INSERT_NULLS) == Insert(0x4005, ("2", None, "sad", None))

    def test_update_with_unchanged_toast_value(self) -> None:
        update = msg(UPDATE_UNCHANGED_TOAST)
        assert update == Update(0x4005, ("1", "b", "happy", UNCHANGED))

    def test_update_that_changes_the_key_carries_the_old_key(self) -> None:
        assert msg(UPDATE_KEY_CHANGE) == Update(
            0x4005, ("3", None, "sad", None), old_kind="K", old=("2", None, None, None)
        )

    def test_update_under_replica_identity_full_carries_the_old_row(self) -> None:
        assert msg(UPDATE_FULL) == Update(0x400C, ("1", "y"), old_kind="O", old=("1", "x"))

    def test_delete_by_key_and_by_full_row(self) -> None:
        assert msg(DELETE_KEY) == Delete(0x4005, "K", ("3", None, None, None))
        assert msg(DELETE_FULL) == Delete(0x400C, "O", ("1", "y"))

    def test_truncate_of_two_tables(self) -> None:
        assert msg(TRUNCATE) == Truncate((0x4005, 0x400C), cascade=False, restart_identity=False)

    def test_truncate_cascade_restart_identity(self) -> None:
        raw = b"T" + (1).to_bytes(4, "big") + bytes([3]) + (0x4005).to_bytes(4, "big")
        assert decode(raw) == Truncate((0x4005,), cascade=True, restart_identity=True)

    def test_binary_tuple_values(self) -> None:
        raw = b"I" + (7).to_bytes(4, "big") + b"N" + (1).to_bytes(2, "big") + b"b"
        raw += (3).to_bytes(4, "big") + b"\x00\x01\x02"
        assert decode(raw) == Insert(7, (b"\x00\x01\x02",))

    def test_unicode_text_values(self) -> None:
        text = "ünï ✓".encode()
        raw = b"I" + (7).to_bytes(4, "big") + b"N" + (1).to_bytes(2, "big") + b"t"
        raw += len(text).to_bytes(4, "big") + text
        assert decode(raw) == Insert(7, ("ünï ✓",))


class TestOtherMessages:
    def test_logical_message(self) -> None:
        assert msg(MESSAGE) == LogicalMessage(True, 0x1509DD8, "replicator", b"hello")

    def test_unknown_message_type_names_the_byte(self) -> None:
        with pytest.raises(ProtocolError, match=r"unknown message type 'S' \(byte 0x53\)"):
            decode(b"S\x00\x00\x00\x01")

    def test_unknown_tuple_kind_names_the_byte(self) -> None:
        raw = b"I" + (7).to_bytes(4, "big") + b"N" + (1).to_bytes(2, "big") + b"x"
        with pytest.raises(ProtocolError, match=r"'x' \(0x78\)"):
            decode(raw)

    def test_truncated_message_is_a_protocol_error(self) -> None:
        with pytest.raises(ProtocolError, match="malformed 'I' message"):
            decode(bytes.fromhex(INSERT_NULLS)[:12])

    def test_empty_message(self) -> None:
        with pytest.raises(ProtocolError, match="empty"):
            decode(b"")
