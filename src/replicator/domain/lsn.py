"""Log sequence numbers: positions in PostgreSQL's write-ahead log."""

from __future__ import annotations

import re

import attrs

_LSN_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_MAX = (1 << 64) - 1


def _check_range(_instance: object, _attribute: object, value: int) -> None:
    if not 0 <= value <= _MAX:
        raise ValueError(f"LSN out of range: {value}")


@attrs.frozen(order=True)
class Lsn:
    """A 64-bit WAL position, written by PostgreSQL as two hex halves: ``16/B374D848``."""

    value: int = attrs.field(validator=_check_range)

    @classmethod
    def parse(cls, text: str) -> Lsn:
        match = _LSN_TEXT.match(text.strip())
        if match is None:
            raise ValueError(f"not an LSN: {text!r} (expected the form '16/B374D848')")
        high, low = (int(part, 16) for part in match.groups())
        return cls((high << 32) | low)

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __int__(self) -> int:
        return self.value

    def __sub__(self, other: Lsn) -> int:
        """Bytes of WAL between two positions."""
        return self.value - other.value
