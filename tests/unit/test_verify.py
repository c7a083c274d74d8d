"""``verify``'s own decoding of PostgreSQL's text and rendering of lake values, and the service
over the in-memory fakes: buckets, itemized differences within a memory budget, rows that
should not be there, subsets and samples."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from replicator.adapters.memory.fakes import (
    InMemoryChangeSource,
    InMemoryCheckpointStore,
    InMemoryLakeRows,
    InMemoryLakeWriter,
    InMemoryTableCatalog,
    InMemoryTextRows,
    StoredRow,
)
from replicator.domain.cdc import CdcService
from replicator.domain.checkpoint import LsnCheckpoint
from replicator.domain.errors import ConfigurationError, PipelineBusyError
from replicator.domain.lsn import Lsn
from replicator.domain.model import ColumnSchema, ReplicaIdentity, TableId, TableSchema
from replicator.domain.verify import SampleCounts, TableVerdict, VerifyService
from replicator.domain.verify_values import (
    canonical_columns,
    canonical_rows,
    key_parser,
    lake_canons,
    parse_array,
    source_canons,
)

UTC = dt.UTC


def col(name: str, base: str, *, array: bool = False, delimiter: str = ",") -> ColumnSchema:
    return ColumnSchema(name, base, 0, base_type=base, is_array=array, delimiter=delimiter)


def one(column: ColumnSchema, text: str, stored: Any) -> tuple[Any, Any]:
    """The canonical source and lake value of one column."""
    table = TableSchema(TableId("public", "t"), (column,))
    ((source,),) = canonical_rows([(text,)], source_canons(table))
    ((lake,),) = canonical_columns(1, [[stored]], lake_canons(table))
    return source, lake


# (column, PostgreSQL's text, the lake's value): the same value
SAME = [
    (col("i", "int8"), "-9223372036854775808", -9223372036854775808),
    (col("b", "bool"), "t", True),
    (col("n", "numeric"), "1234567890.10", Decimal("1234567890.10")),
    (col("n", "numeric"), "NaN", "NaN"),  # unconstrained numerics are text
    (col("d", "float8"), "0.1", 0.1),
    (col("d", "float8"), "-0", -0.0),
    (col("d", "float8"), "1.7976931348623157e+308", 1.7976931348623157e308),
    (col("d", "float8"), "5e-324", 5e-324),
    (col("d", "float8"), "NaN", float("nan")),
    (col("d", "float8"), "-Infinity", float("-inf")),
    (col("f", "float4"), "0.1", 0.10000000149011612),  # the float32 nearest 0.1
    (col("f", "float4"), "3.4028235e+38", 3.4028234663852886e38),
    (col("x", "bytea"), "\\xdead00", b"\xde\xad\x00"),
    (col("day", "date"), "0044-03-15", dt.date(44, 3, 15)),
    (col("day", "date"), "infinity", dt.date(9999, 12, 31)),
    (col("ts", "timestamp"), "2024-01-02 03:04:05.5", dt.datetime(2024, 1, 2, 3, 4, 5, 500000)),
    (col("ts", "timestamp"), "-infinity", dt.datetime(1, 1, 1)),
    (
        col("tz", "timestamptz"),
        "2024-01-02 01:04:05.123456+00",
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ),
    (col("tz", "timestamptz"), "2024-01-02 01:04:05+00", dt.datetime(2024, 1, 2, 1, 4, 5)),
    (col("c", "bpchar"), "ab   ", "ab   "),
    (col("a", "int4", array=True), "{1,NULL,3}", [1, None, 3]),
    (col("a", "int4", array=True), "[0:1]={7,8}", [7, 8]),
    (col("a", "text", array=True), '{"a,b","x \\"y\\"",NULL,"NULL",""}', ["a,b", 'x "y"', None, "NULL", ""]),
    (col("a", "box", array=True, delimiter=";"), "{(3,4),(1,2);(7,8),(5,6)}", ["(3,4),(1,2)", "(7,8),(5,6)"]),
    (col("a", "float8", array=True), "{0.1,-0,NaN}", [0.1, -0.0, float("nan")]),
    (col("a", "timestamptz", array=True), '{"2024-01-02 03:04:05+00",infinity}',
     ['2024-01-02T03:04:05+00:00', '9999-12-31T23:59:59.999999+00:00']),  # DuckDB's JSON
    (col("a", "date", array=True), "{2024-02-29}", ["2024-02-29"]),
]  # fmt: skip

# ... and a value a faulty writer could have stored instead
DIFFERENT = [
    (col("d", "float8"), "2.718281828459045", 2.7182818284590455),  # one ulp
    (col("d", "float8"), "0", -0.0),
    (col("f", "float4"), "0.1", 0.1),  # a double where a real was due
    (col("n", "numeric"), "1.50", Decimal("1.5")),  # the scale is part of the value
    (col("ts", "timestamp"), "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, 1)),
    (col("tz", "timestamptz"), "2024-01-02 03:04:05+00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))),
    (col("c", "bpchar"), "ab   ", "ab"),
    (col("x", "bytea"), "\\x00", b""),
    (col("a", "box", array=True, delimiter=";"), "{(3,4),(1,2)}", ["(3", "4)", "(1", "2)"]),
    (col("a", "text", array=True), "{NULL}", ["NULL"]),
    (col("a", "int4", array=True), "{1,2}", [1, 2, None]),
    (col("t", "text"), "", None),
]  # fmt: skip


class TestValues:
    @pytest.mark.parametrize(("column", "text", "stored"), SAME)
    def test_the_same_value_reads_the_same_on_both_sides(
        self, column: ColumnSchema, text: str, stored: Any
    ) -> None:
        source, lake = one(column, text, stored)
        assert source == lake

    @pytest.mark.parametrize(("column", "text", "stored"), DIFFERENT)
    def test_a_different_value_reads_different(
        self, column: ColumnSchema, text: str, stored: Any
    ) -> None:
        source, lake = one(column, text, stored) if stored is not None else (text, None)
        assert source != lake

    def test_array_text_is_parsed_as_array_out_writes_it(self) -> None:
        assert parse_array('{a,"b c","d\\\\e",NULL,"NULL",{x}}') == [
            "a", "b c", "d\\e", None, "NULL", ["x"]
        ]  # fmt: skip
        assert parse_array("{{1,2},{3,NULL}}") == [["1", "2"], ["3", None]]
        assert parse_array("{(1,2),(3,4);(5,6),(7,8)}", ";") == ["(1,2),(3,4)", "(5,6),(7,8)"]
        assert parse_array("{}") == []

    def test_sample_keys_become_the_values_the_lake_stores(self) -> None:
        table = TableSchema(
            TableId("public", "t"),
            (col("id", "int4"), col("day", "date"), col("tz", "timestamptz")),
            ("id", "day", "tz"),
        )
        parse = key_parser(table)
        assert parse is not None
        assert parse(["7", "infinity", "2024-01-01 00:00:00.5+00"]) == (
            7,
            dt.date(9999, 12, 31),
            dt.datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        )
        keyed_by_point = TableSchema(TableId("public", "p"), (col("p", "point"),), ("p",))
        assert key_parser(keyed_by_point) is None  # verified whole instead


ITEMS = TableSchema(TableId("public", "items"), (col("id", "int4"), col("v", "text")), ("id",))
TALLY = TableSchema(
    TableId("public", "tally"),
    (col("n", "int4"), col("at", "text")),
    replica_identity=ReplicaIdentity.FULL,
)


def service(
    source: dict[TableId, list[Any]], lake: dict[TableId, list[StoredRow]], **kwargs: Any
) -> tuple[VerifyService, InMemoryChangeSource]:
    writer = InMemoryLakeWriter()
    writer.checkpoint = Lsn(0)
    writer.checkpoint_tables = {ITEMS.table_id, TALLY.table_id}
    changes = InMemoryChangeSource([], confirmed_flush=Lsn(0))
    catalog = InMemoryTableCatalog([ITEMS, TALLY])
    cdc = CdcService(
        catalog, changes, writer, LsnCheckpoint(InMemoryCheckpointStore(writer), "fake_slot")
    )
    rows = InMemoryTextRows(source, position=Lsn(0))
    return VerifyService(catalog, rows, InMemoryLakeRows(lake), cdc, **kwargs), changes


def items(n: int) -> list[tuple[str, str]]:
    return [(str(i), f"v{i}") for i in range(n)]


def stored(n: int) -> list[StoredRow]:
    return [StoredRow((i, f"v{i}")) for i in range(n)]


class TestService:
    def test_equal_tables_and_their_census(self) -> None:
        source = {ITEMS.table_id: items(50), TALLY.table_id: [("1", "a"), ("2", "b"), ("2", "b")]}
        lake = {
            ITEMS.table_id: [*stored(50), StoredRow((99, "gone"), deleted=True)],
            TALLY.table_id: [StoredRow((1, "a"), count=1), StoredRow((2, "b"), count=2)],
        }
        verifier, _ = service(source, lake)
        report = verifier.run()
        assert report.equal
        by_name = {v.table_id.name: v for v in report.tables}
        assert (by_name["items"].source_rows, by_name["items"].lake_rows) == (50, 50)
        assert by_name["items"].census.soft_deleted == 1
        assert (by_name["tally"].source_rows, by_name["tally"].lake_rows) == (3, 3)

    def test_differences_are_named_missing_extra_changed_and_duplicated(self) -> None:
        lake_rows = stored(50)
        lake_rows[3] = StoredRow((3, "changed"))
        del lake_rows[7]
        lake_rows += [StoredRow((1000, "extra")), StoredRow((9, "v9"))]
        verifier, _ = service({ITEMS.table_id: items(50)}, {ITEMS.table_id: lake_rows})
        (found,) = verifier.run(tables=["items"]).tables
        assert not found.equal
        assert found.differing_keys == (("1000",), ("3",), ("7",), ("9",))
        assert (found.source_rows, found.lake_rows) == (50, 51)

    def test_itemizing_stays_within_its_budget_and_counts_the_rest(self) -> None:
        lake_rows = [StoredRow((i, "changed")) for i in range(500)]
        verifier, _ = service(
            {ITEMS.table_id: items(500)}, {ITEMS.table_id: lake_rows}, itemize_rows=40, max_keys=5
        )
        (found,) = verifier.run(tables=["items"]).tables
        itemized = len(found.differing_keys) + found.more_differences
        assert len(found.differing_keys) == 5
        assert 1 <= itemized <= 40 and itemized + found.unitemized_rows == 500

    def test_ghosts_and_tombstones_make_a_lake_different_even_with_equal_rows(self) -> None:
        lake = {
            ITEMS.table_id: [*stored(5), StoredRow((77, None), deleted=True)],
            TALLY.table_id: [StoredRow((1, "a"), count=1), StoredRow((5, "z"), count=0)],
        }
        verifier, _ = service({ITEMS.table_id: items(5), TALLY.table_id: [("1", "a")]}, lake)
        by_name = {v.table_id.name: v for v in verifier.run().tables}
        assert by_name["items"].rows_equal and not by_name["items"].equal
        assert by_name["items"].census.ghosts == 1
        assert by_name["tally"].rows_equal and by_name["tally"].census.tombstones == 1
        assert not by_name["tally"].equal

    def test_a_sample_checks_some_rows_and_every_row_count(self) -> None:
        verifier, _ = service({ITEMS.table_id: items(100)}, {ITEMS.table_id: stored(100)})
        (found,) = verifier.run(tables=["items"], sample=10, seed=3).tables
        assert found.equal and found.sample is not None
        assert (found.source_rows, found.lake_rows, found.sample.source_rows) == (10, 10, 100)

        verifier, _ = service({ITEMS.table_id: items(100)}, {ITEMS.table_id: stored(99)})
        (found,) = verifier.run(tables=["items"], sample=10, seed=3).tables
        assert not found.equal and found.sample is not None and found.sample.lake_rows == 99

        # a table no larger than the sample, or keyless, is verified whole
        verifier, _ = service({ITEMS.table_id: items(5)}, {ITEMS.table_id: stored(5)})
        (found,) = verifier.run(tables=["items"], sample=10, seed=3).tables
        assert found.sample is None and found.source_rows == 5

    def test_an_unknown_table_name_is_one_clear_error(self) -> None:
        verifier, _ = service({}, {})
        with pytest.raises(ConfigurationError, match=r"--table 'nope' names no replicated"):
            verifier.run(tables=["nope"])
        assert [str(v.table_id) for v in verifier.run(tables=["public.ta*"]).tables] == [
            "public.tally"
        ]

    def test_the_pipeline_is_held_for_the_whole_check(self) -> None:
        verifier, changes = service({ITEMS.table_id: items(3)}, {ITEMS.table_id: stored(3)})
        changes.busy = True  # another run holds it
        with pytest.raises(PipelineBusyError):
            verifier.run()


def verdict(
    table: TableSchema, source: list[Any], lake: list[StoredRow], **kwargs: Any
) -> TableVerdict:
    """The verdict on one table whose source and lake hold these rows."""
    verifier, _ = service({table.table_id: source}, {table.table_id: lake}, **kwargs)
    (found,) = verifier.run(tables=[table.table_id.name]).tables
    return found


class TestOutcomesRowByRow:
    """Each kind of difference, alone, and what the verdict says of it."""

    def test_a_lake_equal_to_the_source_has_equal_counts_and_checksums(self) -> None:
        found = verdict(ITEMS, items(7), stored(7))
        assert found.equal and found.rows_equal
        assert (found.source_rows, found.lake_rows) == (7, 7)
        assert found.source_checksum == found.lake_checksum != 0
        assert (found.differing_keys, found.more_differences, found.unitemized_rows) == (
            (), 0, 0
        )  # fmt: skip

    def test_a_row_missing_in_the_lake_is_named_by_its_key(self) -> None:
        lake = [r for r in stored(7) if r.values[0] != 4]
        found = verdict(ITEMS, items(7), lake)
        assert not found.equal
        assert found.differing_keys == (("4",),)
        assert (found.source_rows, found.lake_rows) == (7, 6)

    def test_an_extra_row_in_the_lake_is_named_by_its_key(self) -> None:
        found = verdict(ITEMS, items(7), [*stored(7), StoredRow((70, "v70"))])
        assert not found.equal
        assert found.differing_keys == (("70",),)
        assert (found.source_rows, found.lake_rows) == (7, 8)

    def test_a_differing_value_names_its_key_with_the_counts_equal(self) -> None:
        lake = stored(7)
        lake[5] = StoredRow((5, "v5 "))  # one trailing space
        found = verdict(ITEMS, items(7), lake)
        assert not found.equal
        assert found.differing_keys == (("5",),)
        assert (found.source_rows, found.lake_rows) == (7, 7)
        assert found.source_checksum != found.lake_checksum

    def test_two_rows_with_their_values_swapped_are_found_every_time(self) -> None:
        """Sums of plain tuple hashes matched for 44% of such swaps (a tuple's hash is nearly
        linear in its items'): 200 swaps, each its own table, every one found, both keys."""
        missed = []
        for n in range(200):
            a, b = f"value {n}", f"other {n * 7}"
            found = verdict(ITEMS, [("1", a), ("2", b)], [StoredRow((1, b)), StoredRow((2, a))])
            if found.equal or found.differing_keys != (("1",), ("2",)):
                missed.append(n)
        assert missed == []

    def test_null_and_the_empty_string_are_different_values(self) -> None:
        assert verdict(ITEMS, [("1", "")], [StoredRow((1, None))]).differing_keys == (("1",),)
        assert verdict(ITEMS, [("1", None)], [StoredRow((1, ""))]).differing_keys == (("1",),)

    def test_a_row_marked_deleted_is_not_a_row_of_the_lake(self) -> None:
        kept = [*stored(3), StoredRow((3, "v3"), deleted=True)]  # deleted at the source
        found = verdict(ITEMS, items(3), kept)
        assert found.equal and found.census.soft_deleted == 1 and found.marked_deleted == 1
        assert (found.source_rows, found.lake_rows) == (3, 3)

        # a row the source still has, marked deleted in the lake, is missing there
        marked = [*stored(2), StoredRow((2, "v2"), deleted=True)]
        found = verdict(ITEMS, items(3), marked)
        assert not found.equal and found.differing_keys == (("2",),)
        assert (found.source_rows, found.lake_rows, found.census.live) == (3, 2, 2)

    def test_a_counted_row_is_compared_by_its_count(self) -> None:
        source = [("1", "a"), ("2", "b"), ("2", "b"), ("2", "b")]
        equal = verdict(TALLY, source, [StoredRow((1, "a"), count=1), StoredRow((2, "b"), count=3)])
        assert equal.equal and (equal.source_rows, equal.lake_rows) == (4, 4)
        assert equal.census.live == 4

        fewer = verdict(TALLY, source, [StoredRow((1, "a"), count=1), StoredRow((2, "b"), count=2)])
        assert not fewer.equal and fewer.differing_keys == (("2", "b"),)
        assert (fewer.source_rows, fewer.lake_rows) == (4, 3)

        more = [StoredRow((1, "a"), count=2), StoredRow((2, "b"), count=3)]
        found = verdict(TALLY, source, [*more, StoredRow((9, "z"), count=1)])
        assert found.differing_keys == (("1", "a"), ("9", "z"))
        assert (found.source_rows, found.lake_rows) == (4, 6)

    def test_at_most_max_keys_are_named_and_the_rest_counted(self) -> None:
        lake = [r for r in stored(30) if r.values[0] % 3]  # 0, 3, ..., 27 missing
        found = verdict(ITEMS, items(30), lake, max_keys=4)
        assert found.differing_keys == (("0",), ("12",), ("15",), ("18",))  # in text order
        assert (found.more_differences, found.unitemized_rows) == (6, 0)

    def test_rows_beyond_the_itemizing_budget_are_counted_not_named(self) -> None:
        # Two differing rows, each in its own bucket (unless their keys' hashes collide in 16
        # bits: once in 65,536 runs), with room to itemize one.
        lake = [StoredRow((0, "v0")), StoredRow((1, "other")), StoredRow((2, "v2"))]
        found = verdict(ITEMS, items(4), lake, itemize_rows=1)
        assert len(found.differing_keys) == 1 and found.unitemized_rows == 1
        assert found.differing_keys[0] in {("1",), ("3",)}
        assert not found.equal


class TestSampleRowByRow:
    def test_a_sample_names_the_sampled_rows_that_differ(self) -> None:
        lake = [StoredRow((i, f"v{i}" if i % 2 else "changed")) for i in range(100)]
        verifier, _ = service({ITEMS.table_id: items(100)}, {ITEMS.table_id: lake})
        (found,) = verifier.run(tables=["items"], sample=10, seed=3).tables
        assert found.sample == SampleCounts(100, 100, 3)
        assert (found.source_rows, found.lake_rows) == (10, 10)
        named = [int(k[0]) for k in found.differing_keys]
        assert named and all(i % 2 == 0 for i in named)  # only the changed rows, some sampled
        assert not found.equal

    def test_sampled_rows_missing_in_the_lake_are_named(self) -> None:
        lake = [StoredRow((i, f"v{i}")) for i in range(100) if i % 2]
        verifier, _ = service({ITEMS.table_id: items(100)}, {ITEMS.table_id: lake})
        (found,) = verifier.run(tables=["items"], sample=10, seed=3).tables
        assert found.sample == SampleCounts(100, 50, 3)
        named = [int(k[0]) for k in found.differing_keys]
        assert named and all(i % 2 == 0 for i in named)
        assert found.lake_rows == 10 - len(named)

    def test_a_keyless_table_is_verified_whole_whatever_the_sample(self) -> None:
        source = [(str(i), "a") for i in range(30)]
        lake = [StoredRow((i, "a"), count=1) for i in range(30)]
        verifier, _ = service({TALLY.table_id: source}, {TALLY.table_id: lake})
        (found,) = verifier.run(tables=["tally"], sample=5, seed=1).tables
        assert found.sample is None and found.equal
        assert (found.source_rows, found.lake_rows) == (30, 30)
