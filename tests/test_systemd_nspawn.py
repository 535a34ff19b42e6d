"""El servicio bajo un systemd real: arranque en un contenedor systemd-nspawn y `make install`.

Un solo recorrido, en orden, como lo haría un operador (ver tests/support/nspawn.py):

1. ``make install`` (PREFIX=/opt/videonote-dl: /usr es de solo lectura en el contenedor),
   ``systemd-sysusers`` y ``systemd-tmpfiles --create``; un productor (miembro del grupo) y un
   extraño (no miembro).
2. ``systemctl start`` vuelve tras READY=1; el proceso corre sin privilegios y aislado.
3. Un productor deja un trabajo; el archivo, servido dentro del contenedor, llega a done/.
   STATUS= muestra las cuentas. El extraño no puede escribir en el spool; un archivo que el
   grupo no puede leer acaba en rejected/ con su motivo.
4. Rotación del registro: el ``postrotate`` del snippet de logrotate recarga; con un
   max_concurrent nuevo, que se ve en StatusText (en systemd 252 ``reload`` vuelve antes).
5. Con el bucle de eventos bloqueado (gancho de pruebas SIGUSR2), el watchdog lo mata y
   Restart=on-failure lo levanta de nuevo.
6. ``systemctl stop`` en mitad de una descarga lenta: sale con 0, el trabajo vuelve a incoming/
   con su directorio temporal (para reanudar); al arrancar otra vez se reanuda con Range, termina
   y no queda ningún videonote_dl_*.
7. ``journalctl -u videonote-dl`` muestra los eventos; el registro JSON es válido.
8. Al final no queda ni el contenedor ni su cgroup.

Los plazos de las esperas solo evitan colgarse: ninguna aserción depende de la velocidad.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import check_event_line
from tests.support.nspawn import (
    Container,
    ContainerError,
    nspawn_unavailable_reason,
    pattern_bytes,
)

REPO = Path(__file__).resolve().parents[1]
UNIT = "videonote-dl.service"
PREFIX = "/opt/videonote-dl"
CONFIG = "/etc/videonote-dl/config.yaml"
STATE = "/var/lib/videonote-dl"
SPOOL = f"{STATE}/spool"
DOWNLOADS = f"{STATE}/downloads"
TEMP_ROOT = "/var/cache/videonote-dl"
EVENT_LOG = "/var/log/videonote-dl/events.jsonl"
CLI = f"{PREFIX}/bin/videonote-dl"
HTTP = "http://127.0.0.1:8080"
PRODUCER = "vdl-producer"
OUTSIDER = "vdl-outsider"

_REASON = nspawn_unavailable_reason()
pytestmark = [
    pytest.mark.systemd,
    pytest.mark.skipif(_REASON is not None, reason=f"cannot boot systemd in a container: {_REASON}"),
]


def _as(user: str, script: str) -> list[str]:
    """Orden para ejecutar ``script`` como ``user`` con sus grupos (sin PAM: /etc casi vacío)."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "/bin/sh", "-ec", script]


def _show(c: Container, *props: str) -> dict[str, str]:
    return c.show(UNIT, *props)


def _status_text(c: Container) -> str:
    return _show(c, "StatusText")["StatusText"]


def _exists(c: Container, path: str) -> bool:
    return c.run("test", "-e", path, check=False).returncode == 0


def _list(c: Container, path: str) -> list[str]:
    return sorted(c.run("ls", "-A", path).stdout.split())


def _service_config(**changes: Any) -> str:
    """El config.yaml del servicio (systemd/config.yaml) con los cambios de la prueba."""
    settings = yaml.safe_load((REPO / "systemd" / "config.yaml").read_text(encoding="utf-8"))
    settings["download"]["allow_private_networks"] = True  # el servidor está en 127.0.0.1
    settings.update(shutdown_grace="2s", rescan_interval="1s")
    settings.update(changes)
    return yaml.safe_dump(settings, sort_keys=False)


def _postrotate_script() -> str:
    """Las órdenes entre ``postrotate`` y ``endscript`` del snippet de logrotate."""
    text = (REPO / "systemd" / "videonote-dl.logrotate").read_text(encoding="utf-8")
    match = re.search(r"^\s*postrotate\s*$(.*?)^\s*endscript\s*$", text, re.MULTILINE | re.DOTALL)
    assert match, "no postrotate block in systemd/videonote-dl.logrotate"
    return match.group(1).strip()


def test_service_lifecycle_under_real_systemd(wheelhouse: Path, event_vocabulary: frozenset[str]) -> None:
    container = Container(binds=[(REPO, "/opt/src"), (wheelhouse, "/opt/wheelhouse")])
    with container as c:
        assert c.boot_state == "running", f"container booted {c.boot_state!r}:\n{c.boot_log()}"
        try:
            _scenario(c, event_vocabulary)
        except (AssertionError, ContainerError):
            print(f"--- journalctl -u {UNIT}\n{c.journal(UNIT, 150)}")
            print(f"--- journalctl -u vdl-test-http\n{c.journal('vdl-test-http.service', 30)}")
            raise
    assert container.gone() == [], "the container left something behind"


def _scenario(c: Container, vocabulary: frozenset[str]) -> None:
    phase = _Phases()
    _install(c)
    phase("install")
    main_pid = _start(c)
    phase("start")
    _first_job(c)
    phase("first job")
    _rotate_and_reload(c, main_pid)
    phase("rotate and reload")
    _watchdog(c, main_pid)
    phase("watchdog")
    _stop_during_download(c)
    phase("stop during download, resume")
    _journal_and_event_log(c, vocabulary)
    phase("journal and event log")


class _Phases:
    """Anota la duración de cada fase (se ve con ``pytest -s`` o si la prueba falla)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        print(f"phase {name}: {now - self.last:.1f}s")
        self.last = now


# ---------------------------------------------------------------------------------------------


def _install(c: Container) -> None:
    # Copia escribible del checkout (pip construye dentro del árbol), sin el venv de desarrollo.
    c.sh("mkdir -p /opt/build && tar -C /opt/src --exclude=./.venv --exclude=./.git --exclude=./var "
         "--exclude=./build --exclude='*.egg-info' -cf - . | tar -C /opt/build -xf -")
    c.run("make", "-C", "/opt/build", "install", f"PREFIX={PREFIX}",
          "PIP_INSTALL_ARGS=--no-index --find-links=/opt/wheelhouse --no-cache-dir", timeout=300)
    unit = c.read_file(f"/etc/systemd/system/{UNIT}")
    assert f"ExecStart={CLI} run --config {CONFIG}\n" in unit
    assert c.read_file(CONFIG) == (REPO / "systemd" / "config.yaml").read_text(encoding="utf-8")
    assert c.run("readlink", CLI).stdout.strip() == f"{PREFIX}/lib/videonote-dl/bin/videonote-dl"
    for installed in ("/etc/sysusers.d/videonote-dl.conf", "/etc/tmpfiles.d/videonote-dl.conf",
                      "/etc/logrotate.d/videonote-dl"):
        assert _exists(c, installed), installed
    # La unidad instalada, con su ExecStart real, pasa verify sin una sola advertencia.
    verify = c.run("systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{UNIT}", check=False)
    assert (verify.returncode, verify.stderr) == (0, "")

    c.run("systemd-sysusers")
    c.run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/videonote-dl.conf")
    c.run("systemd-sysusers", "--inline", f"u {PRODUCER} - \"test producer\"",
          f"m {PRODUCER} videonote-dl-producers", f"u {OUTSIDER} - \"not a producer\"")
    modes = c.run("stat", "-c", "%n %a %U %G", SPOOL, f"{SPOOL}/incoming", f"{SPOOL}/cancel",
                  f"{SPOOL}/done", STATE).stdout.split("\n")
    assert modes[:5] == [
        f"{SPOOL} 2750 videonote-dl videonote-dl-producers",
        f"{SPOOL}/incoming 3730 videonote-dl videonote-dl-producers",
        f"{SPOOL}/cancel 3730 videonote-dl videonote-dl-producers",
        f"{SPOOL}/done 2750 videonote-dl videonote-dl-producers",
        f"{STATE} 751 videonote-dl videonote-dl",
    ]

    c.write_file(CONFIG, _service_config(max_concurrent=2))
    c.run(CLI, "check-config", "--config", CONFIG)
    # Para la prueba: watchdog corto, reinicio rápido y el gancho que bloquea el bucle.
    c.write_file(f"/etc/systemd/system/{UNIT}.d/50-test.conf",
                 "[Service]\nWatchdogSec=4s\nRestartSec=200ms\nEnvironment=VIDEONOTE_DL_TEST_HOOKS=1\n")
    c.run("systemctl", "daemon-reload")
    c.run("systemd-run", "--unit=vdl-test-http", "--service-type=notify", "--property=NotifyAccess=main",
          "/usr/bin/python3", "/opt/src/tests/support/nspawn.py", "serve", "8080")


def _start(c: Container) -> int:
    # Type=notify: start vuelve cuando el daemon envió READY=1 (o falla si muere antes).
    c.run("systemctl", "start", UNIT, timeout=60)
    props = _show(c, "ActiveState", "SubState", "MainPID", "StatusText", "WatchdogUSec", "NRestarts")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["StatusText"].startswith("running 0, queued 0, done 0, failed 0, rejected 0"), props
    assert "max_concurrent 2" in props["StatusText"], props
    assert props["WatchdogUSec"] == "4s"
    main_pid = int(props["MainPID"])
    status = c.read_file(f"/proc/{main_pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines())
    uid = c.run("id", "-u", "videonote-dl").stdout.strip()
    producers_gid = c.run("getent", "group", "videonote-dl-producers").stdout.split(":")[2]
    assert fields["Uid"].split()[0] == uid
    assert producers_gid in fields["Groups"].split(), "the daemon must be in the producers' group"
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert fields["Seccomp"].strip() == "2"
    return main_pid


def _first_job(c: Container) -> None:
    size = 300_000
    digest = hashlib.sha256(pattern_bytes(size)).hexdigest()
    job = f"url: {HTTP}/fast/{size}/clip.bin\nid: clip-1\nsha256: {digest}\n"
    # El protocolo del spool a mano, como un productor: escribir en tmp/, renombrar a incoming/.
    c.run(*_as(PRODUCER, f"umask 027; printf %s {shlex.quote(job)} > {SPOOL}/tmp/clip-1.yaml; "
                         f"mv {SPOOL}/tmp/clip-1.yaml {SPOOL}/incoming/clip-1.yaml"))
    refused = c.run(*_as(OUTSIDER, f"echo 'url: {HTTP}/fast/1' > {SPOOL}/incoming/intruder.yaml"), check=False)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
    # Un archivo que el grupo no puede leer (umask 077) se rechaza con un motivo accionable.
    c.run(*_as(PRODUCER, f"umask 077; echo 'url: {HTTP}/fast/1' > {SPOOL}/tmp/private-1.yaml; "
                         f"mv {SPOOL}/tmp/private-1.yaml {SPOOL}/incoming/private-1.yaml"))

    c.wait_for(lambda: _exists(c, f"{SPOOL}/done/clip-1.json"), "done/clip-1.json")
    record = json.loads(c.read_file(f"{SPOOL}/done/clip-1.json"))
    assert record["outcome"] == "succeeded" and record["sha256"] == digest, record
    published = record["path"]
    assert published == f"{DOWNLOADS}/clip.bin"
    # El productor (por el grupo) puede leer el resultado; el extraño ni siquiera llega.
    seen = c.run(*_as(PRODUCER, f"sha256sum {published}")).stdout.split()[0]
    assert seen == digest
    assert c.run("stat", "-c", "%U %G %a", published).stdout.split() == ["videonote-dl", "videonote-dl-producers",
                                                                        "640"]
    assert c.run(*_as(OUTSIDER, f"cat {published}"), check=False).returncode != 0
    c.wait_for(lambda: _exists(c, f"{SPOOL}/rejected/private-1.yaml.reason"), "rejected/private-1.yaml.reason")
    reason = c.run(*_as(PRODUCER, f"cat {SPOOL}/rejected/private-1.yaml.reason")).stdout
    assert "readable by the daemon" in reason, reason
    c.wait_for(lambda: _status_text(c).startswith("running 0, queued 0, done 1, failed 0, rejected 1"),
               "StatusText with done 1 and rejected 1")
    assert _list(c, f"{SPOOL}/incoming") == []


def _rotate_and_reload(c: Container, main_pid: int) -> None:
    # Lo que hace logrotate: mover el archivo y ejecutar postrotate (que recarga: SIGHUP).
    c.write_file(CONFIG, _service_config(max_concurrent=5))
    c.run("mv", EVENT_LOG, f"{EVENT_LOG}.1")
    c.sh(_postrotate_script())
    c.wait_for(lambda: "max_concurrent 5" in _status_text(c), "StatusText with max_concurrent 5")
    assert int(_show(c, "MainPID")["MainPID"]) == main_pid, "a reload must not restart the daemon"
    c.wait_for(lambda: _exists(c, EVENT_LOG), "a new event log after the reload")
    reloaded = [json.loads(line) for line in c.read_file(EVENT_LOG).splitlines()]
    assert any(e["event"] == "config.reloaded" and "max_concurrent" in e["changed"] for e in reloaded), reloaded
    # Un config roto se rechaza y el viejo sigue en vigor.
    c.write_file(CONFIG, _service_config(max_concurrent="many"))
    c.run("systemctl", "reload", UNIT)
    c.wait_for(lambda: "config.reload_failed" in c.read_file(EVENT_LOG), "config.reload_failed")
    assert "max_concurrent 5" in _status_text(c)
    assert _show(c, "ActiveState")["ActiveState"] == "active"
    c.write_file(CONFIG, _service_config(max_concurrent=5))


def _watchdog(c: Container, main_pid: int) -> None:
    # Hasta aquí los WATCHDOG=1 llegaron a tiempo: ningún reinicio, el mismo proceso.
    assert _show(c, "NRestarts", "MainPID") == {"NRestarts": "0", "MainPID": str(main_pid)}
    # El gancho de pruebas bloquea el bucle de eventos: no más WATCHDOG=1, y systemd lo mata.
    c.run("systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", UNIT)
    c.wait_for(lambda: int(_show(c, "NRestarts")["NRestarts"]) >= 1, "the watchdog kill and restart")
    journal = c.journal(UNIT, 100)
    assert "Watchdog timeout" in journal, journal
    assert "Failed with result 'watchdog'" in journal, journal
    # Restart=on-failure lo levanta de nuevo, con otro proceso.
    c.wait_for(lambda: _show(c, "ActiveState", "SubState") == {"ActiveState": "active", "SubState": "running"},
               "the service back after the watchdog restart")
    assert int(_show(c, "MainPID")["MainPID"]) not in (0, main_pid)


def _stop_during_download(c: Container) -> None:
    size = 4_000_000  # /slow: 1,5 MiB y luego ~80 s más; no termina antes del stop
    digest = hashlib.sha256(pattern_bytes(size)).hexdigest()
    # Esta vez con `videonote-dl submit`, como el productor.
    c.run(*_as(PRODUCER, f"{CLI} submit --config {CONFIG} --id slow-1 --sha256 {digest} "
                         f"{HTTP}/slow/{size}/slow.bin"))
    temp_dir = f"{TEMP_ROOT}/videonote_dl_slow-1"

    def partial_bytes() -> int:
        result = c.run("du", "-sb", temp_dir, check=False)
        return int(result.stdout.split()[0]) if result.returncode == 0 else 0

    c.wait_for(lambda: partial_bytes() >= 1_000_000, "the slow download to be under way")
    c.wait_for(lambda: _status_text(c).startswith("running 1"), "StatusText with running 1")

    c.run("systemctl", "stop", UNIT, timeout=90)
    props = _show(c, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    # (submit usa un nombre imposible de adivinar, ``slow-1.<128 bits>.yaml``, y la vuelta lo conserva.)
    requeued = _list(c, f"{SPOOL}/incoming")
    assert len(requeued) == 1 and re.fullmatch(r"slow-1\.[0-9a-f]{32}\.yaml", requeued[0]), (
        f"the interrupted job must be requeued: {requeued}")
    assert _list(c, f"{SPOOL}/active") == []
    assert not _exists(c, f"{SPOOL}/done/slow-1.json") and not _exists(c, f"{SPOOL}/failed/slow-1.json")
    # El directorio temporal se conserva (sin cerrojo) para reanudar; a su lado sólo la tabla de
    # extractores guardada (el servicio aislado puede escribir en su CacheDirectory=).
    assert _list(c, TEMP_ROOT) == [".ytdlp-extractor-table.json", "videonote_dl_slow-1"]
    assert partial_bytes() >= 1_000_000

    c.run("systemctl", "start", UNIT, timeout=60)
    c.wait_for(lambda: _exists(c, f"{SPOOL}/done/slow-1.json"), "done/slow-1.json after the restart", 60)
    record = json.loads(c.read_file(f"{SPOOL}/done/slow-1.json"))
    assert record["sha256"] == digest, record
    server_log = c.journal("vdl-test-http.service", 50)
    resumed_from = [int(m) for m in re.findall(r"GET /slow/\d+/slow\.bin range=bytes=\d+- start=(\d+)", server_log)]
    assert resumed_from and resumed_from[-1] > 0, f"the download did not resume with Range:\n{server_log}"
    c.wait_for(lambda: _list(c, TEMP_ROOT) == [".ytdlp-extractor-table.json"],
               "no videonote_dl_* left in the temp root")
    c.run("systemctl", "stop", UNIT, timeout=90)
    assert _show(c, "Result")["Result"] == "success"


def _journal_and_event_log(c: Container, vocabulary: frozenset[str]) -> None:
    journal = c.journal(UNIT, 1000)
    for needle in ("daemon.ready", "job.received", "clip-1", "config.reloaded", "job.requeued", "slow-1",
                   "daemon.stopped"):
        assert needle in journal, f"{needle!r} not in journalctl -u {UNIT}"
    lines = c.read_file(f"{EVENT_LOG}.1").splitlines() + c.read_file(EVENT_LOG).splitlines()
    events = [check_event_line(line, vocabulary) for line in lines]
    names = [e["event"] for e in events]
    assert names.count("daemon.stopped") == 2  # la parada durante la descarga y la final
    requeued = [e for e in events if e["event"] == "job.requeued"]
    assert [e["correlation_id"] for e in requeued] == ["slow-1"]
    # Cada arranque que enruta un trabajo ``auto`` dice de dónde salió la tabla: tras el primero,
    # de la copia guardada en la CacheDirectory=, sin el proceso hijo.
    tables = [e["source"] for e in events if e["event"] == "daemon.extractor_table"]
    assert tables and tables[0] == "child" and set(tables[1:]) == {"cache"}, tables
