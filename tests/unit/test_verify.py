import datetime as dt
from decimal import Decimal

from replicator.domain.model import TableId
from replicator.domain.verify import compare, fingerprint

T = TableId("public", "t")


class TestFingerprint:
    def test_same_values_from_different_libraries_agree(self) -> None:
        utc = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        plus2 = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
        assert fingerprint([1, Decimal("1.50"), utc, b"\x00", [1, None]]) == fingerprint(
            (1, Decimal("1.50"), plus2, bytearray(b"\x00"), (1, None))
        )
        assert fingerprint([float("nan")]) == fingerprint([float("nan")])

    def test_any_difference_changes_it(self) -> None:
        base = fingerprint([1, "a", Decimal("1.50"), None])
        assert base != fingerprint([1, "a", Decimal("1.5"), None])  # scale is part of the value
        assert base != fingerprint([1, "a", Decimal("1.50"), ""])
        assert base != fingerprint([1, "b", Decimal("1.50"), None])


class TestCompare:
    def test_equal_tables(self) -> None:
        rows = {(1,): fingerprint([1, "a"]), (2,): fingerprint([2, "b"])}
        verdict = compare(T, rows, dict(rows), limit=5)
        assert verdict.equal and verdict.differing_keys == ()

    def test_lists_missing_extra_and_changed_keys_up_to_the_limit(self) -> None:
        source = {(k,): fingerprint([k]) for k in range(10)}
        lake = dict(source)
        del lake[(3,)]  # missing in the lake
        lake[(99,)] = fingerprint([99])  # extra in the lake
        lake[(5,)] = fingerprint([5, "changed"])
        verdict = compare(T, source, lake, limit=2)
        assert not verdict.equal
        assert (verdict.source_rows, verdict.lake_rows) == (10, 10)
        assert verdict.differing_keys == ((3,), (5,))
        assert verdict.more_differences == 1
