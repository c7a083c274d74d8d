import types
from pathlib import Path

import pytest
from dlt.load.load import Load

from replicator.adapters.lake import dlt_tuning


class TestLoaderPollTuning:
    def test_dlts_own_loader_polls_at_the_tuned_interval(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import dlt

        monkeypatch.setenv("LOAD__LOAD_VOLUME_PATH", str(tmp_path / "load"))
        dlt_tuning.apply()

        loader = Load(dlt.destinations.filesystem(bucket_url=str(tmp_path / "lake")))

        assert loader._run_loop_sleep_duration == dlt_tuning.LOAD_POLL_SECONDS

    def test_wrapped_init_shortens_the_interval(self) -> None:
        def dlt_like_init(self: object) -> None:
            self._run_loop_sleep_duration = 1.0  # type: ignore[attr-defined]

        loader = types.SimpleNamespace()
        dlt_tuning.tuned_init(dlt_like_init)(loader)
        assert loader._run_loop_sleep_duration == dlt_tuning.LOAD_POLL_SECONDS

    def test_a_dlt_without_the_attribute_fails_loudly(self) -> None:
        with pytest.raises(RuntimeError, match=r"review dlt_tuning\.py"):
            dlt_tuning.tuned_init(lambda self: None)(types.SimpleNamespace())

    def test_apply_is_idempotent(self) -> None:
        dlt_tuning.apply()
        patched = Load.__init__
        dlt_tuning.apply()
        assert Load.__init__ is patched


class TestDeltaStreamedExec:
    def test_dlt_still_has_the_setting_we_default(self) -> None:
        from dlt.destinations.impl.filesystem.configuration import (
            FilesystemDestinationClientConfiguration,
        )

        assert "deltalake_streamed_exec" in FilesystemDestinationClientConfiguration.__annotations__

    def test_unset_becomes_false(self) -> None:
        environ: dict[str, str] = {}
        dlt_tuning.streamed_exec_default(None, environ)
        assert environ == {"DESTINATION__FILESYSTEM__DELTALAKE_STREAMED_EXEC": "false"}

    def test_a_user_setting_is_kept(self) -> None:
        environ: dict[str, str] = {}
        dlt_tuning.streamed_exec_default(True, environ)
        assert environ == {}


class TestMemoryBetweenLoads:
    """Issue 4 point 6 (2,000,000-row transaction under 500 MB): see dlt_tuning's docstring."""

    def test_pyarrow_allocates_from_the_system_pool(self) -> None:
        import pyarrow as pa

        before = pa.default_memory_pool()
        try:
            pa.set_memory_pool(pa.mimalloc_memory_pool())
            dlt_tuning.arrow_pool_default({})
            assert pa.default_memory_pool().backend_name == "system"
        finally:
            pa.set_memory_pool(before)

    def test_a_pool_the_user_chose_is_kept(self) -> None:
        import pyarrow as pa

        before = pa.default_memory_pool()
        try:
            pa.set_memory_pool(pa.mimalloc_memory_pool())
            dlt_tuning.arrow_pool_default({dlt_tuning.ARROW_POOL_ENV: "mimalloc"})
            assert pa.default_memory_pool().backend_name == "mimalloc"
        finally:
            pa.set_memory_pool(before)

    def test_freed_heap_pages_are_given_back_on_glibc(self) -> None:
        import platform

        released = dlt_tuning.release_memory()
        if platform.libc_ver()[0] == "glibc":
            assert released

    def test_the_writer_releases_memory_after_each_merge(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from replicator.adapters.lake.settings import LakeSettings
        from replicator.adapters.lake.writer import DltLakeWriter
        from replicator.domain.lsn import Lsn
        from replicator.domain.model import Checkpoint

        release = dlt_tuning.release_memory
        released: list[bool] = []
        monkeypatch.setattr(dlt_tuning, "release_memory", lambda: released.append(release()))
        writer = DltLakeWriter(
            LakeSettings(
                destination="delta",
                bucket_url=str(tmp_path / "lake"),
                pipelines_dir=str(tmp_path / "dlt"),
            )
        )

        writer.merge([], Checkpoint(Lsn(5), idle=True))
        writer.merge([], Checkpoint(Lsn(6), idle=True))

        assert len(released) == 2


class TestFailedJobsNeverCommitAPackage:
    def test_a_user_setting_cannot_turn_it_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import dlt
        from dlt.load.configuration import LoaderConfiguration

        monkeypatch.setenv("LOAD__RAISE_ON_FAILED_JOBS", "false")
        dlt_tuning.apply()

        # dlt's loader reads [load] raise_on_failed_jobs; env vars win over every toml file.
        assert "raise_on_failed_jobs" in LoaderConfiguration.__annotations__
        assert dlt.config.get("load.raise_on_failed_jobs") in (True, "true")


class TestResourcesExtractedOneAfterTheOther:
    def test_a_user_setting_cannot_turn_it_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import dlt
        from dlt.extract.pipe_iterator import PipeIterator

        monkeypatch.setenv("EXTRACT__NEXT_ITEM_MODE", "round_robin")
        dlt_tuning.apply()

        # dlt's pipe iterator reads [extract] next_item_mode.
        assert "next_item_mode" in PipeIterator.PipeIteratorConfiguration.__annotations__
        assert dlt.config.get("extract.next_item_mode") == "fifo"


class TestHooksInstalled:
    def test_dlt_still_has_the_functions_the_position_hooks_wrap(self) -> None:
        from dlt.common.libs import deltalake as dlt_delta
        from dlt.destinations.sql_jobs import SqlMergeFollowupJob

        from replicator.adapters.lake import delta_commits, sql_merge

        delta_commits.install()
        sql_merge.install()
        assert getattr(dlt_delta.write_deltalake, "_replicator_positions", False)
        assert getattr(dlt_delta.merge_delta_table, "_replicator_positions", False)
        assert getattr(SqlMergeFollowupJob.generate_sql.__func__, "_replicator_sql", False)
