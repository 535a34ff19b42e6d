"""La unidad systemd y sus compañeros (sysusers, tmpfiles, config, logrotate), sin arrancar nada.

- ``systemd-analyze verify --man=no``: código 0 Y stderr vacío (verify solo avisa, con código 0,
  de claves desconocidas o valores mal escritos).
- ``systemd-analyze security --offline=true --threshold=12``: exposición de 1,2 o menos, y solo
  por las opciones que se dejan abiertas a propósito (docs/operations.md).
- Coherencia: las rutas de systemd/config.yaml caen dentro de los directorios que la unidad hace
  escribibles, TimeoutStopSec= supera shutdown_grace, y sysusers + tmpfiles crean el spool con
  los permisos de grupo que necesitan los productores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.config import load_settings
from daemon.units import parse_duration

REPO = Path(__file__).resolve().parents[1]
SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "videonote-dl.service"
INSTALLED_EXEC = "/usr/local/bin/videonote-dl"

# Lo que la unidad deja abierto a propósito: un descargador necesita red (AF_INET/INET6, sin
# PrivateNetwork ni lista de IPs), AF_UNIX para sd_notify, el árbol raíz del anfitrión, el
# char-rtc:r que añade ProtectClock=yes, y UMask=0027 (los productores leen los resultados).
ACCEPTED_EXPOSURES = {
    "PrivateNetwork=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "RestrictAddressFamilies=~AF_UNIX",
    "IPAddressDeny=",
    "RootDirectory=/RootImage=",
    "DeviceAllow=",
    "UMask=",
    # El daemon necesita el uid real de cada productor (submitter, cancelled_by, quién cancela qué).
    "PrivateUsers=",
}

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (package systemd)"
)


def _unit_directives(text: str) -> dict[str, list[str]]:
    """Directivas de la unidad: nombre -> valores, en orden (las repetidas se acumulan)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _copy_with_existing_exec(tmp_path: Path, text: str | None = None) -> Path:
    """Copia de la unidad con ExecStart= en un ejecutable que exista aquí (como hace make install)."""
    executable = Path(sys.executable).with_name("videonote-dl")
    if not executable.exists():
        executable = Path(sys.executable)
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    assert INSTALLED_EXEC in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_EXEC, str(executable)), encoding="utf-8")
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    result = _analyze("verify", "--man=no", str(_copy_with_existing_exec(tmp_path)))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@needs_analyze
def test_verify_reports_typos_only_on_stderr(tmp_path: Path) -> None:
    # Por qué no basta el código de salida: una clave mal escrita da 0 y un aviso en stderr.
    text = UNIT.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSytem=strict")
    result = _analyze("verify", "--man=no", str(_copy_with_existing_exec(tmp_path, text)))
    assert result.returncode == 0
    assert "Unknown key 'ProtectSytem'" in result.stderr


@needs_analyze
def test_unit_security_exposure_is_at_most_1_2() -> None:
    result = _analyze("security", "--offline=true", "--threshold=12", str(UNIT))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for videonote-dl\.service: (\d+\.\d)", result.stdout)
    assert match is not None, result.stdout
    assert float(match.group(1)) <= 1.2


@needs_analyze
def test_only_the_deliberate_exposures_remain() -> None:
    result = _analyze("security", "--offline=true", "--json=short", str(UNIT))
    assert result.returncode == 0, result.stderr
    open_items = {item["name"] for item in json.loads(result.stdout) if float(item.get("exposure") or 0) > 0}
    assert open_items <= ACCEPTED_EXPOSURES, f"new exposures: {sorted(open_items - ACCEPTED_EXPOSURES)}"


def test_unit_contract() -> None:
    directives = _unit_directives(UNIT.read_text(encoding="utf-8"))
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": [f"{INSTALLED_EXEC} run --config /etc/videonote-dl/config.yaml"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Restart": ["on-failure"],
        "KillMode": ["mixed"],
        "User": ["videonote-dl"],
        "Group": ["videonote-dl"],
        "StateDirectory": ["videonote-dl"],
        "CacheDirectory": ["videonote-dl"],
        "LogsDirectory": ["videonote-dl"],
        "RuntimeDirectory": ["videonote-dl"],
        "ConfigurationDirectory": ["videonote-dl"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
    }
    for key, values in expected.items():
        assert directives.get(key) == values, key
    assert "DynamicUser" not in directives, "a dynamic user's directories are 0700: producers could not write"
    assert parse_duration(directives["WatchdogSec"][0]) > 0


def test_config_paths_are_inside_the_units_writable_directories() -> None:
    settings = load_settings(SYSTEMD_DIR / "config.yaml")
    directives = _unit_directives(UNIT.read_text(encoding="utf-8"))
    state = Path("/var/lib") / directives["StateDirectory"][0]
    cache = Path("/var/cache") / directives["CacheDirectory"][0]
    logs = Path("/var/log") / directives["LogsDirectory"][0]
    runtime = Path("/run") / directives["RuntimeDirectory"][0]
    assert settings.spool_dir.is_relative_to(state)
    assert settings.output_dir.is_relative_to(state)
    assert settings.temp_dir.is_relative_to(cache)
    assert settings.event_log.is_relative_to(logs)
    assert settings.status_file.is_relative_to(runtime)
    # La parada ordenada (gracia + recolocar trabajos) cabe antes del SIGKILL de systemd.
    assert parse_duration(directives["TimeoutStopSec"][0]) >= settings.shutdown_grace + 10


def test_logrotate_and_tmpfiles_name_the_configured_paths() -> None:
    raw = yaml.safe_load((SYSTEMD_DIR / "config.yaml").read_text(encoding="utf-8"))
    logrotate = (SYSTEMD_DIR / "videonote-dl.logrotate").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(raw['event_log'])} \{{", logrotate, re.MULTILINE)
    assert "systemctl reload videonote-dl.service" in logrotate
    tmpfiles = (SYSTEMD_DIR / "videonote-dl.tmpfiles").read_text(encoding="utf-8")
    paths = {line.split()[1] for line in tmpfiles.splitlines() if line.startswith("d ")}
    spool = raw["spool_dir"]
    for sub in ("tmp", "incoming", "active", "done", "failed", "rejected", "cancel"):
        assert f"{spool}/{sub}" in paths
    assert {raw["output_dir"], raw["temp_dir"], str(Path(raw["event_log"]).parent)} <= paths


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: tmpfiles sets owners and groups")
@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
                    reason="systemd-sysusers/systemd-tmpfiles are not installed (package systemd)")
def test_sysusers_and_tmpfiles_build_a_spool_producers_can_write(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for tool, source in (("systemd-sysusers", "videonote-dl.sysusers"), ("systemd-tmpfiles", "videonote-dl.tmpfiles")):
        args = [tool, f"--root={root}"] + (["--create"] if tool == "systemd-tmpfiles" else [])
        result = subprocess.run([*args, str(SYSTEMD_DIR / source)], capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    uid, gid = int(passwd["videonote-dl"][2]), int(passwd["videonote-dl"][3])
    producers = int(groups["videonote-dl-producers"][2])
    assert "videonote-dl" in groups["videonote-dl-producers"][3].split(","), "the daemon reads producers' files"
    assert passwd["videonote-dl"][6].endswith("nologin")

    def mode_owner(relative: str) -> tuple[str, int, int]:
        st = (root / relative.lstrip("/")).stat()
        return oct(st.st_mode & 0o7777), st.st_uid, st.st_gid

    state, spool = "/var/lib/videonote-dl", "/var/lib/videonote-dl/spool"
    assert mode_owner(state) == ("0o751", uid, gid)  # dueño = User/Group: systemd no re-chownea el árbol
    assert mode_owner(spool) == ("0o2750", uid, producers)
    for writable in ("tmp", "incoming", "cancel"):
        assert mode_owner(f"{spool}/{writable}") == ("0o3730", uid, producers), writable  # maildrop: no listable
    for readable in ("done", "failed"):
        assert mode_owner(f"{spool}/{readable}") == ("0o2750", uid, producers), readable
    assert mode_owner(f"{spool}/rejected") == ("0o2710", uid, producers)
    assert mode_owner(f"{spool}/active") == ("0o2700", uid, producers)
    assert mode_owner("/var/lib/videonote-dl/downloads") == ("0o2750", uid, producers)
    assert mode_owner("/var/cache/videonote-dl") == ("0o700", uid, gid)
    assert mode_owner("/var/log/videonote-dl") == ("0o750", uid, gid)
