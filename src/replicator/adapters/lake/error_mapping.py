"""dlt's and the destinations' exceptions as the domain's errors, decided by class, not by text.

One decision for every lake operation (a load, a read of the checkpoint, a read of the tables'
positions), so that the same failure exits the same way wherever it happens:

- an error of ours anywhere in the chain (a source failing inside dlt's extract) is itself;
- dlt's missing configuration names the keys and env vars (``ConfigurationError``, exit 2);
- credentials the destination refused (HTTP 401/403 from the Databricks connector) are
  terminal: a retry sends the same credentials again;
- otherwise the first exception in the chain that dlt marks decides: ``TransientException``
  (``DestinationTransientException``, ``LoadClientJobRetry``, ``DestinationConnectionError``,
  ...) is worth a retry, ``TerminalException`` (``DestinationTerminalException``,
  ``LoadClientJobFailed``, ...) is not;
- unmarked, a network failure in the chain (``ConnectionError``, ``TimeoutError``) is
  transient, anything else terminal.

Transient becomes ``DestinationUnavailableError`` (exit 75); terminal ``LakeWriteError`` for a
load and ``LakeReadError`` for a read (exit 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.exceptions import TerminalException, TransientException

from replicator.domain.errors import (
    ConfigurationError,
    DestinationUnavailableError,
    LakeReadError,
    LakeWriteError,
    ReplicatorError,
)

# HTTP statuses of a refused credential or missing privilege.
REFUSED_HTTP_CODES = frozenset({401, 403})


def write_error(error: BaseException, destination: str, step: str) -> ReplicatorError:
    """The domain error for a failed load (``step``: dlt's extract, normalize or load)."""
    known = _known(error)
    if known is not None:
        return known
    cause = root_cause(error)
    detail = first_line(cause) or repr(cause)
    if transient(error):
        return DestinationUnavailableError(f"{destination}: {step} failed: {detail}")
    return LakeWriteError(f"{destination}: {step} failed: {type(cause).__name__}: {detail}")


def read_error(error: BaseException, what: str) -> ReplicatorError:
    """The domain error for a failed read of ``what`` (``the checkpoint``) from the lake."""
    known = _known(error)
    if known is not None:
        return known
    message = f"reading {what} from the lake failed: {type(error).__name__}: {first_line(error)}"
    if transient(error):
        return DestinationUnavailableError(message)
    return LakeReadError(message)


def transient(error: BaseException) -> bool:
    """Whether a retry later may succeed (see the module's docstring)."""
    chain = list(_chain(error))
    if any(_refused(e) for e in chain):
        return False
    for seen in chain:
        if isinstance(seen, TerminalException):
            return False
        if isinstance(seen, TransientException):
            return True
    return any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain)


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of the chain, or the first error of ours on the way there."""
    while error.__cause__ is not None or error.__context__ is not None:
        if isinstance(error, ReplicatorError):
            return error
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def missing_config(error: ConfigFieldMissingException) -> ConfigurationError:
    """Name the missing keys and the env vars that would set them."""
    keys = _missing_keys(error.traces)
    if not keys:
        return ConfigurationError(f"missing configuration for {error.spec_name}: {error.fields}")
    section = keys[0][0].rsplit(".", 1)[0]
    names = ", ".join(k.rsplit(".", 1)[1] for k, _ in keys)
    env = ", ".join(e for _, e in keys)
    return ConfigurationError(
        f"missing configuration: {names} in [{section}] of .dlt/secrets.toml, or env {env}"
    )


def _known(error: BaseException) -> ReplicatorError | None:
    """Our own error in the chain, or dlt's missing configuration as ours."""
    cause = root_cause(error)
    if isinstance(cause, ReplicatorError):
        return cause
    if isinstance(cause, ConfigFieldMissingException):
        return missing_config(cause)
    if isinstance(error, ConfigFieldMissingException):
        return missing_config(error)
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    met: set[int] = set()
    while seen is not None and id(seen) not in met:
        met.add(id(seen))
        yield seen
        seen = seen.__cause__ or seen.__context__


def _refused(error: BaseException) -> bool:
    """The Databricks connector's ``RequestError`` carries the HTTP status in its context."""
    context = getattr(error, "context", None)
    return isinstance(context, Mapping) and context.get("http-code") in REFUSED_HTTP_CODES


def _missing_keys(traces: Mapping[str, Sequence[Any]]) -> list[tuple[str, str]]:
    """(dotted key, env var) for each missing leaf field, following nested specs."""
    found: list[tuple[str, str]] = []
    for field, field_traces in traces.items():
        nested = [t for t in field_traces if hasattr(t, "traces")]
        if nested:
            found.extend(_missing_keys(nested[0].traces))
            continue
        leaves = [t for t in field_traces if getattr(t, "sections", None) is not None]
        if not leaves:
            continue
        deepest = max(len(t.sections) for t in leaves)
        sections = next(t.sections for t in leaves if len(t.sections) == deepest)
        env = "__".join([*sections, field]).upper()
        found.append((".".join([*sections, field]), env))
    return found
