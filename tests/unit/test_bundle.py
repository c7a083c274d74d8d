"""The Databricks Asset Bundle: two wheel tasks on `pipeline_main`, no secret inline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEYS = re.compile(r"(CREDENTIALS|SECRET|TOKEN|PASSWORD)", re.IGNORECASE)
SECRET_REFERENCE = re.compile(r"^\{\{secrets/[^/]+/[^}]+\}\}$")


def jobs() -> dict[str, Any]:
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert bundle["include"] == ["resources/*.yml"]
    found: dict[str, Any] = {}
    for path in sorted((ROOT / "resources").glob("*.yml")):
        found.update(yaml.safe_load(path.read_text())["resources"]["jobs"])
    return found


def only_task(job: dict[str, Any]) -> dict[str, Any]:
    (task,) = job["tasks"]
    return task  # type: ignore[no-any-return]


class TestBundle:
    def test_two_jobs_run_the_wheel_entry_point_one_mode_each(self) -> None:
        defined = jobs()
        assert set(defined) == {"replicator_snapshot", "replicator_cdc"}
        snapshot = only_task(defined["replicator_snapshot"])["python_wheel_task"]
        cdc = only_task(defined["replicator_cdc"])["python_wheel_task"]
        assert snapshot == {
            "package_name": "replicator",
            "entry_point": "pipeline_main",
            "parameters": ["--mode", "snapshot"],
        }
        assert cdc["entry_point"] == "pipeline_main"
        assert cdc["parameters"] == ["--mode", "cdc", "--follow"]

    def test_the_cdc_job_is_continuous_and_never_runs_twice_at_once(self) -> None:
        cdc = jobs()["replicator_cdc"]
        assert "continuous" in cdc
        assert cdc["max_concurrent_runs"] == 1
        assert jobs()["replicator_snapshot"]["max_concurrent_runs"] == 1

    def test_both_tasks_install_the_locked_dependencies_before_the_wheel(self) -> None:
        for path in sorted((ROOT / "resources").glob("*.yml")):
            for job in yaml.safe_load(path.read_text())["resources"]["jobs"].values():
                libraries = only_task(job)["libraries"]
                assert [next(iter(lib)) for lib in libraries] == ["requirements", "whl"]
                assert (path.parent / libraries[0]["requirements"]).is_file()

    def test_the_locked_set_is_uv_lock_as_it_is_now(self) -> None:
        import shutil
        import subprocess
        import sys

        uv = [shutil.which("uv") or sys.executable, *([] if shutil.which("uv") else ["-m", "uv"])]
        exported = subprocess.run(
            [*uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
             "--format", "requirements-txt"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        pins = [line for line in exported.splitlines() if "==" in line]
        shipped = (ROOT / "resources" / "requirements-lock.txt").read_text().splitlines()
        assert pins == [line for line in shipped if "==" in line], "run `make lock`"
        assert any(line.startswith("pyarrow==") for line in pins)

    def test_both_tasks_install_the_built_wheel(self, tmp_path: Path) -> None:
        # Bundle paths resolve from the file that holds them; `uv build --wheel` (the bundle's
        # artifact) writes the wheel to dist/ next to databricks.yml.
        (tmp_path / "dist").mkdir()
        (tmp_path / "dist" / "replicator-0.1.0-py3-none-any.whl").touch()
        for path in sorted((ROOT / "resources").glob("*.yml")):
            for job in yaml.safe_load(path.read_text())["resources"]["jobs"].values():
                (library,) = [lib for lib in only_task(job)["libraries"] if "whl" in lib]
                folder = tmp_path / path.parent.relative_to(ROOT)
                folder.mkdir(exist_ok=True)
                found = list(folder.glob(library["whl"]))
                assert [p.name for p in found] == ["replicator-0.1.0-py3-none-any.whl"], path

    def test_no_secret_value_is_inline(self) -> None:
        for job in jobs().values():
            for cluster in job["job_clusters"]:
                env = cluster["new_cluster"]["spark_env_vars"]
                for key, value in env.items():
                    if SECRET_KEYS.search(key) and not key.endswith(
                        ("SERVER_HOSTNAME", "HTTP_PATH", "CATALOG")
                    ):
                        assert SECRET_REFERENCE.match(value), f"{key} must come from a secret scope"
        text = (ROOT / "resources" / "replicator_jobs.yml").read_text()
        text += (ROOT / "databricks.yml").read_text()
        assert not re.search(r"dapi[0-9a-f]{8,}|postgres(ql)?://[^{\s]+", text)
