"""Qué config.yaml usa la orden, valores mostrados tal como se escribieron y la sección ``metrics``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import (
    CONFIG_ENV_VAR,
    SYSTEM_CONFIG,
    ConfigError,
    config_label,
    find_config,
    load_settings,
    shown_value,
)

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    env.update(extra)
    return env


def _check_config(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "check-config", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=60)


def test_discovery_order_flag_then_env_then_local_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("max_concurrent: 3\n")
    (tmp_path / "env.yaml").write_text("max_concurrent: 5\n")
    (tmp_path / "flag.yaml").write_text("max_concurrent: 7\n")
    local = _check_config(tmp_path)
    assert local.returncode == 0, local.stderr
    assert f"config OK: {tmp_path / 'config.yaml'} (./config.yaml)" in local.stdout
    assert "max_concurrent = 3" in local.stdout
    env = _check_config(tmp_path, **{CONFIG_ENV_VAR: str(tmp_path / "env.yaml")})
    assert "max_concurrent = 5" in env.stdout and f"(${CONFIG_ENV_VAR})" in env.stdout
    flag = _check_config(tmp_path, "--config", "flag.yaml", **{CONFIG_ENV_VAR: str(tmp_path / "env.yaml")})
    assert "max_concurrent = 7" in flag.stdout and "(--config)" in flag.stdout


def test_without_any_file_the_defaults_are_named_with_what_was_looked_for(tmp_path: Path) -> None:
    if SYSTEM_CONFIG.exists():
        pytest.skip(f"{SYSTEM_CONFIG} exists on this machine")
    done = _check_config(tmp_path)
    assert done.returncode == 0
    assert "built-in defaults" in done.stdout and str(SYSTEM_CONFIG) in done.stdout
    assert f"paths relative to {tmp_path}" in done.stdout


def test_find_config_prefers_the_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    (tmp_path / "config.yaml").write_text("")
    assert find_config("x.yaml") == (tmp_path / "x.yaml", "--config")
    assert find_config() == (tmp_path / "config.yaml", "./config.yaml")
    monkeypatch.setenv(CONFIG_ENV_VAR, "/elsewhere/c.yaml")
    assert find_config() == (Path("/elsewhere/c.yaml"), f"${CONFIG_ENV_VAR}")


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "config.yaml").write_text("spool_dir: spool\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _check_config(elsewhere, "--config", str(folder / "config.yaml"))
    assert f"spool_dir = {folder / 'spool'}" in done.stdout


def test_a_missing_spool_names_the_config_in_use(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("spool_dir: nowhere/spool\n")
    done = subprocess.run([sys.executable, "-m", "daemon", "submit", "https://example.org/a.bin"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert f"config {tmp_path / 'config.yaml'}" in done.stderr
    assert str(tmp_path / "nowhere/spool/incoming") in done.stderr


def test_durations_and_sizes_are_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("shutdown_grace: 45s\ndownload:\n  timeout: 10m\n  max_bytes: 2GiB\n  backoff: 3\n")
    settings = load_settings(path)
    assert settings.download.timeout == 600.0
    assert shown_value(settings, "download.timeout") == "10m"
    assert shown_value(settings, "download.max_bytes") == "2GiB"
    assert shown_value(settings, "download.backoff") == "3s"
    assert shown_value(settings, "reaper.max_age") == "1h"  # por defecto: como se documenta
    assert shown_value(settings, "download.allow_private_networks") == "false"
    done = _check_config(tmp_path, "--config", str(path))
    assert "download.timeout = 10m" in done.stdout and "600.0" not in done.stdout
    assert "shutdown_grace = 45s" in done.stdout


@pytest.mark.parametrize("value", ["127.0.0.1:9464", "[::1]:9464", "0.0.0.0:1"])
def test_metrics_listen_accepts_host_port(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"metrics:\n  listen: '{value}'\n")
    assert load_settings(path).metrics.listen == value


def test_metrics_listen_socket_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  listen: run/metrics.sock\n")
    assert load_settings(path).metrics.listen == str(tmp_path / "run/metrics.sock")


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    settings = load_settings(path)
    assert settings.metrics.listen is None
    assert shown_value(settings, "metrics.listen") == "null (off)"


@pytest.mark.parametrize(("value", "hint"), [
    ("9464", "host:port"), ("localhost:99999", "port from 1 to 65535"), (":9464", "has no host"), ("5", "host:port"),
])
def test_bad_metrics_listen_is_refused_with_the_fix(tmp_path: Path, value: str, hint: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"metrics:\n  listen: '{value}'\n")
    with pytest.raises(ConfigError, match=r"metrics\.listen") as excinfo:
        load_settings(path)
    assert hint in str(excinfo.value)


def test_config_label_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert config_label(load_settings(path)) == f"config {path}"
