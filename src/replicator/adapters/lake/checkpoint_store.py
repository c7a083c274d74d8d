"""The checkpoint kept in the lake: written by the writer's load, in the same package as the
rows, into dlt's source state (``_dlt_pipeline_state``); read back from the destination itself.

``checkpoint_state`` and ``checkpoint_from_state`` convert a ``Checkpoint`` to the state's
plain values and back; ``DltCheckpointStore`` is the ``CheckpointStore`` port.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, Any

import attrs
import dlt

from replicator.adapters.lake import error_mapping
from replicator.adapters.lake.shapes import dump_shapes, load_shapes
from replicator.domain.errors import ConfigurationError, ReplicatorError
from replicator.domain.lsn import Lsn
from replicator.domain.model import Checkpoint, SourceIdentity, TableId
from replicator.domain.ports import CheckpointStore

if TYPE_CHECKING:
    from replicator.adapters.lake.writer import DltLakeWriter

log = logging.getLogger(__name__)

# dlt's source the writer loads under; the checkpoint is a key of its state.
SOURCE_NAME = "pg_replication"
STATE_CHECKPOINT = "checkpoint"


class DltCheckpointStore(CheckpointStore):
    """Reads the checkpoint from the destination's ``_dlt_pipeline_state``, never from the local
    working dir: what counts is what the lake committed."""

    def __init__(self, writer: DltLakeWriter) -> None:
        self._writer = writer

    def load(self) -> Checkpoint | None:
        return read_checkpoint(self._writer.pipeline(), self._writer.destination_name)


def read_checkpoint(pipeline: dlt.Pipeline, destination: str) -> Checkpoint | None:
    """The checkpoint the destination of ``pipeline`` holds (None: none yet); failures are
    classified as a load's are (``error_mapping``)."""
    from dlt.common.destination.client import WithStateSync
    from dlt.common.destination.exceptions import DestinationUndefinedEntity
    from dlt.pipeline.state_sync import load_pipeline_state_from_destination

    try:
        with pipeline.destination_client() as client:
            if not isinstance(client, WithStateSync):
                raise ConfigurationError(f"destination {destination} cannot keep pipeline state")
            state = load_pipeline_state_from_destination(pipeline.pipeline_name, client)
    except DestinationUndefinedEntity:
        return None
    except ReplicatorError:
        raise
    except Exception as e:
        raise error_mapping.read_error(e, "the checkpoint") from e
    return checkpoint_from_state(state)


def checkpoint_state(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "lsn": str(checkpoint.position),
        "tables": sorted([t.schema, t.name] for t in checkpoint.tables),
        "written_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "schemas": dump_shapes(checkpoint.schemas),
        "starts": sorted([t.schema, t.name, str(p)] for t, p in checkpoint.starts.items()),
        "in_flight": (
            None
            if checkpoint.in_flight is None
            else [
                str(checkpoint.in_flight[0]),
                str(checkpoint.in_flight[1]),
                checkpoint.in_flight[2],
            ]
        ),
        "slot": checkpoint.slot,
        "idle": checkpoint.idle,
        "source": None if checkpoint.source is None else attrs.asdict(checkpoint.source),
        "commit_ts": None if checkpoint.commit_ts is None else checkpoint.commit_ts.isoformat(),
    }


def checkpoint_from_state(state: Any) -> Checkpoint | None:
    if not isinstance(state, dict):
        return None
    value = state.get("sources", {}).get(SOURCE_NAME, {}).get(STATE_CHECKPOINT)
    if not value:
        return None
    tables = frozenset(TableId(schema, name) for schema, name in value.get("tables", []))
    written = value.get("written_at")
    at = datetime.datetime.fromisoformat(written) if written else None
    starts = {TableId(sch, name): Lsn.parse(p) for sch, name, p in value.get("starts", [])}
    part = value.get("in_flight")
    return Checkpoint(
        Lsn.parse(value["lsn"]),
        tables,
        at,
        load_shapes(value.get("schemas")),
        starts,
        _in_flight(part),
        value.get("slot"),
        bool(value.get("idle", False)),
        _source(value.get("source")),
        datetime.datetime.fromisoformat(value["commit_ts"]) if value.get("commit_ts") else None,
    )


def _source(value: Any) -> SourceIdentity | None:
    if not isinstance(value, dict):
        return None
    return SourceIdentity(
        str(value["system_identifier"]), str(value["database"]), bool(value.get("embedded"))
    )


def _in_flight(part: Any) -> tuple[Lsn, Lsn, int] | None:
    """A transaction written in parts: (commit, the last change held, its number there). A
    checkpoint of an earlier version counted the changes instead, which does not survive a
    change of the replicated tables: that transaction is then applied again from its start."""
    if not part:
        return None
    if len(part) != 3:
        log.warning(
            "the checkpoint's transaction in flight is in an older form: replaying it whole"
        )
        return None
    return Lsn.parse(part[0]), Lsn.parse(part[1]), int(part[2])
