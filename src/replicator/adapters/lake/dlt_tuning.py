"""Targeted adjustments to dlt internals, each measured, each guarded.

dlt's loader waits for finished jobs on a semaphore with a 1 s timeout, but jobs that finish
without running in the pool (the first half of every Delta load, which only schedules the
follow-up Delta write) never release it: each load to the filesystem/Delta destination pays
one full second of idle waiting. Measured on the 1M-row snapshot benchmark: load step
2.1 s -> 1.1 s. The poll interval is lowered to 20 ms; the check costs microseconds.

If a dlt upgrade removes the attribute, ``apply()`` raises at start-up (and a unit test fails),
rather than silently losing the fix.

dlt merges into Delta with ``streamed_exec=True`` by default, which makes delta-rs skip the
pruning of target files by the source's key range: every CDC merge then scans and joins the
whole target table, so memory and time grow with the table. Measured on one transaction of
2,000,000 inserts written in parts of 100,000 (``make bench``, scenario ``large``): peak RSS
1.41 GB -> 0.61 GB, merge 1-4 s -> 0.5 s per part. Our merge sources are batches already in
memory, so streaming them buys nothing. The default becomes ``false`` unless the user set
``[destination.filesystem] deltalake_streamed_exec`` (or its env var) themselves.

Memory between loads (same scenario, measured one at a time against 626 MB): pyarrow's default
pool (jemalloc/mimalloc) keeps what a load freed for later, so the next batch piles up on top;
the system pool returns it to malloc (598 MB). glibc in turn keeps freed pages in its arenas
(delta-rs and pyarrow allocate from threads of their own); ``release_memory()`` after each load
gives them back with ``malloc_trim(0)`` (594 MB). Together with the CDC batch's rows freed
before the load: 526 MB, and with 8 MiB batches 451 MB. ``ARROW_DEFAULT_MEMORY_POOL``, when
set, is left to the user.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, MutableMapping
from typing import Any

LOAD_POLL_SECONDS = 0.02
# With raise_on_failed_jobs=false, dlt completes a load package whose job failed terminally: it
# commits the package's state (the replicator's checkpoint) over a table that lacks the batch.
# The replicator needs the default, whatever the configuration says.
RAISE_ON_FAILED_JOBS_ENV = "LOAD__RAISE_ON_FAILED_JOBS"
_ATTRIBUTE = "_run_loop_sleep_duration"
STREAMED_EXEC_KEY = "destination.filesystem.deltalake_streamed_exec"
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
# dlt's extract takes items from its resources round robin, so a snapshot starts every table's
# reader at once and each holds a connection inside the exported snapshot until its table is
# read: a database with more tables than the server's max_connections could never be
# snapshotted ("too many clients", retried forever). One resource after the other, a snapshot
# holds one reader at a time, whatever the number of tables.
NEXT_ITEM_MODE_ENV = "EXTRACT__NEXT_ITEM_MODE"


def tuned_init(original: Callable[..., None]) -> Callable[..., None]:
    """Wrap a loader ``__init__`` so the instance polls every ``LOAD_POLL_SECONDS``."""

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not hasattr(self, _ATTRIBUTE):
            raise RuntimeError(f"dlt's Load no longer has {_ATTRIBUTE}: review dlt_tuning.py")
        setattr(self, _ATTRIBUTE, LOAD_POLL_SECONDS)

    init._replicator_tuned = True  # type: ignore[attr-defined]
    return init


def streamed_exec_default(configured: Any, environ: MutableMapping[str, str]) -> None:
    """Turn dlt's Delta ``streamed_exec`` off when the user configured nothing for it."""
    if configured is None:
        environ[STREAMED_EXEC_KEY.replace(".", "__").upper()] = "false"


def arrow_pool_default(environ: MutableMapping[str, str]) -> None:
    """Make pyarrow allocate from the system allocator unless the user chose a pool."""
    if environ.get(ARROW_POOL_ENV):
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


def release_memory() -> bool:
    """Give the heap pages freed by a load back to the OS (glibc's ``malloc_trim``); returns
    whether there was anything to call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def apply() -> None:
    """Idempotent: patch ``dlt.load.Load`` so new loaders poll every ``LOAD_POLL_SECONDS``,
    default dlt's Delta merges to ``streamed_exec=false`` and pyarrow to the system pool, keep
    dlt from ever committing a package with a failed job, and have it extract one resource
    after the other (``NEXT_ITEM_MODE_ENV``)."""
    import dlt
    from dlt.load.load import Load

    if not getattr(Load.__init__, "_replicator_tuned", False):
        Load.__init__ = tuned_init(Load.__init__)  # type: ignore[method-assign]
    streamed_exec_default(dlt.config.get(STREAMED_EXEC_KEY), os.environ)
    arrow_pool_default(os.environ)
    os.environ[RAISE_ON_FAILED_JOBS_ENV] = "true"
    os.environ[NEXT_ITEM_MODE_ENV] = "fifo"


def ensure_applied() -> None:
    """``apply()``, unless this process is tuned already (the composition root applies it).

    The guard for a writer built without the container (tests, ``benchmarks/run.py``, the
    admin commands' ``LakeAdmin``): it relies on ``raise_on_failed_jobs``, and would otherwise
    run untuned without a word."""
    from dlt.load.load import Load

    if not getattr(Load.__init__, "_replicator_tuned", False):
        apply()
