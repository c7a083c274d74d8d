"""LsnCheckpoint: where CDC resumes, and the proof that nothing was skipped.

The lake's checkpoint (stored with the data, in the same load) says which changes the lake
holds. The slot's ``confirmed_flush`` says from where the server will stream. The slot is
confirmed only after the lake has committed, so the slot can never be ahead of the lake; if it
is, changes between the two positions were streamed to nobody and the lake can no longer be
made exact by CDC: the only remedy is a new snapshot.
"""

from __future__ import annotations

import attrs

from replicator.domain.errors import CheckpointError, SlotLostError
from replicator.domain.model import Checkpoint, SlotState
from replicator.domain.ports import CheckpointStore

RESNAPSHOT = "re-run `replicator --mode snapshot` to start over from a fresh snapshot"


@attrs.define(eq=False)
class LsnCheckpoint:
    store: CheckpointStore
    slot_name: str

    def resolve(self, slot: SlotState | None) -> Checkpoint:
        """The checkpoint to resume from, after checking it against the slot."""
        checkpoint = self.store.load()
        if checkpoint is None:
            raise CheckpointError(
                "the lake holds no replication checkpoint: run `replicator --mode snapshot` "
                "first (CDC continues from the snapshot)"
            )
        if slot is None:
            raise SlotLostError(
                f"replication slot {self.slot_name!r} does not exist on the source; {RESNAPSHOT}"
            )
        if slot.wal_status == "lost":
            raise SlotLostError(
                f"replication slot {self.slot_name!r} was invalidated by the server "
                f"(wal_status=lost, max_slot_wal_keep_size exceeded); {RESNAPSHOT}"
            )
        if slot.confirmed_flush is not None and slot.confirmed_flush > checkpoint.position:
            raise SlotLostError(
                f"replication slot {self.slot_name!r} is at {slot.confirmed_flush} but the lake "
                f"only holds changes up to {checkpoint.position}: the changes in between are "
                f"lost to the lake; {RESNAPSHOT}"
            )
        return checkpoint
