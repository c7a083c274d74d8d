"""A real PostgreSQL (``wal_level=logical``) for the integration tests.

Default: the embedded cluster from the local server binaries (run as a non-root user when
the tests run as root). ``REPLICATOR_TEST_DSN``: an existing server. ``REPLICATOR_TEST_POSTGRES=docker``:
testcontainers' Postgres, when a Docker engine is reachable. Every test gets a database of its own.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from replicator.adapters.lake.settings import LakeSettings
from replicator.adapters.postgres.settings import PostgresSettings
from tests.integration.helpers import Sql


def _docker_postgres() -> Iterator[str]:
    try:
        import docker

        docker.from_env().ping()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        pytest.exit(f"REPLICATOR_TEST_POSTGRES=docker but no Docker engine is reachable: {e}", 2)
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver=None).with_command(
        "postgres -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20"
    )
    with container as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """An admin DSN to a server with logical replication enabled."""
    if dsn := os.environ.get("REPLICATOR_TEST_DSN"):
        yield dsn
    elif os.environ.get("REPLICATOR_TEST_POSTGRES", "").lower() == "docker":
        yield from _docker_postgres()
    else:
        from replicator.demo.embedded import EmbeddedPostgres

        with EmbeddedPostgres() as pg:
            yield pg.dsn


def _with_database(dsn: str, database: str) -> str:
    from sqlalchemy import make_url

    return make_url(dsn).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(pg_server_dsn, name)
    finally:
        _drop_database(admin, name)
        admin.close()


def _drop_database(admin: Any, name: str) -> None:
    """Drop a test's database. A walsender its run left may take a moment to exit after it is
    terminated (its slot is active until then), so an active slot is waited for a while."""
    deadline = time.monotonic() + 15
    with admin.cursor() as cur:
        while True:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            try:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                return
            except psycopg2.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def execute(pg_dsn: str) -> Sql:
    """Run SQL against the test database (autocommit)."""
    return Sql(pg_dsn)


@pytest.fixture
def pg_settings(pg_dsn: str) -> PostgresSettings:
    return PostgresSettings(dsn=pg_dsn)


@pytest.fixture
def delta_settings(tmp_path: pytest.TempPathFactory) -> LakeSettings:
    return LakeSettings(
        destination="delta",
        bucket_url=str(tmp_path / "lake"),  # type: ignore[operator]
        pipelines_dir=str(tmp_path / "dlt"),  # type: ignore[operator]
    )


@pytest.fixture
def duckdb_settings(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> LakeSettings:
    monkeypatch.setenv(
        "DESTINATION__DUCKDB__CREDENTIALS",
        str(tmp_path / "lake.duckdb"),  # type: ignore[operator]
    )
    return LakeSettings(
        destination="duckdb",
        pipelines_dir=str(tmp_path / "dlt"),  # type: ignore[operator]
    )
