"""The SQL our own code sends for `volumes` and `cleanup`, recorded by a fake SQL client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.admin import LakeAdmin, SqlRunner, Volume
from replicator.adapters.lake.settings import LakeSettings
from replicator.domain.errors import ConfigurationError


class RecordingSql(SqlRunner):
    """Answers like Databricks would, and remembers every statement."""

    def __init__(self, volumes: dict[str, list[str]] | None = None) -> None:
        self.statements: list[str] = []
        self.volumes = volumes or {}

    def qualified_dataset(self, dataset: str) -> str:
        return f"`main`.`{dataset}`"

    def execute(self, statement: str) -> Sequence[Sequence[Any]]:
        self.statements.append(statement)
        if statement.startswith("SHOW VOLUMES IN"):
            dataset = statement.rsplit("`.`", 1)[1].rstrip("`")
            return [(dataset, name) for name in self.volumes.get(dataset, [])]
        return []


def databricks(tmp_path: Path) -> LakeSettings:
    return LakeSettings(destination="databricks", pipelines_dir=str(tmp_path))


class TestVolumes:
    def test_lists_the_volumes_of_bronze_and_bronze_staging(self, tmp_path: Path) -> None:
        sql = RecordingSql(
            {"bronze": ["_dlt_staging_load_volume"], "bronze_staging": ["_dlt_staging_load_volume"]}
        )

        volumes = LakeAdmin(databricks(tmp_path), sql).volumes()

        assert sql.statements == [
            "SHOW VOLUMES IN `main`.`bronze`",
            "SHOW VOLUMES IN `main`.`bronze_staging`",
        ]
        assert volumes == [
            Volume("bronze", "_dlt_staging_load_volume"),
            Volume("bronze_staging", "_dlt_staging_load_volume"),
        ]

    def test_other_destinations_say_they_have_no_volumes(self, tmp_path: Path) -> None:
        sql = RecordingSql()
        settings = LakeSettings(destination="duckdb", pipelines_dir=str(tmp_path))
        with pytest.raises(ConfigurationError, match="only on Databricks"):
            LakeAdmin(settings, sql).volumes()
        assert sql.statements == []


class TestCleanup:
    def test_drops_both_schemas_with_everything_in_them(self, tmp_path: Path) -> None:
        sql = RecordingSql()

        removed = LakeAdmin(databricks(tmp_path), sql).cleanup()

        assert sql.statements == [
            "DROP SCHEMA IF EXISTS `main`.`bronze` CASCADE",
            "DROP SCHEMA IF EXISTS `main`.`bronze_staging` CASCADE",
        ]
        assert removed[:2] == ["schema `main`.`bronze`", "schema `main`.`bronze_staging`"]
        assert removed[2].startswith("local pipeline state")
