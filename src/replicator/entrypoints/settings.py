"""Reads the configuration contract through dlt's own providers.

Sections (``.dlt/config.toml``, ``.dlt/secrets.toml``, or dlt-style env vars that override them):

- ``[sources.pg_replication.credentials]`` / ``SOURCES__PG_REPLICATION__CREDENTIALS``: the source,
  as a table (host, port, username, password, database) or a ``postgresql://`` connection string.
  Absent: the embedded PostgreSQL with its sample database is used.
- ``[sources.pg_replication]``: ``slot_name``, ``pub_name``, ``schemas``, ``include``, ``exclude``,
  ``text_columns``.
- ``[destination.filesystem] bucket_url`` / ``DESTINATION__FILESYSTEM__BUCKET_URL``: the local lake.
- ``[destination.databricks.credentials]``: resolved by dlt itself when the destination is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from replicator.adapters.lake.settings import DEFAULT_BUCKET_URL, LakeSettings
from replicator.adapters.postgres.settings import (
    DEFAULT_PUB_NAME,
    DEFAULT_SLOT_NAME,
    KEYLESS_POLICIES,
    PostgresSettings,
)
from replicator.domain.cdc import BatchLimits
from replicator.domain.errors import ConfigurationError

SOURCE_SECTION = "sources.pg_replication"
EMBEDDED_DIR_ENV = "REPLICATOR_EMBEDDED_DIR"
DEFAULT_EMBEDDED_DIR = ".embedded-pg"


@attrs.frozen
class SourceOptions:
    """Everything about the source except where it is."""

    schemas: tuple[str, ...] = ("public",)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    text_columns: tuple[str, ...] = ()
    slot_name: str = DEFAULT_SLOT_NAME
    pub_name: str = DEFAULT_PUB_NAME
    heartbeat_s: float = 0.0
    keyless_tables: str = "skip"

    def with_dsn(self, dsn: str) -> PostgresSettings:
        # Same field names as PostgresSettings (a unit test checks every field arrives).
        return PostgresSettings(dsn=dsn, **attrs.asdict(self, recurse=False))


def _as_tuple(value: Any, key: str) -> tuple[str, ...]:
    """A list from TOML, or a comma-separated string from an env var."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ConfigurationError(
        f"{key} must be a list of names or a comma-separated string, not {type(value).__name__}"
    )


def _name(value: Any, key: str, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} must be a string")
    if len(value.encode()) > 63:
        raise ConfigurationError(f"{key}={value!r} is longer than PostgreSQL's 63-byte limit")
    return value


def _column_patterns(value: Any) -> tuple[str, ...]:
    patterns = _as_tuple(value, f"{SOURCE_SECTION}.text_columns")
    for pattern in patterns:
        if "." not in pattern:
            raise ConfigurationError(
                f"SOURCES__PG_REPLICATION__TEXT_COLUMNS: {pattern!r} names no column; "
                "write table.column or schema.table.column (wildcards allowed)"
            )
    return patterns


def _keyless(value: Any) -> str:
    if value is None or value == "":
        return "skip"
    if value not in KEYLESS_POLICIES:
        raise ConfigurationError(
            f"SOURCES__PG_REPLICATION__KEYLESS_TABLES={value!r}: use one of "
            f"{', '.join(KEYLESS_POLICIES)}"
        )
    return str(value)


def _slot_name(value: Any) -> str:
    name = _name(value, "SOURCES__PG_REPLICATION__SLOT_NAME", DEFAULT_SLOT_NAME)
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ConfigurationError(
            f"SOURCES__PG_REPLICATION__SLOT_NAME={name!r}: PostgreSQL slot names may only "
            "contain lower-case letters, digits and underscores"
        )
    return name


def _seconds(value: Any, env: str) -> float:
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"{env} must be a number of seconds, not {value!r}") from e
    if seconds < 0:
        raise ConfigurationError(f"{env} must be >= 0 (0 turns it off)")
    return seconds


def source_options() -> SourceOptions:
    import dlt

    def get(name: str) -> Any:
        return dlt.config.get(f"{SOURCE_SECTION}.{name}")

    schemas = _as_tuple(get("schemas"), f"{SOURCE_SECTION}.schemas") or ("public",)
    return SourceOptions(
        schemas=schemas,
        include=_as_tuple(get("include"), f"{SOURCE_SECTION}.include"),
        exclude=_as_tuple(get("exclude"), f"{SOURCE_SECTION}.exclude"),
        text_columns=_column_patterns(get("text_columns")),
        slot_name=_slot_name(get("slot_name")),
        pub_name=_name(get("pub_name"), "SOURCES__PG_REPLICATION__PUB_NAME", DEFAULT_PUB_NAME),
        heartbeat_s=_seconds(
            get("heartbeat_seconds"), "SOURCES__PG_REPLICATION__HEARTBEAT_SECONDS"
        ),
        keyless_tables=_keyless(get("keyless_tables")),
    )


def source_dsn() -> str | None:
    """The configured source as a connection string, or None when nothing is configured."""
    import dlt
    from dlt.common.configuration.specs import ConnectionStringCredentials

    raw: Any = dlt.secrets.get(f"{SOURCE_SECTION}.credentials")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        if not raw.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
            raise ConfigurationError(
                "SOURCES__PG_REPLICATION__CREDENTIALS must be a connection string like "
                "postgresql://user:password@host:5432/dbname"
            )
        return raw.replace("postgresql+psycopg2://", "postgresql://", 1)
    if isinstance(raw, Mapping):
        fields = dict(raw)
        if "user" in fields and "username" not in fields:
            fields["username"] = fields.pop("user")
        fields.setdefault("drivername", "postgresql")
        missing = [k for k in ("host", "database", "username") if not fields.get(k)]
        if missing:
            raise ConfigurationError(
                f"[{SOURCE_SECTION}.credentials] lacks {', '.join(missing)}: set them in "
                ".dlt/secrets.toml or use SOURCES__PG_REPLICATION__CREDENTIALS"
            )
        credentials = ConnectionStringCredentials(fields)
        return str(credentials.to_native_representation())
    raise ConfigurationError(
        f"[{SOURCE_SECTION}.credentials] must be a table or a connection string"
    )


# On Databricks every batch is a round of warehouse statements (per table: PUT, COPY INTO,
# MERGE, staged-file removal; per load: the checkpoint's COPY INTO and dlt's _dlt_loads row),
# and the warehouse cannot stop while they keep coming: fewer, larger batches (a live
# --follow run too writes at most once a minute), and a quiet source's checkpoint moved every
# 30 minutes instead of every 5.
DESTINATION_DEFAULTS: dict[str, BatchLimits] = {
    "databricks": BatchLimits(max_seconds=60.0, min_seconds=60.0, idle_advance_seconds=1800.0),
}


def batch_limits(destination: str = "delta") -> BatchLimits:
    """``[sources.pg_replication] batch_max_changes / batch_max_bytes / batch_max_seconds /
    batch_min_seconds / batch_part_bytes / idle_checkpoint_seconds`` and ``discover_seconds``;
    defaults depend on the destination (``DESTINATION_DEFAULTS``)."""
    defaults = DESTINATION_DEFAULTS.get(destination, BatchLimits())

    def number(name: str, default: float, *, least: str = "> 0") -> float:
        key = f"{SOURCE_SECTION}.{name}"
        value = _configured(key)
        if value is None:
            return default
        try:
            parsed = float(value)
        except (TypeError, ValueError) as e:
            raise ConfigurationError(f"{_env(key)} must be a number, not {value!r}") from e
        if parsed < 0 or (parsed == 0 and least == "> 0"):
            raise ConfigurationError(f"{SOURCE_SECTION}.{name} must be {least}")
        return parsed

    max_seconds = number("batch_max_seconds", defaults.max_seconds)
    return BatchLimits(
        max_changes=int(number("batch_max_changes", defaults.max_changes)),
        max_bytes=int(number("batch_max_bytes", defaults.max_bytes)),
        part_bytes=int(number("batch_part_bytes", defaults.part_bytes)),
        max_seconds=max_seconds,
        # (A batch is written at max_seconds anyway.)
        min_seconds=min(
            max_seconds, number("batch_min_seconds", defaults.min_seconds, least=">= 0")
        ),
        discover_seconds=number("discover_seconds", defaults.discover_seconds),
        idle_advance_seconds=number("idle_checkpoint_seconds", defaults.idle_advance_seconds),
    )


def maintenance_settings() -> tuple[int, int | None]:
    """``[sources.pg_replication] maintain_every_batches`` (0: never, the default) and
    ``maintain_retention_hours`` (default: each table's own): whole numbers, 0 or more."""

    def whole(name: str, default: int | None) -> int | None:
        key = f"{SOURCE_SECTION}.{name}"
        value = _configured(key)
        if value is None:
            return default
        try:
            parsed = int(value)
        except (TypeError, ValueError):
            parsed = -1
        if parsed < 0 or str(parsed) != str(value).strip():
            raise ConfigurationError(
                f"{_env(key)} must be a whole number, 0 or more, not {value!r}"
            )
        return parsed

    return whole("maintain_every_batches", 0) or 0, whole("maintain_retention_hours", None)


def lake_settings(destination: str) -> LakeSettings:
    import dlt

    bucket: Any = dlt.config.get("destination.filesystem.bucket_url") or DEFAULT_BUCKET_URL
    lake = LakeSettings(
        destination=destination,  # type: ignore[arg-type]
        bucket_url=str(bucket),
        change_data_feed=_flag("destination.databricks.change_data_feed", True),
        deletion_vectors=_flag("destination.databricks.deletion_vectors", True),
        cluster_by_key=_flag("destination.databricks.cluster_by_key", True),
    )
    return attrs.evolve(lake, pipelines_dir=local_state_dir(lake))


def _configured(key: str) -> Any:
    """A setting from dlt's config (TOML or the environment); None when unset or empty."""
    import dlt

    value: Any = dlt.config.get(key)
    return None if value is None or value == "" else value


def _env(key: str) -> str:
    """The environment variable of a dotted setting (``SOURCES__PG_REPLICATION__X``)."""
    return key.replace(".", "__").upper()


def _flag(key: str, default: bool) -> bool:
    """A true/false setting, from TOML (a boolean) or the environment (text)."""
    value = _configured(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigurationError(f"{_env(key)} must be true or false, not {value!r}")


def local_state_dir(lake: LakeSettings) -> str:
    """dlt's working dir for this pipeline, named from what it replicates: the source (host,
    port and database, or the embedded cluster's folder), the slot, the destination and where
    it writes, and the dataset. Two pipelines on one machine (every checkout run as root shares
    /var/dlt) never share local state; the lake's own state keeps the name ``replicator``, so a
    pipeline finds its checkpoint whatever its working dir (an empty one restores from it)."""
    import hashlib

    from dlt.common.pipeline import get_dlt_pipelines_dir
    from sqlalchemy import make_url

    dsn = source_dsn()
    if dsn is None:
        database, source = "embedded", f"embedded:{embedded_dir().resolve()}"
    else:
        url = make_url(dsn)
        database = url.database or "postgres"
        source = f"{url.host or 'localhost'}:{url.port or 5432}/{database}"
    identity = "|".join(
        (source, source_options().slot_name, lake.destination, _lake_location(lake), lake.dataset)
    )
    digest = hashlib.blake2b(identity.encode(), digest_size=6).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{database}-{lake.destination}")[:40]
    return os.path.join(get_dlt_pipelines_dir(), f"replicator-{readable}-{digest}")


def _lake_location(lake: LakeSettings) -> str:
    """Where the lake is, as far as configuration says it."""
    import dlt

    if lake.destination == "delta":
        url = lake.bucket_url
        return url if "://" in url else str(Path(url).expanduser().resolve())
    if lake.destination == "duckdb":
        configured: Any = dlt.secrets.get("destination.duckdb.credentials")
        return str(configured) if isinstance(configured, str) else str(Path.cwd())
    parts = []
    for key in ("server_hostname", "catalog"):
        name = f"destination.databricks.credentials.{key}"
        value: Any = dlt.config.get(name) or dlt.secrets.get(name)
        parts.append(str(value or ""))
    return "/".join(parts)


def embedded_dir() -> Path:
    return Path(os.environ.get(EMBEDDED_DIR_ENV) or DEFAULT_EMBEDDED_DIR)
