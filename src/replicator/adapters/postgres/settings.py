"""Plain settings for the Postgres adapters; the entrypoint fills them from dlt's config."""

from __future__ import annotations

import attrs

DEFAULT_SLOT_NAME = "dlt_cdc_slot"
DEFAULT_PUB_NAME = "dlt_cdc_pub"
# What happens to a table with neither a primary key nor REPLICA IDENTITY FULL: its updates
# and deletes cannot be matched (and would fail at the source if published).
KEYLESS_POLICIES = ("skip", "insert_only")


@attrs.frozen
class PostgresSettings:
    """Where the source is and what to replicate from it.

    ``dsn`` is a secret: it is never logged and excluded from ``repr``.
    """

    dsn: str = attrs.field(repr=False)
    schemas: tuple[str, ...] = ("public",)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # Columns landing as PostgreSQL's text output whatever their type: ``table.column`` or
    # ``schema.table.column`` patterns, shell wildcards allowed.
    text_columns: tuple[str, ...] = ()
    slot_name: str = DEFAULT_SLOT_NAME
    pub_name: str = DEFAULT_PUB_NAME
    connect_timeout_s: int = 10
    # While the stream is idle, write a logical message into this database's WAL this often
    # (0: never), so a quiet publication still sees WAL pass and its slot can advance.
    heartbeat_s: float = 0.0
    # "skip": such tables are left out (with a warning naming the fix); "insert_only": they are
    # snapshotted and their inserts (and TRUNCATEs) replicated, through a second publication
    # that publishes nothing else, so the source's updates and deletes keep working.
    keyless_tables: str = "skip"
    # The embedded default's sample database (the demo), not a configured source.
    embedded: bool = False

    @property
    def inserts_pub_name(self) -> str:
        """The publication of insert-only tables (PostgreSQL names have at most 63 bytes)."""
        return f"{self.pub_name.encode()[:55].decode(errors='ignore')}_inserts"
