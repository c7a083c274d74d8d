"""The source's housekeeping for ``drop-slot`` (and ``cleanup --drop-slot``): the replication slot
and the publications."""

from __future__ import annotations

from replicator.adapters.postgres.settings import PostgresSettings
from replicator.adapters.postgres.slots import drop_publication, drop_slot


class PostgresSourceAdmin:
    def __init__(self, settings: PostgresSettings) -> None:
        self._settings = settings

    def drop_slot(self, name: str) -> bool:
        """True: dropped; False: there is no such slot. Refused (in use, or not the role's to
        drop): ``ConfigurationError`` saying why."""
        return drop_slot(self._settings, name)

    def drop_publication(self, name: str) -> bool:
        """True: dropped; False: there is no such publication. Refused: ``ConfigurationError``
        with the statement that drops it."""
        return drop_publication(self._settings, name)
