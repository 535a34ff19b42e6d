"""Tres "hosts" sobre un spool compartido: tres contenedores systemd-nspawn, uno muere de golpe.

Cada contenedor tiene su hostname, su espacio de PID, de UTS y de montaje, su red (sólo su
loopback, con su propio servidor HTTP de prueba) y su disco local (raíz tmpfs: ahí van sus
temporales). El spool y la salida son una carpeta del anfitrión montada en los tres en la misma
ruta; cada daemon escribe su registro en ``log/{host}.jsonl``. Uno corre con ``watch: poll``.

Se dejan 600 trabajos; a mitad, con descargas en curso en uno de los hosts con inotify, se mata
ese contenedor entero (SIGKILL a su PID 1). Los supervivientes recuperan sus reclamos (la misma
prueba del cerrojo que al arrancar, cada ``rescan_interval``) y terminan su trabajo. Al final,
``verify`` (los tres registros mezclados) comprueba que cada trabajo acabó exactamente una vez,
con el contenido correcto, sin nada parcial ni huérfano en la salida ni en active/.

Lo que no se prueba aquí: un servidor NFS de verdad (un solo núcleo: los cerrojos ``flock`` y los
``rename`` son los del sistema de archivos local). Ver docs/operations.md "Several hosts".
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from daemon.config import load_settings
from daemon.verify import verify_spool
from tests.support.nspawn import Container, nspawn_unavailable_reason, pattern_bytes

REPO = Path(__file__).resolve().parents[1]
PYTHON_HOME = Path(sys.base_prefix)  # el intérprete del venv (pyenv u /usr) debe verse dentro
JOBS = 600
SLOW_EVERY = 20  # uno de cada 20 es lento (~2 s): siempre hay descargas en curso que matar

_REASON = nspawn_unavailable_reason()
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=f"cannot boot systemd in a container: {_REASON}"),
]


def _config(shared: Path, poll: bool) -> str:
    config = {
        "spool_dir": str(shared / "spool"), "output_dir": str(shared / "out"),
        "temp_dir": "/var/lib/vdl/tmp", "event_log": str(shared / "log" / "{host}.jsonl"),
        "status_file": "/run/vdl/status.json", "max_concurrent": 4, "rescan_interval": "1s",
        "shutdown_grace": "10s", "watch": "poll" if poll else "auto",
        "download": {"allow_private_networks": True, "timeout": "60s", "backoff": "100ms"},
        "reaper": {"interval": "1s", "max_age": "3s"},  # copias a medias del host muerto
        "ytdlp": {"enabled": False},
    }
    return yaml.safe_dump(config)


def _boot(shared: Path, poll: bool) -> Container:
    binds = [(REPO, str(REPO))]
    if not str(PYTHON_HOME).startswith("/usr"):
        binds.append((PYTHON_HOME, str(PYTHON_HOME)))
    container = Container(binds=binds, rw_binds=[(shared, str(shared))], name_prefix="vdlhost")
    container.start()
    container.write_file("/etc/vdl/config.yaml", _config(shared, poll))
    container.run("systemd-run", "--unit=vdl-http", "-p", "Type=notify", "-p", "NotifyAccess=all",
                  "/usr/bin/python3", str(REPO / "tests/support/nspawn.py"), "serve", "8080")
    container.run("systemd-run", "--unit=videonote-dl", "-p", "Type=notify", "-p", "NotifyAccess=main",
                  "-p", "WorkingDirectory=/", "-p", "KillMode=mixed", "-p", "TimeoutStopSec=30",
                  str(REPO / ".venv/bin/python"), "-m", "daemon", "run", "--config", "/etc/vdl/config.yaml")
    return container


def _events(log: Path) -> list[dict[str, object]]:
    try:
        return [orjson.loads(line) for line in log.read_bytes().splitlines()]
    except FileNotFoundError:
        return []


def _has_event(log: Path, name: str) -> bool:
    return any(e["event"] == name for e in _events(log))


def test_three_hosts_one_killed_every_job_ends_exactly_once(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "spool").mkdir(parents=True)
    (shared / "out").mkdir()
    (shared / "log").mkdir()
    hosts: list[Container] = []
    try:
        for n in range(3):
            hosts.append(_boot(shared, poll=n == 2))
        names = [h.run("hostname").stdout.strip() for h in hosts]
        assert len(set(names)) == 3, names
        logs = [shared / "log" / f"{name}.jsonl" for name in names]
        for host, log in zip(hosts, logs, strict=True):
            # systemd-run vuelve con READY=1; ``daemon.ready`` llega después, cuando el daemon ya
            # sabe qué ffmpeg, deno y yt-dlp usa (lanza cada uno con -version: en un anfitrión
            # lento, más de un segundo). Se espera al evento, no se supone escrito.
            host.wait_for(functools.partial(_has_event, log, "daemon.ready"), f"daemon.ready in {log.name}",
                          timeout=60)
        modes = [next(e["watch"] for e in _events(log) if e["event"] == "spool.watch_mode") for log in logs]
        assert modes == ["inotify", "inotify", "poll"]
        instances = [next(str(e["instance"]) for e in _events(log) if e["event"] == "daemon.starting")
                     for log in logs]
        assert len(set(instances)) == 3 and all(i.startswith(n[:32]) for i, n in zip(instances, names, strict=True))

        expected: dict[str, str | None] = {}
        spool = shared / "spool"
        for n in range(JOBS):
            job_id = f"h{n:03d}"
            size = 1536 * 1024 + 64 * 1024 if n % SLOW_EVERY == 0 else 32 * 1024 + n
            kind = "slow" if n % SLOW_EVERY == 0 else "fast"
            expected[job_id] = hashlib.sha256(pattern_bytes(size)).hexdigest()
            tmp = spool / "tmp" / f"{job_id}.yaml"
            tmp.write_text(yaml.safe_dump({"id": job_id, "url": f"http://127.0.0.1:8080/{kind}/{size}/{job_id}.bin"}))
            os.rename(tmp, spool / "incoming" / f"{job_id}.yaml")

        # La víctima: un host con inotify, en cuanto tiene una descarga lenta en curso.
        victim, victim_log = hosts[0], logs[0]

        def slow_running() -> str | None:
            started = {str(e["correlation_id"]) for e in _events(victim_log) if e["event"] == "job.started"}
            for job_id in sorted(started):
                if int(job_id[1:]) % SLOW_EVERY == 0 and not (spool / "done" / f"{job_id}.json").exists():
                    return job_id
            return None

        caught = victim.wait_for(slow_running, "a slow download running on the victim", timeout=120)
        victim.kill()
        killed_at = time.time()
        assert [left for left in victim.gone() if "cgroup" not in left] == []  # nada suyo sigue vivo

        def finished() -> bool:
            return len(os.listdir(spool / "done")) + len(os.listdir(spool / "failed")) >= JOBS

        hosts[1].wait_for(finished, "600 terminal records", timeout=240)
        took = time.time() - killed_at
        for host in hosts[1:]:
            host.run("systemctl", "stop", "videonote-dl")
        hosts[1].wait_for(lambda: not any((shared / "out" / ".videonote-dl-staging").glob("*")),
                          "no staging copy left", timeout=30)

        # Los supervivientes recuperaron los reclamos del muerto e hicieron su trabajo.
        survivors = [_events(log) for log in logs[1:]]
        recovered = [e for events in survivors for e in events if e["event"] == "spool.peer_recovered"]
        assert [e["instance"] for e in recovered] == [instances[0]], recovered
        requeued = {str(e["correlation_id"]) for events in survivors for e in events if e["event"] == "job.requeued"}
        assert caught in requeued
        redone_by = {str(e["correlation_id"]): n for n, events in enumerate(survivors, 1) for e in events
                     if e["event"] == "job.recorded"}
        assert caught in redone_by
        shares = [sum(1 for e in _events(log) if e["event"] == "job.recorded") for log in logs]
        print(f"records per host (victim first): {shares}; caught {caught}; survivors finished {took:.1f}s "
              f"after the kill; {recovered[0]['files']} claim(s) recovered")
        assert shares[2] > 0, "the poll-mode host did no work"
        assert not any((spool / "active").iterdir()), list((spool / "active").iterdir())

        settings = load_settings(_host_config(tmp_path, shared))
        report = verify_spool(settings, expected, daemon_stopped=True, event_logs=logs)
        assert report.ok, report.problems[:20]
        assert report.published == JOBS
    finally:
        for host in hosts:
            host.stop()
    for host in hosts:
        assert host.gone() == [], host.gone()


def _host_config(tmp_path: Path, shared: Path) -> Path:
    """La misma configuración vista desde el anfitrión (mismas rutas compartidas), para ``verify``."""
    path = tmp_path / "verify.yaml"
    path.write_text(yaml.safe_dump({"spool_dir": str(shared / "spool"), "output_dir": str(shared / "out"),
                                    "event_log": str(shared / "log" / "none.jsonl"), "temp_dir": str(tmp_path / "t")}))
    return path
