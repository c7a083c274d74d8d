"""Opening psycopg2 connections, and translating driver errors into domain errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import errorcodes

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
_TRANSIENT_CLASSES = frozenset(
    {
        errorcodes.CLASS_CONNECTION_EXCEPTION,  # 08: the connection broke
        errorcodes.CLASS_TRANSACTION_ROLLBACK,  # 40: serialization failure, deadlock
        errorcodes.CLASS_INSUFFICIENT_RESOURCES,  # 53: disk full, out of memory, too many clients
        errorcodes.CLASS_OPERATOR_INTERVENTION,  # 57: shutdown, crash recovery, starting up
        errorcodes.CLASS_SYSTEM_ERROR,  # 58: I/O errors
    }
)
_CONFIGURATION_CLASSES = frozenset(
    {
        errorcodes.CLASS_INVALID_AUTHORIZATION_SPECIFICATION,  # 28: password, pg_hba.conf
        errorcodes.CLASS_INVALID_CATALOG_NAME,  # 3D: no such database
        errorcodes.CLASS_FEATURE_NOT_SUPPORTED,  # 0A
        errorcodes.CLASS_CONFIGURATION_FILE_ERROR,  # F0
        errorcodes.CLASS_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,  # 42: privileges, missing objects
        errorcodes.CLASS_INVALID_TRANSACTION_STATE,  # 25: a read-only standby
        errorcodes.CLASS_OBJECT_NOT_IN_PREREQUISITE_STATE,  # 55: wal_level, slots
        errorcodes.CLASS_INVALID_GRANTOR,  # 0L
        errorcodes.CLASS_INVALID_ROLE_SPECIFICATION,  # 0P
    }
)
_CODES: dict[str, type[ReplicatorError]] = {
    # A slot still held by a consumer that is leaving; a lock_timeout: retry later.
    errorcodes.OBJECT_IN_USE: SourceUnavailableError,
    errorcodes.LOCK_NOT_AVAILABLE: SourceUnavailableError,
    # max_replication_slots, max_wal_senders, ...
    errorcodes.CONFIGURATION_LIMIT_EXCEEDED: ConfigurationError,
    # A statement_timeout of the role.
    errorcodes.QUERY_CANCELED: ConfigurationError,
    # e.g. pgoutput not installed.
    errorcodes.UNDEFINED_FILE: ConfigurationError,
}
# The fix to print for codes an operator meets when setting up.
_FIXES: dict[str, str] = {
    errorcodes.INSUFFICIENT_PRIVILEGE: "grant the privilege named above to the role, or run "
    "`replicator check` for the exact statements",
    errorcodes.CONFIGURATION_LIMIT_EXCEEDED: "raise the server setting named above "
    "(max_replication_slots, max_wal_senders), or drop slots no pipeline uses "
    "(`replicator drop-slot --slot NAME`)",
    errorcodes.QUERY_CANCELED: "the role's statement_timeout cancelled it: ALTER ROLE <role> SET "
    "statement_timeout = 0",
    errorcodes.INVALID_PASSWORD: "check [sources.pg_replication.credentials] or "
    "SOURCES__PG_REPLICATION__CREDENTIALS",
    errorcodes.INVALID_AUTHORIZATION_SPECIFICATION: "allow this host and role in pg_hba.conf, "
    "for replication connections too",
    errorcodes.INVALID_CATALOG_NAME: "check the database name in "
    "[sources.pg_replication.credentials]",
    errorcodes.READ_ONLY_SQL_TRANSACTION: "the server is a read-only standby: point the "
    "credentials at the primary",
}
_WAL_LEVEL = (
    "set wal_level = logical in postgresql.conf (or the cloud's parameter group) and restart "
    "the server"
)
_REPLICATION_ATTRIBUTE = (
    "the role needs the REPLICATION attribute: ALTER ROLE <role> REPLICATION; on RDS: "
    "GRANT rds_replication TO <role>"
)


def _is_wal_level(lowered: str) -> bool:
    return "wal_level" in lowered


def _is_replication_attribute(lowered: str) -> bool:
    if "permission denied to start wal sender" in lowered:  # PostgreSQL 16 and later
        return True
    return "replication" in lowered and ("must be" in lowered or "permission denied" in lowered)


def _fix(code: str, lowered: str) -> str | None:
    """The fix for a server error: by its code. Two codes cover several setups whose fixes
    differ, and only the message tells them apart: 55000 (object_not_in_prerequisite_state:
    wal_level, or a slot in the wrong state) and 42501 (insufficient_privilege: the
    REPLICATION attribute, or a grant)."""
    if code == errorcodes.OBJECT_NOT_IN_PREREQUISITE_STATE and _is_wal_level(lowered):
        return _WAL_LEVEL
    if code == errorcodes.INSUFFICIENT_PRIVILEGE and _is_replication_attribute(lowered):
        return _REPLICATION_ATTRIBUTE
    return _FIXES.get(code)


def _connect_fix(first_line: str) -> str | None:
    """The fix for an error that carries no SQLSTATE, which only its text can tell.

    psycopg2 sets ``pgcode`` only on errors a session received. Everything libpq reports
    while connecting has none, the server's FATAL startup errors included: a wrong password
    (``password authentication failed``), no ``pg_hba.conf`` entry, an unknown database or
    role (``does not exist``), a role without REPLICATION opening a replication connection
    (``must be superuser or replication role to start walsender``; from PostgreSQL 16
    ``permission denied to start WAL sender``). Neither has a lost
    connection (``server closed the connection unexpectedly``), a refused one or a timeout:
    those have no fix, and are transient."""
    lowered = first_line.lower()
    if "pg_hba.conf" in lowered:
        return _FIXES[errorcodes.INVALID_AUTHORIZATION_SPECIFICATION]
    if "password authentication failed" in lowered or "does not exist" in lowered:
        return _FIXES[errorcodes.INVALID_PASSWORD]
    if _is_wal_level(lowered):
        return _WAL_LEVEL
    if _is_replication_attribute(lowered):
        return _REPLICATION_ATTRIBUTE
    return None


def classify(error: psycopg2.Error) -> type[ReplicatorError]:
    """The domain error class of a driver error: by SQLSTATE, by text only when it has none
    (see ``_connect_fix``). Errors psycopg2 raises itself without a code (InterfaceError on a
    closed connection, an adaptation error) are terminal."""
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
