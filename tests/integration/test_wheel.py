"""The wheel a Lakeflow job installs: built, installed into a fresh venv, run as `pipeline_main`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.adapters.lake.settings import LakeSettings
from tests.integration.processes import replicator_env
from tests.lake_readers import delta_rows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def test_wheel_installs_and_runs_pipeline_main(execute: Any, pg_dsn: str, tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run(
        [*uv(), "build", "--wheel", "-o", str(dist), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = dist.glob("replicator-*.whl")
    subprocess.run([*uv(), "venv", "-q", str(venv)], check=True, capture_output=True)
    subprocess.run(
        [*uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert (venv / "bin" / "replicator").exists()
    execute(
        "CREATE TABLE items (id int PRIMARY KEY, price numeric(6,2)); INSERT INTO items VALUES (1, 2.50)"
    )
    lake = tmp_path / "lake"
    env = replicator_env(pg_dsn, str(lake), tmp_path / "dlt")

    result = subprocess.run(
        [str(venv / "bin" / "pipeline_main"), "--mode", "snapshot"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert delta_rows(LakeSettings(bucket_url=str(lake)), "items") == [
        {"id": 1, "price": Decimal("2.50")}
    ]
