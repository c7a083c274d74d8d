"""The error hierarchy: callers decide on retries by type, never by message.

``TransientError``: may succeed if retried later (a server restarting, a network blip).
``TerminalError``: retrying cannot help; the message names the fix.
Adapters translate driver exceptions into these at their boundary.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Root of every error this application raises on purpose."""


class TransientError(ReplicatorError):
    """Retry with backoff may succeed."""


class TerminalError(ReplicatorError):
    """Retrying will not help: an operator must act. The message says how."""


class SourceUnavailableError(TransientError):
    """The source database cannot be reached or refused the connection for now."""


class PipelineBusyError(TransientError):
    """Another run of the same pipeline (a snapshot or CDC) holds it: retry when it ends."""


class DestinationUnavailableError(TransientError):
    """The lake or warehouse cannot be reached for now."""


class ConfigurationError(TerminalError):
    """A setting is missing or wrong; the message names the key or env var."""


class SourceSchemaError(TerminalError):
    """The source's tables or types cannot be replicated as they are."""


class SourceReadError(TerminalError):
    """Reading from the source failed in a way a retry will not fix."""


class LakeWriteError(TerminalError):
    """The lake rejected a write; nothing was committed for the failed table."""


class LakeReadError(TerminalError):
    """Reading the lake failed in a way a retry will not fix (a refused credential, say)."""


class CheckpointError(TerminalError):
    """The stored replication position is missing, inconsistent, or behind the slot."""


class SlotLostError(CheckpointError):
    """The slot is gone, invalidated, or past the lake: only a new snapshot makes the lake exact."""
