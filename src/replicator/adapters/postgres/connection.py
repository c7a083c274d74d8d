"""Opening psycopg2 connections, and translating driver errors into domain errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import (
    ConfigurationError,
    ReplicatorError,
    SourceReadError,
    SourceUnavailableError,
)

_PASSWORD_IN_DSN = re.compile(r"(://[^:/@]*:)[^@]*@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    """Remove passwords from a DSN or from an error message that may quote one."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_DSN.sub(r"\1***@", text))


# How a server error is classified, by its SQLSTATE (``pgcode``): the class (first two
# characters) decides, a few codes inside a class differ. Transient means a retry later may
# succeed without anyone acting; everything else needs an operator, and exits 2 or 1.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_CONFIGURATION_CLASSES = frozenset({"28", "3D", "0A", "F0", "42", "25", "55", "0L", "0P"})
_CODES: dict[str, type[ReplicatorError]] = {
    "55006": SourceUnavailableError,  # object_in_use: a slot still held by a leaving consumer
    "55P03": SourceUnavailableError,  # lock_not_available (lock_timeout): retry later
    "53400": ConfigurationError,  # configuration_limit_exceeded: max_replication_slots, ...
    "57014": ConfigurationError,  # query_canceled: a statement_timeout of the role
    "58P01": ConfigurationError,  # undefined_file: e.g. pgoutput not installed
}
# The fix to print for codes an operator meets when setting up.
_FIXES: dict[str, str] = {
    "42501": "grant the privilege named above to the role, or run `replicator check` for the "
    "exact statements",
    "53400": "raise the server setting named above (max_replication_slots, max_wal_senders), "
    "or drop slots no pipeline uses (`replicator drop-slot --slot NAME`)",
    "57014": "the role's statement_timeout cancelled it: ALTER ROLE <role> SET "
    "statement_timeout = 0",
    "28P01": "check [sources.pg_replication.credentials] or SOURCES__PG_REPLICATION__CREDENTIALS",
    "28000": "allow this host and role in pg_hba.conf, for replication connections too",
    "3D000": "check the database name in [sources.pg_replication.credentials]",
    "25006": "the server is a read-only standby: point the credentials at the primary",
}
_REPLICATION_ATTRIBUTE = (
    "the role needs the REPLICATION attribute: ALTER ROLE <role> REPLICATION; on RDS: "
    "GRANT rds_replication TO <role>"
)


def _fix(code: str, lowered: str) -> str | None:
    if "wal_level" in lowered:
        return (
            "set wal_level = logical in postgresql.conf (or the cloud's parameter group) and "
            "restart the server"
        )
    if "replication" in lowered and ("must be" in lowered or "permission denied" in lowered):
        return _REPLICATION_ATTRIBUTE
    return _FIXES.get(code)


def _connect_fix(first_line: str) -> str | None:
    """Errors libpq reports while connecting carry no SQLSTATE: only their text tells a wrong
    setting (one with a fix) from an unreachable server (none)."""
    lowered = first_line.lower()
    if "pg_hba.conf" in lowered:
        return _FIXES["28000"]
    if "password authentication failed" in lowered or "does not exist" in lowered:
        return _FIXES["28P01"]
    return _fix("", lowered)


def classify(error: psycopg2.Error) -> type[ReplicatorError]:
    """The domain error class of a driver error: by SQLSTATE, by text only when it has none."""
    code = error.pgcode
    if not code:
        if isinstance(error, psycopg2.OperationalError):
            has_fix = _connect_fix(_first_line(error)) is not None
            return ConfigurationError if has_fix else SourceUnavailableError
        return SourceReadError
    if code in _CODES:
        return _CODES[code]
    if code[:2] in _TRANSIENT_CLASSES:
        return SourceUnavailableError
    if code[:2] in _CONFIGURATION_CLASSES:
        return ConfigurationError
    return SourceReadError


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return redact(text.splitlines()[0] if text else repr(error))


def translate_error(error: Exception, doing: str) -> ReplicatorError:
    """A domain error for a psycopg2 failure, with a one-line, secret-free message that names
    the fix when one is known. Classified by SQLSTATE: a wrong setting or a missing privilege
    is terminal (exit 2), never "retry later" (exit 75), so a scheduler does not retry it
    forever."""
    first_line = _first_line(error)
    if not isinstance(error, psycopg2.Error):
        return SourceReadError(f"{doing}: {first_line}")
    kind = classify(error)
    code = error.pgcode or ""
    fix = _fix(code, first_line.lower()) if code else _connect_fix(first_line)
    if kind is SourceUnavailableError or fix is None:
        return kind(f"{doing}: {first_line}")
    return kind(f"{doing}: {first_line} ({fix})")


# Text output settings for every session that produces values (snapshot readers and the
# replication connection), so a value prints the same whichever way it travels.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "bytea_output": "hex",
    "extra_float_digits": "3",
    # money prints with the session's monetary locale: C gives '-$1,234.56' everywhere.
    "lc_monetary": "C",
}


def startup_options() -> str:
    """The settings as a libpq ``options`` string (values contain no spaces)."""
    return " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())


def connect(settings: PostgresSettings, **kwargs: Any) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(
            settings.dsn,
            connect_timeout=settings.connect_timeout_s,
            application_name="replicator",
            **kwargs,
        )
    except psycopg2.Error as e:
        raise translate_error(e, "cannot connect to the source PostgreSQL") from e


@contextmanager
def connection(
    settings: PostgresSettings, **kwargs: Any
) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(settings, **kwargs)
    try:
        yield conn
    finally:
        conn.close()
