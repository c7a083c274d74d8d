"""One dlt destination per supported lake; credentials stay in dlt's own config sections."""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination

from replicator.adapters.lake.settings import LakeSettings


def is_local_path(bucket_url: str) -> bool:
    return "://" not in bucket_url or bucket_url.startswith("file://")


def local_bucket(bucket_url: str) -> Path:
    return Path(bucket_url.removeprefix("file://")).expanduser().resolve()


def build_destination(settings: LakeSettings) -> Destination[Any, Any]:
    if settings.destination == "delta":
        url = settings.bucket_url
        if is_local_path(url):
            path = local_bucket(url)
            path.mkdir(parents=True, exist_ok=True)
            url = path.as_uri()
        return dlt.destinations.filesystem(bucket_url=url)
    if settings.destination == "duckdb":
        # dlt leaves supports_transactions unset for DuckDB, and then runs a SQL job that is not
        # DDL statement by statement in autocommit: a table's merge job (sql_merge) would commit
        # its DELETE before its INSERT (a reader saw a replaced table empty) and its rows apart
        # from the position recorded with them. Declared (DuckDB has transactions), dlt wraps
        # every SQL job in one.
        return dlt.destinations.duckdb(supports_transactions=True)
    # Databricks: [destination.databricks.credentials] (server_hostname, http_path, catalog,
    # access_token or client_id/client_secret) resolved by dlt from secrets.toml or env vars.
    databricks_defaults(os.environ)
    return dlt.destinations.databricks()


CONNECTION_PARAMETERS = "destination.databricks.credentials.connection_parameters"
# How long the SQL connector keeps retrying a request (connecting included) before it gives up:
# its own default is 900 s with 30 attempts, which makes a wrong or unreachable workspace look
# like a hang. Overridden by any connection_parameters the user sets.
CONNECT_BUDGET = {"_retry_stop_after_attempts_duration": 30.0, "_retry_delay_max": 5.0}


KEEP_STAGED_FILES = "destination.databricks.keep_staged_files"
RAISE_ON_MAX_RETRIES_ENV = "LOAD__RAISE_ON_MAX_RETRIES"
SERVER_HOSTNAME = "destination.databricks.credentials.server_hostname"


def _configured(key: str) -> Any:
    return dlt.config.get(key) if dlt.config.get(key) is not None else dlt.secrets.get(key)


def _env(key: str) -> str:
    return key.replace(".", "__").upper()


def databricks_defaults(environ: MutableMapping[str, str]) -> None:
    """What the replicator needs of dlt's Databricks destination, unless configured otherwise:

    - the SQL connector gives up after about 30 s of retries (its own default is 900 s), so a
      wrong or unreachable workspace is one error line, not a hang
      (``[destination.databricks.credentials] connection_parameters``);
    - staged Parquet files are removed from the ``_dlt_staging_load_volume`` once their
      ``COPY INTO`` ran (dlt keeps them by default: every CDC batch would leave its files
      there for good; ``[destination.databricks] keep_staged_files``);
    - a server hostname given with its scheme (the bundle passes ``${workspace.host}``,
      ``https://adb-....azuredatabricks.net``) is reduced to the host, which dlt expects.
    """
    if _configured(CONNECTION_PARAMETERS) is None:
        environ[_env(CONNECTION_PARAMETERS)] = json.dumps(CONNECT_BUDGET)
    if _configured(KEEP_STAGED_FILES) is None:
        environ[_env(KEEP_STAGED_FILES)] = "false"
    # dlt runs a job that failed transiently again inside the same load; on Databricks an
    # INSERT that committed before the failure would then append twice. Raise at once
    # instead: the next run replays from the tables' positions, which is exact.
    environ[RAISE_ON_MAX_RETRIES_ENV] = "1"
    host = _configured(SERVER_HOSTNAME)
    if isinstance(host, str) and host.strip() != normalised_host(host):
        environ[_env(SERVER_HOSTNAME)] = normalised_host(host)


def normalised_host(host: str) -> str:
    """``https://adb-1.azuredatabricks.net/`` -> ``adb-1.azuredatabricks.net``."""
    text = host.strip()
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    return text.split("/", 1)[0]


def table_format(settings: LakeSettings) -> str | None:
    """The filesystem destination writes Delta only when asked; the others decide themselves."""
    return "delta" if settings.destination == "delta" else None
