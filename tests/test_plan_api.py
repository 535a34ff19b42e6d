"""Las comprobaciones del plan, tal cual, con el python del entorno: importaciones y autoprueba."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

PLAN_CHECKS = [
    "from daemon.downloaders.download_lifecycle import DownloadLifecycle, IsolatedDownload",
    "from daemon.temp_manager import TempManager; TempManager(correlation_id='abc123')",
    "from daemon.downloaders import DownloadLifecycle, IsolatedDownload, cleanup_download",
]


def _env(tmpdir: Path) -> dict[str, str]:
    # TMPDIR propio: así se ve que la autoprueba no deja nada en el temporal del sistema.
    env = dict(os.environ, TMPDIR=str(tmpdir))
    env.pop("VIDEONOTE_DL_CONFIG", None)
    return env


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Path:
    path = tmp_path / "tmpdir"
    path.mkdir()
    return path


@pytest.mark.parametrize("code", PLAN_CHECKS)
def test_plan_import_checks(code: str, tmpdir_env: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(tmpdir_env),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert os.listdir(tmpdir_env) == []  # crear un TempManager no crea nada hasta que se usa


def test_plan_checks_work_outside_the_checkout(tmp_path: Path, tmpdir_env: Path) -> None:
    # El paquete está instalado en el entorno: también se importa desde otra carpeta.
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", "; ".join(PLAN_CHECKS)], cwd=work, env=_env(tmpdir_env),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_lifecycle_self_test_passes_and_cleans_up(tmpdir_env: Path) -> None:
    done = subprocess.run([sys.executable, "daemon/downloaders/download_lifecycle.py"], cwd=REPO_ROOT,
                          env=_env(tmpdir_env), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    results = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert len(results) >= 10
    assert all(line.startswith("PASS") for line in results), done.stdout
    for topic in ("success", "failure", "exception", "cancellation", "cleanup_on_success=False",
                  "naming", "exact-match", "list_active_downloads", "bad ids"):
        assert any(topic in line for line in results), f"no check about {topic!r}"
    assert lines[-1] == f"{len(results)}/{len(results)} checks passed; temp root removed"
    assert os.listdir(tmpdir_env) == []  # su raíz temporal ya no está


def test_self_test_runs_as_a_module_too(tmpdir_env: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "daemon.downloaders.download_lifecycle"], cwd=REPO_ROOT,
                          env=_env(tmpdir_env), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
