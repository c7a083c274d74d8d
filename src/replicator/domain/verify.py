"""Reconciliation: prove the lake equals the source, table by table, at one consistent point.

The source is read inside a snapshot exported at position P; the lake is first brought to
exactly P (CDC applies the transactions committed before P, none after), and the pipeline's
lock is held until the end, so no run changes the lake meanwhile. Both sides are reduced value
by value to one spelling (``verify_values``) and each row to a 64-bit fingerprint.

Both sides are streamed, in whatever order they come, into ``BUCKETS`` buckets by key: per
bucket a row count and the sum of the rows' fingerprints. Memory stays the same whatever the
table's size. Equal counts and sums in every bucket mean equal tables. Only when buckets differ
are both sides read a second time, keeping just the rows of the differing buckets (at most
``ITEMIZE_ROWS`` of them), to name the keys whose rows differ.

With ``sample``, a keyed table larger than the sample is checked on about that many rows picked
at random on the source and looked up in the lake, and on its row count: a fast, probabilistic
check for huge tables.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from replicator.domain.cdc import CdcService
from replicator.domain.errors import ConfigurationError
from replicator.domain.lsn import Lsn
from replicator.domain.model import Key, LakeBatch, LakeCensus, TableId, TableSchema
from replicator.domain.ports import (
    LakeRowReader,
    SourceRowReader,
    SourceTextReader,
    TableCatalog,
    VerifyProgress,
)
from replicator.domain.verify_values import (
    ColumnCanon,
    canonical_columns,
    canonical_rows,
    key_parser,
    lake_canons,
    source_canons,
)

_MASK = (1 << 64) - 1
BUCKETS = 1 << 16
# The most rows per side the second pass keeps to name differing keys (a few hundred bytes
# each): the differing buckets beyond it are counted, not itemized.
ITEMIZE_ROWS = 200_000


def fingerprint(row: tuple[Any, ...]) -> int:
    """A row's 64-bit digest (of its canonical values: strings, None and tuples of them).

    Python's own hash (SipHash-1-3 for strings, under a key drawn at each start), many times
    faster than a cryptographic digest of the row's text: both sides are digested in one
    process, so it only has to be the same within a run. Checksums are sums of digests, and a
    tuple's hash is nearly linear in its items' hashes: two rows with their values swapped
    summed to the same checksum in about 44% of cases. So each row's hash goes through
    SplitMix64's finalizer, whose xor-shifts and multiplications no sum can follow; then a
    difference goes unnoticed with a chance of about one in 2**64. Checksums are not
    comparable across runs."""
    z = hash(row) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


@attrs.frozen
class SampleCounts:
    """For a sampled table: the rows each side holds in all (the sample is compared whole)."""

    source_rows: int
    lake_rows: int
    seed: int


@attrs.frozen
class TableVerdict:
    table_id: TableId
    # Rows compared value by value: all of them, or the sample's.
    source_rows: int
    lake_rows: int
    source_checksum: int = 0
    lake_checksum: int = 0
    # The first differing keys (the source's text of each key value; a keyless table's row),
    # how many more were found, and how many rows of differing buckets were not itemized.
    differing_keys: tuple[Key, ...] = ()
    more_differences: int = 0
    unitemized_rows: int = 0
    census: LakeCensus = attrs.Factory(LakeCensus)
    sample: SampleCounts | None = None

    @property
    def rows_equal(self) -> bool:
        same = (
            self.source_rows == self.lake_rows
            and self.source_checksum == self.lake_checksum
            and not self.differing_keys
        )
        if self.sample is not None:
            same = same and self.sample.source_rows == self.sample.lake_rows
        return same

    @property
    def equal(self) -> bool:
        """The rows are equal and the lake stores no row that should not be there."""
        return self.rows_equal and self.census.ghosts == 0 and self.census.tombstones == 0

    @property
    def marked_deleted(self) -> int:
        return self.census.soft_deleted + self.census.ghosts


@attrs.frozen
class VerifyReport:
    position: Lsn
    tables: tuple[TableVerdict, ...]

    @property
    def equal(self) -> bool:
        return all(t.equal for t in self.tables)


class _Quiet(VerifyProgress):
    def start(self, table: TableId, rows: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


@attrs.define
class _Tally:
    """One side of one table: per bucket, rows and the sum of their fingerprints."""

    counts: list[int] = attrs.Factory(lambda: [0] * BUCKETS)
    sums: list[int] = attrs.Factory(lambda: [0] * BUCKETS)

    def add(
        self,
        rows: Sequence[tuple[Any, ...]],
        key_of: Callable[[tuple[Any, ...]], Any],
        counts: Sequence[int] | None = None,
    ) -> None:
        tally, sums, mask = self.counts, self.sums, BUCKETS - 1
        if counts is None:
            for row in rows:
                bucket = hash(key_of(row)) & mask
                tally[bucket] += 1
                sums[bucket] = (sums[bucket] + fingerprint(row)) & _MASK
            return
        for row, n in zip(rows, counts, strict=True):
            bucket = hash(key_of(row)) & mask
            tally[bucket] += n
            sums[bucket] = (sums[bucket] + n * fingerprint(row)) & _MASK

    @property
    def rows(self) -> int:
        return sum(self.counts)

    @property
    def checksum(self) -> int:
        return sum(self.sums) & _MASK


# key -> {fingerprint: rows}: a key's rows, as many as each side holds (duplicates are defects)
_Itemized = dict[Any, dict[int, int]]


def _itemize(
    itemized: _Itemized, rows: Sequence[tuple[Any, ...]], key_of: Any, counts: Any = None
) -> None:
    for i, row in enumerate(rows):
        found = itemized.setdefault(key_of(row), {})
        fp = fingerprint(row)
        found[fp] = found.get(fp, 0) + (1 if counts is None else counts[i])


@attrs.define(eq=False)
class VerifyService:
    catalog: TableCatalog
    source: SourceRowReader
    lake: LakeRowReader
    cdc: CdcService
    max_keys: int = 20
    progress: VerifyProgress = attrs.Factory(_Quiet)
    itemize_rows: int = ITEMIZE_ROWS

    def run(
        self,
        tables: Sequence[str] = (),
        sample: int | None = None,
        seed: int = 0,
    ) -> VerifyReport:
        """``tables``: names or shell patterns (``orders``, ``sales.*``) to verify only these;
        ``sample``: check keyed tables larger than this on about this many random rows."""
        chosen = _select(self.catalog.discover(), tables)
        with self.cdc.source.exclusive(), self.source.consistent_point() as (reader, position):
            # The lake must hold exactly what the source's snapshot holds: drain up to it.
            self.cdc.run(until=position, locked=True)
            lake = self.cdc.checkpoint.store.load()
            if lake is not None:  # the lake's rows carry the metadata names it chose
                chosen = [
                    attrs.evolve(t, lake_columns=lake.lake_columns(t.table_id)) for t in chosen
                ]
            verdicts = [self._table(reader, t, sample, seed) for t in chosen]
        return VerifyReport(position, tuple(verdicts))

    def _table(
        self, reader: SourceTextReader, table: TableSchema, sample: int | None, seed: int
    ) -> TableVerdict:
        census = self.lake.census(table)
        parse = key_parser(table) if sample is not None else None
        if sample is not None and parse is not None and census.live > sample:
            return self._sampled(reader, table, sample, seed, census, parse)
        estimate = reader.estimate(table) or census.live
        self.progress.start(table.table_id, estimate + census.live)
        verdict = self._whole(reader, table)
        return attrs.evolve(verdict, census=census)

    def _whole(self, reader: SourceTextReader, table: TableSchema) -> TableVerdict:
        # First, one count and one sum of fingerprints per side.
        source_rows = source_sum = lake_rows = lake_sum = 0
        for rows in self._source_rows(reader, table):
            source_rows += len(rows)
            source_sum += sum(map(fingerprint, rows))
        for batch, rows in self._lake_rows(table):
            if batch.counts is None:
                lake_rows += len(rows)
                lake_sum += sum(map(fingerprint, rows))
            else:
                lake_rows += sum(batch.counts)
                lake_sum += sum(map(operator.mul, map(fingerprint, rows), batch.counts))
        verdict = TableVerdict(
            table.table_id, source_rows, lake_rows, source_sum & _MASK, lake_sum & _MASK
        )
        if verdict.rows_equal:
            return verdict
        # They differ: where, by bucket (a second read of both sides), then which keys (a third,
        # of the differing buckets' rows only).
        key_of = _bucket_of(table)
        source, lake = _Tally(), _Tally()
        for rows in self._source_rows(reader, table, progress=False):
            source.add(rows, key_of)
        for batch, rows in self._lake_rows(table, progress=False):
            lake.add(rows, key_of, batch.counts)
        differing = [
            b
            for b in range(BUCKETS)
            if source.counts[b] != lake.counts[b] or source.sums[b] != lake.sums[b]
        ]
        if not differing:
            return verdict
        chosen: set[int] = set()
        held = 0
        for b in differing:
            size = max(source.counts[b], lake.counts[b])
            if chosen and held + size > self.itemize_rows:
                continue
            chosen.add(b)
            held += size
        unitemized = sum(
            max(source.counts[b], lake.counts[b]) for b in differing if b not in chosen
        )
        keys = self._differing_keys(reader, table, chosen)
        return attrs.evolve(
            verdict,
            differing_keys=tuple(keys[: self.max_keys]),
            more_differences=max(0, len(keys) - self.max_keys),
            unitemized_rows=unitemized,
        )

    def _differing_keys(
        self, reader: SourceTextReader, table: TableSchema, buckets: set[int]
    ) -> list[Any]:
        key_of, bucket_of = _key_of(table), _bucket_of(table)
        mask = BUCKETS - 1

        def chosen(rows: Sequence[tuple[Any, ...]]) -> list[int]:
            return [i for i, row in enumerate(rows) if hash(bucket_of(row)) & mask in buckets]

        source: _Itemized = {}
        lake: _Itemized = {}
        for rows in self._source_rows(reader, table, progress=False):
            _itemize(source, [rows[i] for i in chosen(rows)], key_of)
        for batch, rows in self._lake_rows(table, progress=False):
            picked = chosen(rows)
            counts = None if batch.counts is None else [batch.counts[i] for i in picked]
            _itemize(lake, [rows[i] for i in picked], key_of, counts)
        return _differences(source, lake)

    def _sampled(
        self,
        reader: SourceTextReader,
        table: TableSchema,
        size: int,
        seed: int,
        census: LakeCensus,
        parse: Callable[[Sequence[str]], tuple[Any, ...]],
    ) -> TableVerdict:
        self.progress.start(table.table_id, 2 * size)
        key_index = _key_index(table)
        texts = reader.sample(table, size, seed)
        typed = [parse([row[i] or "" for i in key_index]) for row in texts]
        rows = canonical_rows(texts, source_canons(table))
        self.progress.advance(len(rows))
        found = self.lake.rows_with_keys(table, typed)
        stored = _lake_canonical(found, lake_canons(table))
        self.progress.advance(len(stored))
        key_of = _key_of(table)
        source: _Itemized = {}
        lake: _Itemized = {}
        _itemize(source, rows, key_of)
        _itemize(lake, stored, key_of, found.counts)
        keys = _differences(source, lake)
        return TableVerdict(
            table.table_id,
            len(rows),
            len(stored),
            sum(map(fingerprint, rows)) & _MASK,
            sum(map(fingerprint, stored)) & _MASK,
            differing_keys=tuple(keys[: self.max_keys]),
            more_differences=max(0, len(keys) - self.max_keys),
            census=census,
            sample=SampleCounts(reader.count(table), census.live, seed),
        )

    def _source_rows(
        self, reader: SourceTextReader, table: TableSchema, progress: bool = True
    ) -> Iterator[Sequence[tuple[Any, ...]]]:
        canons = source_canons(table)
        for batch in reader.batches(table):
            rows = canonical_rows(batch, canons)
            if progress:
                self.progress.advance(len(rows))
            yield rows

    def _lake_rows(
        self, table: TableSchema, progress: bool = True
    ) -> Iterator[tuple[LakeBatch, list[tuple[Any, ...]]]]:
        canons = lake_canons(table)
        for batch in self.lake.batches(table):
            rows = _lake_canonical(batch, canons)
            if progress:
                self.progress.advance(len(rows))
            yield batch, rows


def _lake_canonical(batch: LakeBatch, canons: Sequence[ColumnCanon]) -> list[tuple[Any, ...]]:
    return canonical_columns(batch.num_rows, batch.columns, canons, batch.rendered)


def _differences(source: _Itemized, lake: _Itemized) -> list[Any]:
    keys = [k for k in source.keys() | lake.keys() if source.get(k) != lake.get(k)]
    return sorted(keys, key=repr)


def _key_index(table: TableSchema) -> list[int]:
    names = table.column_names
    return [names.index(k) for k in table.primary_key] or list(range(len(names)))


def _bucket_of(table: TableSchema) -> Callable[[tuple[Any, ...]], Any]:
    """What a row's bucket is the hash of: its key (the same on both sides)."""
    if not table.primary_key:
        return lambda row: row
    return operator.itemgetter(*_key_index(table))


def _key_of(table: TableSchema) -> Callable[[tuple[Any, ...]], Any]:
    """A row's key: its primary key's values (a keyless table's row is its own key)."""
    index = _key_index(table)
    if not table.primary_key:
        return lambda row: row
    getter = operator.itemgetter(*index)
    if len(index) == 1:
        return lambda row: (getter(row),)
    return getter


def _matches(table: TableSchema, pattern: str) -> bool:
    return fnmatch.fnmatchcase(str(table.table_id), pattern) or fnmatch.fnmatchcase(
        table.table_id.name, pattern
    )


def _select(tables: Iterable[TableSchema], patterns: Sequence[str]) -> list[TableSchema]:
    """The tables ``patterns`` name (``schema.table``, or a table of any schema by its name;
    shell wildcards allowed); all when none are given."""
    tables = list(tables)
    unmatched = [p for p in patterns if not any(_matches(t, p) for t in tables)]
    if unmatched:
        known = ", ".join(str(t.table_id) for t in tables[:10]) or "none"
        raise ConfigurationError(
            f"--table {unmatched[0]!r} names no replicated table (replicated: {known}"
            f"{', ...' if len(tables) > 10 else ''})"
        )
    if not patterns:
        return tables
    return [t for t in tables if any(_matches(t, p) for p in patterns)]
