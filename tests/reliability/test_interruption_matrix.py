"""La matriz de interrupciones: cada interrupción, entregada en cada paso del camino de un trabajo.

Para cada paso S (``daemon.faultpoints.PAUSE_POINTS`` más ``downloading``, que retiene el servidor
a mitad del cuerpo, y ``downloading_spliced``, lo mismo con un cuerpo grande que va por
``splice(2)``: el hilo que mueve socket -> tubería -> archivo y el del sha256 están vivos cuando
llega la interrupción), cada interrupción I y cada disposición de discos (salida en el mismo sistema
de archivos que los temporales, o en otro; y ``inline``: la misma que la primera con ``file_io:
inline``, el final del trabajo en el bucle, en cada paso que no lo pausa a él: una pausa armada en
``publishing``, ``published`` o ``recorded`` devuelve ese final al hilo), la prueba:

1. arranca el daemon real con el paso S armado (``VIDEONOTE_DL_PAUSE_DIR``) y deja un trabajo;
2. espera a que el trabajo llegue a S (``S.reached``), sin dormir a ciegas;
3. entrega I (un cancel/ a mano, ``videonote-dl cancel``, SIGTERM con gracia 0, dos SIGTERM,
   SIGTERM con gracia, SIGKILL y rearranque, SIGHUP, un segundo daemon en el mismo spool, la salida
   llena, el registro de eventos sin sitio, y el host perdido: SIGKILL, su disco local de temporales
   borrado y otro daemon, con sus propios temporales, que retoma el trabajo; éste sólo con la salida
   en otro sistema de archivos, como en una flota: los temporales son locales, la salida compartida);
4. lo deja seguir (``S.go``), rearranca si hizo falta, para el daemon y pasa el recolector;
5. comprueba con ``verify_spool`` y con las peticiones del servidor que: hay exactamente un
   registro terminal; un archivo está en la salida si y sólo si su registro dice succeeded, y es
   idéntico byte a byte; no hay nada oculto ni parcial en la salida ni temporales; nada se
   descargó otra vez tras un éxito; los eventos forman una secuencia válida; y el desenlace es
   el diseñado (antes del punto de no retorno cancelar cancela; después, termina succeeded).

Necesita root (monta tmpfs pequeños); sin él se salta con el motivo.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.config import load_settings
from daemon.downloaders.http_splice import SPLICE_MIN_BYTES
from daemon.faultpoints import PAUSE_POINTS
from daemon.reaper import reap_temp_root
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.support.mounts import fill_until_enospc, mounted_tmpfs

STEPS = (*PAUSE_POINTS[:3], "downloading", "downloading_spliced", *PAUSE_POINTS[3:])
HELD_STEPS = ("downloading", "downloading_spliced")  # retenidos por el servidor, no por una pausa
INTERRUPTIONS = ("cancel_file", "cli_cancel", "sigterm_grace0", "two_sigterms", "sigterm_grace", "sigkill_restart",
                 "sighup", "second_daemon", "output_full", "event_log_full", "host_lost")
LAYOUTS = ("same_fs", "cross_fs", "inline")
# En ``inline`` sobran los pasos que sólo se pausan en el hilo, y el cuerpo grande (nunca en el bucle).
NOT_INLINE = ("downloading_spliced", "publishing", "published", "recorded")
CASES = [pytest.param(step, interruption, layout, id=f"{step}-{interruption}-{layout}")
         for step in STEPS for interruption in INTERRUPTIONS for layout in LAYOUTS
         if not (interruption == "host_lost" and layout != "cross_fs")
         and not (layout == "inline" and step in NOT_INLINE)]
POINT_OF_NO_RETURN = STEPS.index("publishing")
JOB_ID = "m1"
SIZE = 192 * 1024
SPLICED_SIZE = SPLICE_MIN_BYTES + 1024 * 1024  # lo que queda tras HOLD_AFTER sigue por encima del umbral
HOLD_AFTER = 64 * 1024


class _Gate(threading.Event):
    """El evento con el que el servidor retiene el cuerpo; ``reached`` dice que ya está retenido."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.reached.set()
        return super().wait(timeout)


class _Case:
    """Un caso de la matriz: su daemon, su servidor y cómo pausar, interrumpir y soltar."""

    def __init__(self, base: Path, server: TestServer, step: str, interruption: str, temp_dir: Path,
                 output_dir: Path, event_log: Path, file_io: str = "auto") -> None:
        self.base, self.step, self.interruption = base, step, interruption
        self.data = os.urandom(SPLICED_SIZE if step == "downloading_spliced" else SIZE)
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.gate = _Gate()
        self.server = server
        hold = self.gate if step in HELD_STEPS else None
        chunk = 256 * 1024 if step == "downloading_spliced" else 16 * 1024
        self.url = server.add("/m.bin", Behavior(data=self.data, chunk=chunk, hold=hold, hold_after=HOLD_AFTER,
                                                 hold_times=1, hold_timeout=60))
        self.pause_dir = base / "pause"
        self.pause_dir.mkdir()
        grace = {"sigterm_grace0": "0s", "sigterm_grace": "30s", "two_sigterms": "30s"}.get(interruption, "30s")
        self.overrides: dict[str, Any] = {
            "temp_dir": str(temp_dir), "output_dir": str(output_dir), "event_log": str(event_log),
            "max_concurrent": 1, "shutdown_grace": grace, "rescan_interval": "300ms", "ytdlp": {"enabled": False},
            "file_io": file_io,
            "download": {"allow_private_networks": True, "backoff": "50ms", "retries": 6, "timeout": "30s"},
        }
        self.daemon = DaemonProcess(base / "d", **self.overrides)
        self.daemon.event_log = event_log
        self.peer: DaemonProcess | None = None

    # --- pasos ----------------------------------------------------------------------------
    def start_paused(self) -> None:
        if self.step not in HELD_STEPS:
            (self.pause_dir / self.step).touch()
        self.daemon.start(env={"VIDEONOTE_DL_TEST_HOOKS": "1", "VIDEONOTE_DL_PAUSE_DIR": str(self.pause_dir)})
        idle_pipes = _own_pipes(self.daemon)  # las del daemon en reposo (la de despertar del observador)
        self.daemon.drop_job({"url": self.url, "id": JOB_ID, "sha256": self.sha, "filename": "m.bin"})
        if self.step in HELD_STEPS:
            assert self.gate.reached.wait(30), "the download never reached the server's hold"
            if self.step == "downloading_spliced":
                wait_until(lambda: _own_pipes(self.daemon) > idle_pipes, 30, what="the body to go through splice(2)")
        else:
            wait_until(lambda: (self.pause_dir / f"{self.step}.reached").exists(), 30,
                       what=f"the job to reach step {self.step}")

    def release(self) -> None:
        if self.step in HELD_STEPS:
            self.gate.set()
        else:
            (self.pause_dir / f"{self.step}.go").touch()

    def alive(self) -> bool:
        return self.daemon.proc is not None and self.daemon.proc.poll() is None

    def restart(self) -> None:
        """Rearranca sin pausas (tras una parada o un kill) para que termine lo devuelto a la cola."""
        if self.alive() or self.interruption == "host_lost":  # el host perdido no vuelve: lo termina otro
            return
        with contextlib.suppress(Exception):
            self.daemon._stderr.close()
        self.daemon.start()


def _own_pipes(daemon: DaemonProcess) -> int:
    """Tuberías con los dos extremos en el proceso del daemon. En reposo, la con que se despierta
    al hilo de inotify; durante una descarga, además la de ``splice(2)`` (y ninguna otra)."""
    assert daemon.proc is not None
    fds = Path(f"/proc/{daemon.proc.pid}/fd")
    ends: dict[str, int] = {}
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("pipe:"):
                ends[target] = ends.get(target, 0) + 1
    return sum(1 for count in ends.values() if count >= 2)


def _counts_lines(log: Path) -> list[dict[str, Any]]:
    """Cada línea del registro es JSON entero (puede faltar la cola, nunca hay una rota)."""
    raw = log.read_bytes() if log.exists() else b""
    assert raw == b"" or raw.endswith(b"\n"), f"torn last line: {raw[-80:]!r}"
    return [orjson.loads(line) for line in raw.splitlines()]


def _run_cli(case: _Case, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "daemon", *args, "--config", str(case.daemon.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _deliver(case: _Case, fs_to_fill: Path | None) -> subprocess.Popen[str] | None:
    """Entrega la interrupción con el trabajo parado en su paso; devuelve el ``cancel`` en curso, si hay."""
    d, kind = case.daemon, case.interruption
    if kind == "cancel_file":
        (d.spool / "cancel" / JOB_ID).touch()
    elif kind == "cli_cancel":
        requested = d.count_events("job.cancel_requested")
        cli = _run_cli(case, "cancel", JOB_ID)
        # Entregado: el marcador está (el daemon aún no lo vio) o el daemon ya actuó (y lo retiró).
        wait_until(lambda: (d.spool / "cancel" / JOB_ID).exists() or d.count_events("job.cancel_requested") > requested
                   or cli.poll() is not None, 30, what="the cancel marker")
        return cli
    elif kind == "sigterm_grace0" or kind == "sigterm_grace":
        d.signal(signal.SIGTERM)
    elif kind == "two_sigterms":
        d.signal(signal.SIGTERM)
        wait_until(lambda: d.count_events("daemon.stopping") > 0, 30, what="daemon.stopping")
        d.signal(signal.SIGTERM)
    elif kind == "sigkill_restart":
        d.kill9()
    elif kind == "sighup":
        reloaded = d.count_events("config.reloaded")
        d.signal(signal.SIGHUP)
        wait_until(lambda: d.count_events("config.reloaded") > reloaded, 30, what="config.reloaded")
    elif kind == "second_daemon":
        # Otro daemon en el mismo spool, temporales y salida (con su propio registro y estado).
        overrides = {**case.overrides, "spool_dir": str(d.spool), "event_log": str(case.base / "peer" / "events.jsonl"),
                     "status_file": str(case.base / "peer" / "status.json")}
        case.peer = DaemonProcess(case.base / "peer", **overrides).start()
    elif kind == "host_lost":
        # El host muere para siempre con su disco local (sus temporales); otro daemon, con los suyos,
        # comparte el spool y la salida: recupera el reclamo del muerto y termina el trabajo.
        d.kill9()
        shutil.rmtree(case.overrides["temp_dir"], ignore_errors=True)
        overrides = {**case.overrides, "spool_dir": str(d.spool), "temp_dir": str(case.base / "peer" / "tmp"),
                     "event_log": str(case.base / "peer" / "events.jsonl"),
                     "status_file": str(case.base / "peer" / "status.json")}
        case.peer = DaemonProcess(case.base / "peer", **overrides).start()
    elif kind in ("output_full", "event_log_full"):
        assert fs_to_fill is not None
        fill_until_enospc(fs_to_fill / "filler")
    return None


def _free(fs_to_fill: Path | None) -> None:
    if fs_to_fill is not None:
        (fs_to_fill / "filler").unlink(missing_ok=True)


def _expected_outcome(step: str, interruption: str) -> str | None:
    """El desenlace diseñado (None: cualquiera de los dos, según cuándo vuelve el sitio)."""
    if interruption in ("cancel_file", "cli_cancel"):
        return "cancelled" if STEPS.index(step) < POINT_OF_NO_RETURN else "succeeded"
    if interruption == "output_full":
        return None
    return "succeeded"


@contextlib.contextmanager
def _layout(tmp_path: Path, layout: str, interruption: str,
            size_mib: int) -> Iterator[tuple[Path, Path, Path, Path | None]]:
    """(temp_dir, output_dir, event_log, sistema a llenar) según la disposición y la interrupción."""
    with contextlib.ExitStack() as stack:
        # Cabe el cuerpo grande tres veces: la parte, la copia de staging y la publicada.
        out_fs = stack.enter_context(mounted_tmpfs(tmp_path / "out-fs", f"size={size_mib}m,mode=0755"))
        temp_dir = tmp_path / "tmp" if layout == "cross_fs" else out_fs / "tmp"
        event_log = tmp_path / "log" / "events.jsonl"
        fill: Path | None = None
        if interruption == "output_full":
            fill = out_fs
        elif interruption == "event_log_full":
            log_fs = stack.enter_context(mounted_tmpfs(tmp_path / "log-fs", "size=64k,mode=0700"))
            event_log, fill = log_fs / "events.jsonl", log_fs
        yield temp_dir, out_fs / "out", event_log, fill


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("step", "interruption", "layout"), CASES)
def test_interruption_at_each_step(tmp_path: Path, test_server: TestServer, step: str, interruption: str,
                                   layout: str) -> None:
    size_mib = 32 if step == "downloading_spliced" else 4
    with _layout(tmp_path, layout, interruption, size_mib) as (temp_dir, output_dir, event_log, fill):
        case = _Case(tmp_path, test_server, step, interruption, temp_dir, output_dir, event_log,
                     file_io="inline" if layout == "inline" else "auto")
        d = case.daemon
        try:
            case.start_paused()
            cli = _deliver(case, fill)
            if interruption in ("cancel_file", "cli_cancel") and STEPS.index(step) >= STEPS.index("temp_dir_created"):
                # El trabajo está en el gestor: soltar sólo cuando el daemon ya recibió la cancelación.
                wait_until(lambda: d.count_events("job.cancel_requested") > 0
                           or (cli is not None and cli.poll() is not None), 30, what="job.cancel_requested")
            if interruption in ("cancel_file", "cli_cancel") and STEPS.index(step) >= POINT_OF_NO_RETURN:
                # Tarde: el daemon lo dice (o el cancel ya vio el registro y no dejó marcador).
                wait_until(lambda: d.count_events("job.cancel_too_late") > 0
                           or (cli is not None and cli.poll() is not None), 30, what="job.cancel_too_late")
            case.release()
            if interruption == "output_full":
                # El sitio vuelve cuando el daemon ya tropezó (o ya terminó sin necesitarlo).
                wait_until(lambda: d.count_events("job.publish_retrying") > 0 or d.record(JOB_ID) is not None
                           or not case.alive(), 30, what="the publish to hit the full disk")
                _free(fill)
            if cli is not None:
                out, _ = cli.communicate(timeout=60)
                want = "too late" if STEPS.index(step) >= POINT_OF_NO_RETURN else "cancel"
                assert want in out, out
                assert (cli.returncode != 0) == (want == "too late"), (cli.returncode, out)
            if interruption in ("sigterm_grace0", "two_sigterms", "sigterm_grace"):
                assert d.proc is not None
                assert d.proc.wait(60) == 0, d.stderr_text()
            case.restart()
            finisher = case.peer if interruption == "host_lost" and case.peer is not None else d
            folder, record = finisher.wait_record(JOB_ID, 60)
            if interruption != "host_lost":
                assert d.stop() == 0, d.stderr_text()
            if case.peer is not None:
                assert case.peer.stop() == 0, case.peer.stderr_text()
        finally:
            case.gate.set()
            _free(fill)
            for proc in (d, case.peer):
                if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                    proc.kill9()
        _check_invariants(case, folder, record)


def _check_invariants(case: _Case, folder: str, record: dict[str, Any]) -> None:
    d = case.daemon
    daemons = [d] if case.peer is None else [d, case.peer]
    settings = load_settings(d.config_path)
    for daemon in daemons:  # el del par: sus propios temporales
        reap = reap_temp_root(load_settings(daemon.config_path).temp_dir, max_age=0)
        assert reap.errors == 0
        assert not daemon.temp_dirs(), f"temp dirs left after a reaper pass: {daemon.temp_dirs()}"
    if case.overrides["file_io"] == "inline":
        modes = [e["file_io"] for daemon in daemons for e in daemon.events(name="daemon.file_io")]
        assert modes and set(modes) == {"inline"}, modes
    want = _expected_outcome(case.step, case.interruption)
    assert want is None or record["outcome"] == want, (want, record)
    succeeded = record["outcome"] == "succeeded"
    assert (folder == "done") == succeeded, (folder, record)
    report = verify_spool(settings, expected={JOB_ID: case.sha if succeeded else None}, daemon_stopped=True,
                          check_events=case.interruption != "event_log_full",
                          event_logs=[daemon.event_log for daemon in daemons])
    assert report.ok, "\n".join(report.problems)
    published = sorted(str(p.relative_to(d.output)) for p in d.output.rglob("*") if p.is_file())
    if succeeded:
        assert published == ["m.bin"], published
        assert (d.output / "m.bin").read_bytes() == case.data
    else:
        assert published == [], published
    # Nada se descarga otra vez tras un éxito: con el enlace hecho, una sola petición en toda la vida
    # del trabajo; antes, a lo sumo una más (la reanudación tras una parada o un kill).
    requests = len(case.server.requests_for("/m.bin"))
    limit = 1 if case.step in ("published", "recorded", "cleaning") else 2
    assert requests <= limit, f"{requests} requests for one job (at most {limit})"
    events = [event for daemon in daemons for event in _counts_lines(daemon.event_log)]
    if case.interruption != "event_log_full":
        outcomes = [e for e in events if e["event"] == "job.recorded" and e.get("correlation_id") == JOB_ID]
        assert [e["outcome"] for e in outcomes] == [record["outcome"]], outcomes


@pytest.mark.timeout(120)
def test_record_that_cannot_be_written_unpublishes_and_retries(tmp_path: Path, test_server: TestServer) -> None:
    """El spool se llena justo después de publicar: sin registro no hay éxito. El nombre público se
    retira (``job.unpublished``), la publicación se reintenta y, con sitio, termina una sola vez."""
    with mounted_tmpfs(tmp_path / "spool-fs", "size=2m,mode=0755") as spool_fs:
        case = _Case(tmp_path, test_server, "published", "spool_full", tmp_path / "tmp", tmp_path / "out",
                     tmp_path / "log" / "events.jsonl")
        case.daemon = DaemonProcess(tmp_path / "d", **case.overrides, spool_dir=str(spool_fs / "spool"))
        case.daemon.event_log = tmp_path / "log" / "events.jsonl"
        d = case.daemon
        try:
            case.start_paused()
            fill_until_enospc(spool_fs / "filler")
            # El reintento se para antes de volver a publicar: mirar la salida en ese momento es
            # determinista (mirarla "justo después" de job.unpublished podía caer dentro del
            # siguiente intento, entre su link() y su retirada, y ver el archivo un instante).
            (case.pause_dir / "publishing").touch()
            case.release()
            wait_until(lambda: (case.pause_dir / "publishing.reached").exists(), 30,
                       what="the publish retry to pause before its link()")
            assert d.count_events("job.unpublished") == 1 and d.count_events("job.publish_retrying") == 1
            assert d.record(JOB_ID) is None
            assert not (d.output / "m.bin").exists(), "published without a record"
            (spool_fs / "filler").unlink()
            (case.pause_dir / "publishing.go").touch()
            folder, record = d.wait_record(JOB_ID, 60)
            assert d.stop() == 0, d.stderr_text()
        finally:
            (spool_fs / "filler").unlink(missing_ok=True)
            if d.proc is not None and d.proc.poll() is None:
                d.kill9()
        case.interruption = "sighup"  # el desenlace diseñado es el de una interrupción inocua: succeeded
        _check_invariants(case, folder, record)
        assert d.count_events("job.publish_retrying") >= 1


def test_duplicate_of_a_finished_id_is_rejected_and_verify_accepts_it(tmp_path: Path,
                                                                      test_server: TestServer) -> None:
    data = os.urandom(30_000)
    url = test_server.add("/dup.bin", Behavior(data=data))
    daemon = DaemonProcess(tmp_path, ytdlp={"enabled": False})
    with daemon:
        daemon.drop_job({"url": url, "id": "dup1"})
        assert daemon.wait_record("dup1")[0] == "done"
        daemon.drop_job({"url": url, "id": "dup1"}, name="dup1-again.yaml")
        wait_until(lambda: daemon.rejected() == ["dup1-again.yaml"], 30, what="the duplicate to be rejected")
    report = verify_spool(load_settings(daemon.config_path), expected={"dup1": hashlib.sha256(data).hexdigest()})
    assert report.ok, "\n".join(report.problems)
    assert len(test_server.requests_for("/dup.bin")) == 1
