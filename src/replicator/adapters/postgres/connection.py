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


def translate_error(error: Exception, doing: str) -> ReplicatorError:
    """A domain error for a psycopg2 failure, with a one-line, secret-free message."""
    first_line = redact(str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
    if isinstance(error, psycopg2.errors.ObjectInUse):
        # e.g. "replication slot ... is active for PID ...": a previous consumer is still
        # being torn down by the server, or another job runs; worth a retry.
        return SourceUnavailableError(f"{doing}: {first_line}")
    if isinstance(error, psycopg2.errors.InsufficientPrivilege):
        return ConfigurationError(f"{doing}: permission denied: {first_line}")
    if isinstance(error, psycopg2.OperationalError):
        lowered = first_line.lower()
        if "replication" in lowered and ("must be" in lowered or "permission denied" in lowered):
            return ConfigurationError(
                f"{doing}: {first_line} (the role needs the REPLICATION attribute: "
                "ALTER ROLE <role> REPLICATION; on RDS: GRANT rds_replication TO <role>)"
            )
        if "pg_hba.conf" in lowered:
            return ConfigurationError(
                f"{doing}: {first_line} (allow this host in pg_hba.conf, for replication "
                "connections too)"
            )
        if "password authentication failed" in first_line or "does not exist" in first_line:
            return ConfigurationError(
                f"{doing}: {first_line} (check [sources.pg_replication.credentials] or "
                "SOURCES__PG_REPLICATION__CREDENTIALS)"
            )
        return SourceUnavailableError(f"{doing}: {first_line}")
    return SourceReadError(f"{doing}: {first_line}")


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
