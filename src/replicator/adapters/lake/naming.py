"""Source names -> lake names, for tables and columns: valid everywhere, never colliding.

The rule (documented in the README, section *Names in the lake*):

1. A name is transliterated to ASCII where Unicode allows it (NFKD, accents dropped:
   ``café`` -> ``cafe``), then normalised by dlt's ``sql_ci_v1`` convention: lower case,
   every run of other characters becomes one ``_``, a leading digit gets a ``_`` in front,
   trailing ``_`` are dropped. Ordinary names (``order_items``) are left as they are.
2. Within one set of names (the replicated tables; the columns of one table), names that land
   on the same lake name are told apart: the spelling that is already canonical keeps the
   plain name (for tables, a ``public`` one before a schema-prefixed one), every other gets
   ``_`` and six hex digits of the SHA-1 of its exact source spelling (``"Orders"`` ->
   ``orders_8b5f48``). Two schema-prefixed tables that are both canonical both get a suffix.
3. A name with characters that have no ASCII form (``数据``, ``straße``), with no letter or digit
   left (``?``), or whose lake name would pass the identifier limit, always gets the suffix,
   whatever its neighbours.

The result is a fixed point of ``sql_ci_v1``, so dlt, which normalises every identifier again
with that convention, never changes it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Hashable, Iterable
from functools import cache
from typing import Generic, TypeVar

import attrs
from dlt.common.normalizers.naming import NamingConvention

from replicator.adapters.lake.settings import MAX_IDENTIFIER_LENGTH, NAMING_CONVENTION
from replicator.domain.model import DEFAULT_SCHEMA, TableId, TableSchema

K = TypeVar("K", bound=Hashable)

TAG_DIGITS = 6
_PUBLIC, _PREFIXED, _OTHER = 0, 1, 2  # who keeps the plain name in a clash: lowest rank, alone


@cache
def convention() -> NamingConvention:
    """dlt's convention for lake identifiers, as the pipeline's schema uses it."""
    from dlt.common.normalizers.naming import sql_ci_v1

    assert NAMING_CONVENTION == "sql_ci_v1"
    return sql_ci_v1.NamingConvention()


def table_names(tables: Iterable[TableId]) -> dict[TableId, str]:
    """The lake name of each table, decided among all of them: pass every replicated table."""
    return _assign(
        _Name(
            key=table,
            spelling=table.lake_name,
            source=f"{_quoted(table.schema)}.{_quoted(table.name)}",
            rank=_table_rank(table),
        )
        for table in tables
    )


def column_names(columns: Iterable[str]) -> dict[str, str]:
    """The lake name of each column of one table, decided among all its columns."""
    return _assign(
        _Name(key=c, spelling=c, source=c, rank=_PUBLIC if _canonical(c) else _OTHER)
        for c in columns
    )


def lake_key(table: TableSchema) -> list[str]:
    """The lake columns a table's rows are merged by: the primary key's lake names, the row
    digest of a keyless FULL table, none for an inserts-only table."""
    if table.keyless_full:
        return [table.lake_columns.row_key]
    if table.inserts_only:
        return []
    columns = column_names(table.column_names)
    return [columns[k] for k in table.primary_key]


def normalise(name: str) -> str:
    """``name`` transliterated to ASCII where possible, then in ``sql_ci_v1`` form."""
    try:
        return convention().normalize_identifier(_transliterated(name)) or "_"
    except ValueError:  # nothing but spaces
        return "_"


@attrs.frozen
class _Name(Generic[K]):
    key: K
    spelling: str  # what is normalised
    source: str  # what the suffix hashes: the exact, unambiguous source spelling
    rank: int


def _assign(names: Iterable[_Name[K]]) -> dict[K, str]:
    items = list(names)
    plain = {n.key: normalise(n.spelling) for n in items}
    forced = {n.key for n in items if _meaningless(plain[n.key]) or not _transliterable(n.spelling)}
    groups: dict[str, list[_Name[K]]] = {}
    for n in items:
        if n.key not in forced:
            groups.setdefault(plain[n.key], []).append(n)
    result: dict[K, str] = {}
    tagged: list[_Name[K]] = [n for n in items if n.key in forced]
    for name, group in groups.items():
        keeper = _keeper(group)
        for n in group:
            if n is keeper and len(name) <= MAX_IDENTIFIER_LENGTH:
                result[n.key] = name
            else:
                tagged.append(n)
    used = set(result.values())
    for n in sorted(tagged, key=lambda n: n.source):
        digits = TAG_DIGITS
        while (lake := _tagged(plain[n.key], n.source, digits)) in used:
            digits += 2  # a clash with a literal ``x_<hex>`` name: practically never
        used.add(lake)
        result[n.key] = lake
    return {n.key: result[n.key] for n in items}  # in the given order: columns stay in order


def _keeper(group: list[_Name[K]]) -> _Name[K] | None:
    """The one name of a clash that keeps the plain lake name, if one is clearly first."""
    if len(group) == 1:
        return group[0]
    best = min(n.rank for n in group)
    first = [n for n in group if n.rank == best]
    return first[0] if best != _OTHER and len(first) == 1 else None


def _tagged(plain: str, source: str, digits: int) -> str:
    tag = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()[:digits]
    room = MAX_IDENTIFIER_LENGTH - len(tag) - 1
    return convention().normalize_identifier(f"{plain[:room]}_{tag}")


def _table_rank(table: TableId) -> int:
    if not _canonical(table.lake_name):
        return _OTHER
    return _PUBLIC if table.schema == DEFAULT_SCHEMA else _PREFIXED


def _canonical(spelling: str) -> bool:
    return normalise(spelling) == spelling


def _transliterated(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _transliterable(name: str) -> bool:
    return _transliterated(name).isascii()


def _meaningless(lake: str) -> bool:
    """Nothing but ``_`` is left (``"?"``, ``"数据"``): only the suffix can tell them apart."""
    return not lake.strip("_")


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
