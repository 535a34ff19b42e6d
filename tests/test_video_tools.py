"""Qué ffmpeg, yt-dlp y deno usa el daemon, y que un cancel mata el ffmpeg que yt-dlp lanza (issue 16).

- ``check-config`` imprime las líneas ``tools:`` (versión de yt-dlp; ruta, origen y versión de
  ffmpeg y deno), también con un ffmpeg forzado en el config y con yt-dlp desactivado.
- ``daemon.ready`` lleva lo mismo en ``ytdlp``, ``ffmpeg`` y ``deno``.
- ``yt-dlp -v`` sin red (sin URL: sólo la cabecera de depuración) con los argumentos del daemon
  lista deno como runtime de JavaScript y los scripts EJS.
- Un cancel durante la fusión de DASH (vídeo y audio separados) mata el ffmpeg real que yt-dlp
  arrancó: está en el grupo de procesos del trabajo, con el directorio temporal como cwd, y al
  cancelar no queda ningún proceso de ese grupo.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.ytdlp.argv import build_argv
from daemon.downloaders.ytdlp.tools import find_deno, find_ffmpeg
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import TestServer
from tests.support.media import MediaSet, serve

pytestmark = pytest.mark.slow


def _ytdlp_version() -> str:
    from yt_dlp.version import __version__

    return str(__version__)


def _check_config(tmp_path: Path, **settings: Any) -> subprocess.CompletedProcess[str]:
    base: dict[str, Any] = {"spool_dir": str(tmp_path / "spool"), "temp_dir": str(tmp_path / "tmp"),
                            "output_dir": str(tmp_path / "out"), "event_log": str(tmp_path / "events.jsonl")}
    base.update(settings)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base))
    return subprocess.run([sys.executable, "-m", "daemon", "check-config", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)


def _tool_lines(stdout: str) -> dict[str, str]:
    """``tools: NAME = PATH (from SOURCE); version: V`` -> {NAME: resto}."""
    found = {}
    for match in re.finditer(r"^\s*tools: (ffmpeg|deno) = (.*)$", stdout, re.MULTILINE):
        found[match[1]] = match[2]
    return found


def test_check_config_reports_ytdlp_ffmpeg_and_deno(tmp_path: Path) -> None:
    done = _check_config(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"tools: yt-dlp {_ytdlp_version()}\n" in done.stdout, done.stdout
    ffmpeg, ffmpeg_source = find_ffmpeg("auto")
    deno, deno_source = find_deno()
    assert ffmpeg and deno, "the project's wheels ship ffmpeg (imageio-ffmpeg) and deno"
    lines = _tool_lines(done.stdout)
    assert re.fullmatch(rf"{re.escape(ffmpeg)} \(from {ffmpeg_source}\); version: ffmpeg version \S+.*",
                        lines["ffmpeg"]), lines
    assert re.fullmatch(rf"{re.escape(deno)} \(from {deno_source}\); version: deno \d+\.\d+\.\d+.*",
                        lines["deno"]), lines
    assert "tools: yt-dlp JavaScript runtime = deno" in done.stdout


def test_check_config_reports_a_configured_ffmpeg_and_a_disabled_ytdlp(tmp_path: Path) -> None:
    real, _ = find_ffmpeg("auto")
    assert real is not None
    link = tmp_path / "bin" / "ffmpeg"
    link.parent.mkdir()
    link.symlink_to(real)
    done = _check_config(tmp_path, ytdlp={"ffmpeg": str(link)})
    assert done.returncode == 0, done.stderr
    assert _tool_lines(done.stdout)["ffmpeg"].startswith(f"{link} (from config); version: ffmpeg version ")

    off = _check_config(tmp_path, ytdlp={"enabled": False})
    assert off.returncode == 0, off.stderr
    assert "tools: yt-dlp disabled (ytdlp.enabled: false)" in off.stdout
    assert _tool_lines(off.stdout) == {}


def test_daemon_ready_names_the_tools_in_use(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "d") as d:
        [ready] = wait_until(lambda: d.events(name="daemon.ready"), timeout=60, what="daemon.ready")
    ffmpeg, ffmpeg_source = find_ffmpeg("auto")
    deno, deno_source = find_deno()
    assert ready["ytdlp"] == _ytdlp_version()
    assert (ready["ffmpeg"]["path"], ready["ffmpeg"]["source"]) == (ffmpeg, ffmpeg_source)
    assert ready["ffmpeg"]["version"].startswith("ffmpeg version ")
    assert (ready["deno"]["path"], ready["deno"]["source"]) == (deno, deno_source)
    assert re.match(r"deno \d+\.\d+\.\d+", ready["deno"]["version"]), ready["deno"]


def test_ytdlp_verbose_lists_deno_as_js_runtime_offline(tmp_path: Path) -> None:
    """Los argumentos que pasa el daemon (``--js-runtimes=deno:RUTA --no-remote-components``), sin URL:
    yt-dlp sólo imprime su cabecera de depuración; ninguna conexión sale del proceso."""
    ffmpeg, _ = find_ffmpeg("auto")
    deno, _ = find_deno()
    argv = build_argv(DownloadOptions(url="https://example.invalid/x", output_path=tmp_path), ffmpeg=ffmpeg,
                      deno=deno)
    kept = [a for a in argv if a.startswith(("--js-runtimes", "--no-remote-components", "--ignore-config",
                                             "--no-cache-dir", "--ffmpeg-location"))]
    assert any(a.startswith("--js-runtimes=deno:") for a in kept), argv
    env = {**os.environ, "DENO_V8_FLAGS": "--jitless"}  # como bajo la unidad endurecida
    done = subprocess.run([sys.executable, "-P", "-m", "yt_dlp", "-v", *kept], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path, env=env)
    debug = done.stderr
    assert re.search(r"^\[debug\] JS runtimes: deno-\d+\.\d+\.\d+$", debug, re.MULTILINE), debug
    assert re.search(r"^\[debug\] Optional libraries: .*yt_dlp_ejs-\d", debug, re.MULTILINE), debug
    assert "You must provide at least one URL" in debug  # llegó al final sin descargar nada


def _wrapper(folder: Path, real: str, pids: Path) -> Path:
    """Un ``ffmpeg`` que anota su pid y ejecuta (``exec``: mismo proceso) el ffmpeg real; a una
    fusión (lleva ``-i``) le añade ``-re`` para que lea a velocidad real y dure lo que el clip."""
    path = folder / "ffmpeg"
    path.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        f'  *" -i "*) echo $$ >> {pids}; exec {real} -re "$@" ;;\n'
        f'  *) exec {real} "$@" ;;\n'
        "esac\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def test_cancel_kills_the_ffmpeg_that_ytdlp_starts_to_merge(tmp_path: Path) -> None:
    media = MediaSet(tmp_path / "media", duration=30.0, size="160x120", kinds=("dash",))
    real, _ = find_ffmpeg("auto")
    assert real is not None
    (tmp_path / "bin").mkdir()
    pids = tmp_path / "ffmpeg.pids"
    wrapper = _wrapper(tmp_path / "bin", real, pids)
    with TestServer() as srv, DaemonProcess(tmp_path / "d", ytdlp={"ffmpeg": str(wrapper)}) as d:
        serve(srv, media.root)
        d.drop_job({"id": "merge-1", "url": srv.url("/media/dash/manifest.mpd")})
        wait_until(lambda: pids.exists() and pids.read_text().split(), timeout=120, what="ffmpeg merging")
        ffmpeg_pid = int(pids.read_text().split()[0])
        # El pid se anota antes del exec: esperar a que ese proceso ya sea el ffmpeg real.
        wait_until(lambda: os.readlink(f"/proc/{ffmpeg_pid}/exe") == os.path.realpath(real), timeout=30,
                   what="the wrapper to exec the real ffmpeg")
        cwd = os.readlink(f"/proc/{ffmpeg_pid}/cwd")
        assert cwd.startswith(str(d.temp_root / "videonote_dl_merge-1")), cwd
        pgid = os.getpgid(ffmpeg_pid)
        assert pgid not in (os.getpgid(d.pid), os.getpgid(0)), "yt-dlp and its ffmpeg run in the job's own group"
        members = _group_members(pgid)
        # yt-dlp (el líder del grupo) y su ffmpeg; nada más del daemon está en ese grupo.
        assert ffmpeg_pid in members and pgid in members and d.pid not in members, members
        assert len(members) == 2, members

        (d.spool / "cancel").mkdir(parents=True, exist_ok=True)
        (d.spool / "cancel" / "merge-1").touch()
        kind, record = d.wait_record("merge-1", timeout=60)
        assert kind == "failed" and record["outcome"] == "cancelled", record
        wait_until(lambda: _group_members(pgid) == [], timeout=15, what="the job's process group gone")
        assert not Path(f"/proc/{ffmpeg_pid}").exists() or "Z" in Path(f"/proc/{ffmpeg_pid}/stat").read_text()
        finished = d.events("merge-1", "ytdlp.finished")
        assert finished and finished[-1]["outcome"] == "cancelled" and finished[-1]["killed"], finished
        d.wait_temp_dirs_gone()
        assert not [p for p in d.output.rglob("*") if p.is_file()]
