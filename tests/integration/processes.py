"""Running the replicator as a real process in tests: the command and a clean environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def replicator_env(dsn: str, bucket_url: str, dlt_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without inherited replicator settings, plus the given ones
    (``batch_max_seconds="0.5"`` becomes ``SOURCES__PG_REPLICATION__BATCH_MAX_SECONDS``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env.update(
        {
            "SOURCES__PG_REPLICATION__CREDENTIALS": dsn,
            "DESTINATION__FILESYSTEM__BUCKET_URL": bucket_url,
            "DLT_DATA_DIR": str(dlt_dir),
        }
    )
    env.update({f"SOURCES__PG_REPLICATION__{k.upper()}": v for k, v in settings.items()})
    return env


def start_follow(cwd: Path, env: dict[str, str], *, quiet: bool = False) -> subprocess.Popen[str]:
    """``replicator --mode cdc --follow`` in the background."""
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [str(BIN / "replicator"), "--mode", "cdc", "--follow"],
        cwd=cwd,
        env=env,
        stdout=output,
        stderr=output,
        text=True,
    )


def wait_for(
    condition: Callable[[], bool],
    failure: str,
    timeout: float = 60.0,
    *,
    retrying: tuple[type[Exception], ...] = (),
) -> None:
    """Poll ``condition`` until it holds; fail the test with ``failure`` after ``timeout``.
    An exception of a ``retrying`` type counts as "not yet" (a lake read while a commit is
    halfway, a source that is restarting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except retrying:
            pass
        time.sleep(0.2)
    pytest.fail(failure)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(process: subprocess.Popen[str]) -> str:
    """SIGTERM a ``--follow`` process, wait for it to finish its batch, return its stderr."""
    try:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return str(stderr or "")
