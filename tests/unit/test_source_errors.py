"""Driver errors become domain errors by SQLSTATE: a wrong setting or a missing privilege exits 2
(an operator must act), only what a later retry can cure exits 75."""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest

from replicator.adapters.postgres.connection import translate_error
from replicator.domain.errors import ConfigurationError, SourceReadError, SourceUnavailableError


def server_error(code: str, message: str) -> psycopg2.Error:
    """An error as psycopg2 raises it for a server's report: the class psycopg2 has for the
    SQLSTATE, with ``pgcode`` and ``pgerror`` set the way psycopg2 sets (and unpickles) them."""
    error: psycopg2.Error = psycopg2.errors.lookup(code)(message)
    error.__setstate__({"pgcode": code, "pgerror": f"ERROR:  {message}\n"})
    return error


def test_server_error_builds_what_psycopg2_raises() -> None:
    error = server_error("57P01", "terminating connection due to administrator command")
    assert isinstance(error, psycopg2.errors.AdminShutdown)
    assert isinstance(error, psycopg2.OperationalError)
    assert error.pgcode == "57P01"


@pytest.mark.parametrize(
    ("code", "message", "kind", "fix"),
    [
        # The case: a server without logical decoding is a setting, never "retry later".
        (
            "55000",
            "logical decoding requires wal_level >= logical",
            ConfigurationError,
            "set wal_level = logical",
        ),
        (
            "42501",
            "permission denied for database app",
            ConfigurationError,
            "replicator check",
        ),
        (
            "42501",
            "permission denied to create replication slot",
            ConfigurationError,
            "ALTER ROLE <role> REPLICATION",
        ),
        (
            "53400",
            "all replication slots are in use",
            ConfigurationError,
            "max_replication_slots",
        ),
        ("57014", "canceling statement due to statement timeout", ConfigurationError, "= 0"),
        ("3D000", 'database "nope" does not exist', ConfigurationError, "database name"),
        (
            "25006",
            "cannot execute CREATE PUBLICATION in a read-only transaction",
            ConfigurationError,
            "primary",
        ),
        (
            "42501",
            "must be superuser or replication role to use replication slots",
            ConfigurationError,
            "ALTER ROLE <role> REPLICATION",
        ),
        (
            "42501",
            "permission denied to use replication slots",  # PostgreSQL 16 and later
            ConfigurationError,
            "ALTER ROLE <role> REPLICATION",
        ),
        (
            "55000",
            "replication slots can only be used if max_replication_slots > 0",
            ConfigurationError,
            None,
        ),
        ("28P01", 'password authentication failed for user "app"', ConfigurationError, "SOURCES__"),
        ("28000", 'no pg_hba.conf entry for host "10.0.0.1"', ConfigurationError, "pg_hba.conf"),
        ("0A000", "logical decoding on standby is not supported", ConfigurationError, None),
        ("F0000", "configuration file contains errors", ConfigurationError, None),
        ("0L000", "invalid grantor", ConfigurationError, None),
        ("0P000", 'role "nobody" does not exist', ConfigurationError, None),
        ("58P01", 'could not access file "pgoutput": No such file', ConfigurationError, None),
        ("42P01", 'relation "public.gone" does not exist', ConfigurationError, None),
        ("42704", 'replication slot "gone" does not exist', ConfigurationError, None),
        ("42601", 'syntax error at or near "SELEC"', ConfigurationError, None),
        # What a retry can cure.
        ("55006", 'replication slot "s" is active for PID 42', SourceUnavailableError, None),
        (
            "57P01",
            "terminating connection due to administrator command",
            SourceUnavailableError,
            None,
        ),
        (
            "57P02",
            "terminating connection because of crash of another server process",
            SourceUnavailableError,
            None,
        ),
        ("57P03", "the database system is starting up", SourceUnavailableError, None),
        ("57P04", "database dropped", SourceUnavailableError, None),
        (
            "57P05",
            "terminating connection due to idle-session timeout",
            SourceUnavailableError,
            None,
        ),
        ("53300", "sorry, too many clients already", SourceUnavailableError, None),
        ("53100", "could not extend file: No space left on device", SourceUnavailableError, None),
        ("53200", "out of memory", SourceUnavailableError, None),
        ("40001", "could not serialize access", SourceUnavailableError, None),
        ("40P01", "deadlock detected", SourceUnavailableError, None),
        ("08006", "connection failure", SourceUnavailableError, None),
        ("08000", "connection exception", SourceUnavailableError, None),
        ("08003", "connection does not exist", SourceUnavailableError, None),
        ("08P01", "invalid message format", SourceUnavailableError, None),
        ("58030", "could not read block 0 in file: I/O error", SourceUnavailableError, None),
        ("55P03", "could not obtain lock on relation", SourceUnavailableError, None),
        # Data and internal errors: terminal, exit 1.
        ("22P02", "invalid input syntax for type integer", SourceReadError, None),
        ("22012", "division by zero", SourceReadError, None),
        ("23505", "duplicate key value violates unique constraint", SourceReadError, None),
        ("54000", "row is too big", SourceReadError, None),
        ("XX000", "cache lookup failed for type 1", SourceReadError, None),
        ("XX001", "invalid page in block 0 of relation", SourceReadError, None),
    ],
)
def test_server_errors_are_classified_by_sqlstate(
    code: str, message: str, kind: type[Exception], fix: str | None
) -> None:
    error = translate_error(server_error(code, message), "doing it")
    assert type(error) is kind
    text = str(error)
    assert text.startswith(f"doing it: {message}")
    assert "\n" not in text
    if fix is not None:
        assert fix in text
    if kind is SourceUnavailableError:
        assert "(" not in text[len("doing it: ") + len(message) :]  # nothing to fix: no advice


@pytest.mark.parametrize(
    ("message", "kind", "fix"),
    [
        ('FATAL:  password authentication failed for user "app"', ConfigurationError, "SOURCES__"),
        (
            'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app"',
            ConfigurationError,
            "allow this host and role in pg_hba.conf",
        ),
        ('FATAL:  database "nope" does not exist', ConfigurationError, "credentials"),
        ('FATAL:  role "nobody" does not exist', ConfigurationError, "credentials"),
        (
            "FATAL:  must be superuser or replication role to start walsender",
            ConfigurationError,
            "ALTER ROLE <role> REPLICATION",
        ),
        # PostgreSQL 16 and later; the REPLICATION attribute is named on the DETAIL line only.
        (
            "FATAL:  permission denied to start WAL sender\nDETAIL:  Only roles with the "
            "REPLICATION attribute may start a WAL sender process.",
            ConfigurationError,
            "ALTER ROLE <role> REPLICATION",
        ),
        (
            'connection to server at "db" (10.0.0.1), port 5432 failed: Connection refused',
            SourceUnavailableError,
            None,
        ),
        ("server closed the connection unexpectedly", SourceUnavailableError, None),
        ("SSL SYSCALL error: EOF detected", SourceUnavailableError, None),
        ("timeout expired", SourceUnavailableError, None),
    ],
)
def test_connection_errors_without_sqlstate_are_classified_by_text(
    message: str, kind: type[Exception], fix: str | None
) -> None:
    """libpq reports connection-time failures without a SQLSTATE, the server's FATAL startup
    errors included (psycopg2 sets ``pgcode`` None)."""
    driver_error = psycopg2.OperationalError(message)
    assert driver_error.pgcode is None
    error = translate_error(driver_error, "connecting")
    assert type(error) is kind
    if fix is None:
        assert str(error) == f"connecting: {message}"
    else:
        assert fix in str(error)


def test_driver_errors_without_sqlstate_outside_a_connection_are_terminal() -> None:
    error = translate_error(psycopg2.InterfaceError("connection already closed"), "reading")
    assert type(error) is SourceReadError
    assert str(error) == "reading: connection already closed"


def test_passwords_never_reach_the_message() -> None:
    error = translate_error(
        psycopg2.OperationalError(
            "could not connect to postgresql://app:s3cret@db:5432/app: Connection refused"
        ),
        "connecting",
    )
    assert "s3cret" not in str(error)
    assert type(error) is SourceUnavailableError


def test_non_driver_errors_are_terminal() -> None:
    assert type(translate_error(ValueError("odd"), "decoding")) is SourceReadError
