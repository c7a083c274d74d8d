"""LsnCheckpoint: where CDC resumes, and the proof that nothing was skipped.

The lake's checkpoint (stored with the data, in the same load) says which changes the lake
holds. The slot's ``confirmed_flush`` says from where the server will stream. The slot is
confirmed only after the lake has committed, so the slot can never be ahead of the lake; if it
is, changes between the two positions were streamed to nobody and the lake can no longer be
made exact by CDC: the only remedy is a new snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from replicator.domain.errors import CheckpointError, ConfigurationError, SlotLostError
from replicator.domain.model import Checkpoint, SlotState, SourceIdentity
from replicator.domain.ports import CheckpointStore

log = logging.getLogger(__name__)

RESNAPSHOT = "re-run `replicator --mode snapshot` to start over from a fresh snapshot"


# How many slot names a pipeline may use at once: the one its lake continues from, one being
# made by a snapshot, and one left by an interrupted snapshot (or another pipeline).
GENERATIONS = 3


def same_source(mirrored: SourceIdentity, configured: SourceIdentity) -> bool:
    """The lake's source is the configured one (its demo's sample database, re-created, counts
    as the same: both are the embedded default's)."""
    if mirrored.embedded or configured.embedded:
        return mirrored.embedded == configured.embedded  # the demo's lake is only the demo's
    if not (mirrored.system_identifier and configured.system_identifier):
        return mirrored.database == configured.database  # a service hiding the identifier
    return (mirrored.system_identifier, mirrored.database) == (
        configured.system_identifier,
        configured.database,
    )


def refuse_other_source(
    mirrored: SourceIdentity | None, configured: SourceIdentity, effect: str
) -> None:
    """Stop before a lake of one source takes another's data (a checkpoint of an older version
    names no source: nothing to compare)."""
    if mirrored is None or same_source(mirrored, configured):
        return
    raise ConfigurationError(
        f"this lake mirrors {mirrored}, but the configured source is {configured}: {effect} "
        "into another database's lake. Point [sources.pg_replication.credentials] back at its "
        "source, or give this source a lake of its own (DESTINATION__FILESYSTEM__BUCKET_URL, "
        "another catalog or dataset); `replicator cleanup --yes` empties this one, and "
        "`replicator --mode snapshot --new-source` makes it mirror the configured source"
    )


def slot_generations(base: str) -> tuple[str, ...]:
    """The names a pipeline's replication slot can take: ``base``, ``base_2``, ``base_3``. Each
    snapshot takes one the lake does not use, so the working slot stays until it commits."""
    stem = base.encode()[:61].decode(errors="ignore")
    return (base, *(f"{stem}_{n}" for n in range(2, GENERATIONS + 1)))


@attrs.define(eq=False)
class LsnCheckpoint:
    store: CheckpointStore
    # The configured slot name: the slot of checkpoints that do not name theirs.
    slot_name: str

    def slot_of(self, checkpoint: Checkpoint | None) -> str:
        """The slot a lake with this checkpoint continues from."""
        if checkpoint is None or checkpoint.slot is None:
            return self.slot_name
        return checkpoint.slot

    def resolve(
        self, slots: Callable[[str], SlotState | None], source: SourceIdentity | None = None
    ) -> Checkpoint:
        """The checkpoint to resume from (its ``slot`` and ``source`` filled in), after checking
        it against ``source`` (the configured one: a lake continues only from the source it
        mirrors) and against its slot as ``slots`` reads it."""
        checkpoint = self.store.load()
        if checkpoint is None:
            raise CheckpointError(
                "the lake holds no replication checkpoint, so CDC has no position to continue "
                "from: no snapshot has been taken into this lake, or the last one ran without "
                "a replication slot (the role lacked REPLICATION then; it warned so). Run "
                "`replicator --mode snapshot`, then `replicator --mode cdc`"
            )
        if source is not None:
            refuse_other_source(checkpoint.source, source, "CDC would apply its changes")
            checkpoint = attrs.evolve(checkpoint, source=source)
        name = self.slot_of(checkpoint)
        slot = slots(name)
        if slot is None:
            raise SlotLostError(
                f"replication slot {name!r} does not exist on the source; {RESNAPSHOT}"
            )
        if slot.wal_status == "lost":
            raise SlotLostError(
                f"replication slot {name!r} was invalidated by the server "
                f"(wal_status=lost, max_slot_wal_keep_size exceeded); {RESNAPSHOT}"
            )
        ahead = slot.confirmed_flush is not None and slot.confirmed_flush > checkpoint.position
        if ahead and checkpoint.idle:
            # psycopg2 confirms the server's WAL end from keepalives once everything received
            # is confirmed: after an idle checkpoint (nothing of ours pending) the slot can only
            # have moved over WAL that held no change of ours. Nothing is lost.
            log.info(
                "replication slot %s moved from the lake's idle checkpoint %s to %s over WAL "
                "without changes of ours",
                name,
                checkpoint.position,
                slot.confirmed_flush,
            )
        elif ahead:
            raise SlotLostError(
                f"replication slot {name!r} is at {slot.confirmed_flush} but the lake "
                f"only holds changes up to {checkpoint.position}: the changes in between are "
                f"lost to the lake; {RESNAPSHOT}"
            )
        return attrs.evolve(checkpoint, slot=name)
