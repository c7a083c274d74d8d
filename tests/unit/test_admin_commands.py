"""The admin commands resolve what they use from the container, so a test overrides it there."""

from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers

from replicator.adapters.lake.admin import Volume
from replicator.entrypoints.cli import run
from replicator.entrypoints.containers import Container
from tests.unit.dlt_config import config_from


@pytest.fixture(autouse=True)
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    for key in ("SOURCES__PG_REPLICATION__CREDENTIALS", "REPLICATOR_DESTINATION", "PIPELINE_MODE"):
        monkeypatch.delenv(key, raising=False)
    with config_from(tmp_path):
        yield


class FakeLakeAdmin:
    datasets = ("bronze", "bronze_staging")

    def volumes(self) -> list[Volume]:
        return [Volume("bronze", "_dlt_staging")]

    def cleanup(self) -> list[str]:
        return ['schema "bronze"']


class TestAdminCommands:
    def test_volumes_lists_what_the_container_lake_admin_finds(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with Container.lake_admin.override(FakeLakeAdmin()):
            code = run(["volumes"], "replicator")
        assert code == 0
        assert "_dlt_staging" in capsys.readouterr().out

    def test_cleanup_removes_through_the_container_lake_admin(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with Container.lake_admin.override(FakeLakeAdmin()):
            code = run(["cleanup", "--yes"], "replicator")
        assert code == 0
        assert 'removed schema "bronze"' in capsys.readouterr().out

    def test_simulate_makes_its_changes_through_the_container(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        calls: list[dict[str, Any]] = []

        def simulated(**counts: Any) -> dict[str, int]:
            calls.append(counts)
            return {"inserts": 1, "updates": 2, "deletes": 3}

        monkeypatch.setenv(
            "SOURCES__PG_REPLICATION__CREDENTIALS", "postgresql://u:p@nowhere:1/shop"
        )
        with Container.simulate_changes.override(providers.Callable(simulated)):
            code = run(["simulate", "1", "2", "3", "--database", "shop"], "replicator")
        assert code == 0
        assert calls == [{"inserts": 1, "updates": 2, "deletes": 3, "seed": None}]
        assert "simulated 1 inserts, 2 updates, 3 deletes" in capsys.readouterr().out
