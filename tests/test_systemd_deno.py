"""deno (el runtime de JavaScript de yt-dlp) dentro del aislamiento de la unidad, bajo un systemd real.

La unidad lleva ``MemoryDenyWriteExecute=yes``: V8 no puede crear páginas escribibles y
ejecutables para su JIT, así que la unidad pone ``Environment=DENO_V8_FLAGS=--jitless``. Tras
``make install`` en un contenedor systemd-nspawn (como tests/test_systemd_nspawn.py), cada sonda es
una unidad ``Type=oneshot`` con la sección ``[Service]`` de la unidad instalada (usuario,
directorios, todo el aislamiento y su entorno) y otra ``ExecStart``:

1. deno evalúa un script por stdin con las mismas opciones con que lo lanza yt-dlp
   (``deno run --ext=js ... -``): funciona, y ``typeof WebAssembly`` es ``undefined`` (V8 sin JIT).
2. La misma sonda sin ``DENO_V8_FLAGS``: V8 muere al arrancar (MemoryDenyWriteExecute la bloquea),
   lo que prueba que la sonda mide algo y que ``--jitless`` es lo que la hace funcionar.
3. ``yt-dlp -v`` con los argumentos del daemon lista ``JS runtimes: deno-X`` y ``yt_dlp_ejs``.
4. ``videonote-dl check-config`` dice qué ffmpeg, deno y yt-dlp se usan.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.nspawn import Container, ContainerError, nspawn_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
UNIT = "videonote-dl.service"
PREFIX = "/opt/videonote-dl"
VENV_BIN = f"{PREFIX}/lib/videonote-dl/bin"
CLI = f"{PREFIX}/bin/videonote-dl"
CONFIG = "/etc/videonote-dl/config.yaml"
# Las opciones con que yt-dlp lanza deno (yt_dlp/extractor/youtube/jsc/_builtin/deno.py).
DENO_RUN = (f"{VENV_BIN}/deno run --ext=js --no-code-cache --no-prompt --no-remote --no-lock "
            "--node-modules-dir=none --no-config --no-npm --cached-only -")
PROBE_JS = 'console.log("jitless-probe", [3, 1, 2].sort().join(""), typeof WebAssembly);'

# Claves de [Service] que no tienen sentido en una sonda oneshot (tipo, órdenes, reinicios, plazos).
_DROP = ("Type=", "NotifyAccess=", "ExecStart=", "ExecReload=", "WatchdogSec=", "Restart=", "RestartSec=",
         "TimeoutStartSec=", "TimeoutStopSec=", "KillMode=")

_REASON = nspawn_unavailable_reason()
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=f"cannot boot systemd in a container: {_REASON}"),
]


def sandbox_of(unit_text: str, keep_jitless: bool = True) -> list[str]:
    """Las líneas de ``[Service]`` de la unidad que forman su aislamiento (sin comentarios)."""
    lines: list[str] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or line.startswith(_DROP):
            continue
        if not keep_jitless and line.startswith("Environment=DENO_V8_FLAGS="):
            continue
        lines.append(line)
    return lines


def _probe_unit(sandbox: list[str], *service: str) -> str:
    return "\n".join(["[Unit]", "Description=videonote-dl sandbox probe", "", "[Service]", "Type=oneshot",
                      *sandbox, *service, ""])


def _run_probe(c: Container, name: str, text: str) -> tuple[str, str]:
    """Instala y arranca la sonda ``name``; devuelve (Result, salida en el journal)."""
    c.write_file(f"/etc/systemd/system/{name}.service", text)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "start", f"{name}.service", check=False, timeout=120)
    result = c.show(f"{name}.service", "Result")["Result"]
    time.sleep(0.2)  # journald recibe las últimas líneas por su propio socket
    output = c.run("journalctl", "-u", f"{name}.service", "--no-pager", "-o", "cat", check=False).stdout
    return result, output


def test_sandbox_of_keeps_the_hardening_and_drops_the_service_plumbing() -> None:
    unit = (REPO / "systemd" / UNIT).read_text(encoding="utf-8")
    sandbox = sandbox_of(unit)
    assert "MemoryDenyWriteExecute=yes" in sandbox and "User=videonote-dl" in sandbox
    assert "Environment=DENO_V8_FLAGS=--jitless" in sandbox
    assert not [line for line in sandbox if line.startswith(_DROP)]
    assert "Environment=DENO_V8_FLAGS=--jitless" not in sandbox_of(unit, keep_jitless=False)


def test_deno_runs_jitless_under_the_hardened_unit(wheelhouse: Path) -> None:
    container = Container(binds=[(REPO, "/opt/src"), (wheelhouse, "/opt/wheelhouse")])
    with container as c:
        assert c.boot_state == "running", f"container booted {c.boot_state!r}:\n{c.boot_log()}"
        try:
            _scenario(c)
        except (AssertionError, ContainerError):
            print(f"--- boot log\n{c.boot_log()[-2000:]}")
            raise
    assert container.gone() == [], "the container left something behind"


def _scenario(c: Container) -> None:
    c.sh("mkdir -p /opt/build && tar -C /opt/src --exclude=./.venv --exclude=./.git --exclude=./var "
         "--exclude=./build --exclude='*.egg-info' -cf - . | tar -C /opt/build -xf -")
    c.run("make", "-C", "/opt/build", "install", f"PREFIX={PREFIX}",
          "PIP_INSTALL_ARGS=--no-index --find-links=/opt/wheelhouse --no-cache-dir", timeout=300)
    c.run("systemd-sysusers")
    c.run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/videonote-dl.conf")
    unit = c.read_file(f"/etc/systemd/system/{UNIT}")
    sandbox = sandbox_of(unit)
    assert "MemoryDenyWriteExecute=yes" in sandbox and "Environment=DENO_V8_FLAGS=--jitless" in sandbox

    stdin = ["StandardInput=data", f"StandardInputText={PROBE_JS}"]
    result, output = _run_probe(c, "vdl-probe-jitless", _probe_unit(sandbox, *stdin, f"ExecStart={DENO_RUN}"))
    assert result == "success", output
    assert "jitless-probe 123 undefined" in output, output

    # Control: el mismo aislamiento sin --jitless. V8 necesita páginas W+X para su JIT y no las tiene.
    result, output = _run_probe(c, "vdl-probe-jit", _probe_unit(sandbox_of(unit, keep_jitless=False), *stdin,
                                                                f"ExecStart={DENO_RUN}"))
    assert result != "success", f"deno with a JIT ran under MemoryDenyWriteExecute=yes:\n{output}"
    assert "jitless-probe" not in output, output

    # yt-dlp, con los argumentos del daemon, encuentra deno y los scripts EJS (sin red: sin URL).
    ytdlp = (f"ExecStart=-{VENV_BIN}/python -P -m yt_dlp -v --ignore-config --no-cache-dir "
             f"--no-remote-components --js-runtimes=deno:{VENV_BIN}/deno")
    _result, output = _run_probe(c, "vdl-probe-ytdlp", _probe_unit(sandbox, ytdlp))
    assert re.search(r"^\[debug\] JS runtimes: deno-\d+\.\d+\.\d+$", output, re.MULTILINE), output
    assert re.search(r"^\[debug\] Optional libraries: .*yt_dlp_ejs-\d", output, re.MULTILINE), output

    # check-config como el servicio: qué yt-dlp, ffmpeg y deno usarán los trabajos.
    result, output = _run_probe(c, "vdl-probe-check", _probe_unit(sandbox, f"ExecStart={CLI} check-config "
                                                                            f"--config {CONFIG}"))
    assert result == "success", output
    assert re.search(r"tools: yt-dlp \d{4}\.\d", output), output
    assert re.search(rf"tools: deno = {re.escape(VENV_BIN)}/deno \(from deno wheel\); version: deno \d", output), \
        output
    assert re.search(r"tools: ffmpeg = \S+ \(from (imageio-ffmpeg|PATH)\); version: ffmpeg version ", output), output
