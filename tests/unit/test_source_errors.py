"""Driver errors become domain errors by SQLSTATE: a wrong setting or a missing privilege exits 2
(an operator must act), only what a later retry can cure exits 75."""

from __future__ import annotations

import psycopg2
import pytest

from replicator.adapters.postgres.connection import translate_error
from replicator.domain.errors import ConfigurationError, SourceReadError, SourceUnavailableError


def server_error(code: str, message: str) -> psycopg2.Error:
    """An error as the server reports it: psycopg2 sets ``pgcode`` only for errors it received."""
    base = (
        psycopg2.OperationalError
        if code[:2] in {"08", "53", "55", "57", "58"}
        else (psycopg2.ProgrammingError)
    )
    error_class = type("ServerError", (base,), {"pgcode": code})
    error: psycopg2.Error = error_class(message)
    return error


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
        ("58P01", 'could not access file "pgoutput": No such file', ConfigurationError, None),
        ("42P01", 'relation "public.gone" does not exist', ConfigurationError, None),
        # What a retry can cure.
        ("55006", 'replication slot "s" is active for PID 42', SourceUnavailableError, None),
        (
            "57P01",
            "terminating connection due to administrator command",
            SourceUnavailableError,
            None,
        ),
        ("57P03", "the database system is starting up", SourceUnavailableError, None),
        ("53300", "sorry, too many clients already", SourceUnavailableError, None),
        ("40001", "could not serialize access", SourceUnavailableError, None),
        ("08006", "connection failure", SourceUnavailableError, None),
        ("55P03", "could not obtain lock on relation", SourceUnavailableError, None),
        # Data and internal errors: terminal, exit 1.
        ("22P02", "invalid input syntax for type integer", SourceReadError, None),
        ("XX000", "cache lookup failed for type 1", SourceReadError, None),
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
    ("message", "kind"),
    [
        ('FATAL:  password authentication failed for user "app"', ConfigurationError),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app"', ConfigurationError),
        ('FATAL:  database "nope" does not exist', ConfigurationError),
        (
            "FATAL:  must be superuser or replication role to start walsender",
            ConfigurationError,
        ),
        (
            'connection to server at "db" (10.0.0.1), port 5432 failed: Connection refused',
            (SourceUnavailableError),
        ),
        ("server closed the connection unexpectedly", SourceUnavailableError),
        ("timeout expired", SourceUnavailableError),
    ],
)
def test_connection_errors_without_sqlstate_are_classified_by_text(
    message: str, kind: type[Exception]
) -> None:
    """libpq reports connection-time failures without a SQLSTATE."""
    error = translate_error(psycopg2.OperationalError(message), "connecting")
    assert type(error) is kind


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
