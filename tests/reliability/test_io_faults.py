"""Fallos de E/S contra el daemon real: disco lleno, EIO, EFBIG y el registro de eventos sin sitio.

- La raíz temporal en un tmpfs pequeño montado por la prueba: ENOSPC de verdad del núcleo.
- Fallos en la N-ésima escritura con ``fiu-run`` (libfiu, paquete Debian ``fiu-utils``): el daemon
  corre bajo la biblioteca de precarga POSIX y la prueba activa un fallo de una sola vez con
  ``fiu-ctrl`` cuando la descarga está retenida por el servidor a mitad del cuerpo (N MiB ya en
  disco), así que la siguiente escritura del proceso es la del siguiente lote del archivo.
- ``RLIMIT_FSIZE`` puesto con prlimit al proceso del daemon: EFBIG del núcleo.
- El registro de eventos en un tmpfs diminuto que se llena: el daemon sigue descargando y lo
  dice por stderr; al liberar sitio, el registro sigue siendo JSON línea a línea.

En cada caso: el trabajo acaba en failed/ con un motivo, no queda ningún archivo parcial con un
nombre final (ni en la salida ni en la raíz temporal), el daemon sigue atendiendo trabajos y
``verify_spool`` no encuentra problemas.

Estas pruebas necesitan root (mount) o fiu-run; si no están disponibles se saltan con el motivo.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.config import load_settings
from daemon.downloaders.http_downloader import PART_NAME
from daemon.downloaders.http_downloader import WRITE_BATCH as HTTP_WRITE_BATCH
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.support.mounts import fill_until_enospc as _fill
from tests.support.mounts import mounted_tmpfs

MIB = 1024 * 1024
BATCH = HTTP_WRITE_BATCH  # la descarga escribe por lotes de este tamaño
FIU_PRELOAD = Path("/usr/lib/fiu/fiu_posix_preload.so")


# --- ayudas: montajes, fiu y comprobaciones -------------------------------------------------
def _require_fiu() -> None:
    if shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None or not FIU_PRELOAD.exists():
        pytest.skip("fiu-run/fiu-ctrl and the libfiu POSIX preload library are not installed "
                    "(Debian package fiu-utils)")


def _parse_lines(path: Path) -> list[dict[str, Any]]:
    """Cada línea del archivo como JSON; falla diciendo qué línea no lo es."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), f"{path} ends in a partial line: {raw[-80:]!r}"
    events = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise AssertionError(f"{path}:{number} is not JSON: {line[:120]!r}") from None
    return events


def _output_files(daemon: DaemonProcess) -> list[str]:
    out = daemon.output
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()) if out.exists() else []


def _assert_storage_failure(daemon: DaemonProcess, job_id: str, code: int) -> dict[str, Any]:
    """El trabajo acabó en failed/ por almacenamiento con ``code``, sin temporales ni parciales."""
    folder, record = daemon.wait_record(job_id, timeout=60)
    assert folder == "failed", record
    assert record["outcome"] == "failed", record
    error = record["error"]
    assert error["kind"] == "storage", error
    assert error.get("errno") == code, error
    assert os.strerror(code) in error["message"], error
    assert error["transient"] is False, error
    assert f"videonote_dl_{job_id}" not in daemon.temp_dirs()
    failed_events = daemon.events(job_id, "job.failed")
    assert len(failed_events) == 1 and failed_events[0]["error"]["errno"] == code, failed_events
    return record


def _assert_done(daemon: DaemonProcess, job_id: str, data: bytes) -> dict[str, Any]:
    folder, record = daemon.wait_record(job_id, timeout=60)
    assert folder == "done", record
    published = Path(record["path"])
    assert published.read_bytes() == data
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    return record


def _final_verify(daemon: DaemonProcess, expected: dict[str, str | None], check_events: bool = True) -> None:
    assert daemon.stop() == 0, daemon.stderr_text()
    assert daemon.temp_dirs() == [], daemon.temp_dirs()
    report = verify_spool(load_settings(daemon.config_path), expected=expected, daemon_stopped=True,
                          check_events=check_events)
    assert report.ok, "\n".join(report.problems[:20])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- disco lleno en la raíz temporal ------------------------------------------------------------
@pytest.mark.timeout(120)
def test_full_temp_disk_fails_the_job_and_the_daemon_keeps_serving(tmp_path: Path, test_server: TestServer) -> None:
    big, small = os.urandom(6 * MIB), os.urandom(300 * 1024)
    big_url = test_server.add("/big.bin", Behavior(data=big))
    small_url = test_server.add("/small.bin", Behavior(data=small))
    with mounted_tmpfs(tmp_path / "small-fs", "size=2m,mode=0700") as fs:
        daemon = DaemonProcess(tmp_path / "d", temp_dir=str(fs), ytdlp={"enabled": False})
        daemon.temp_root = fs
        with daemon:
            daemon.drop_job({"url": big_url, "id": "big"})
            _assert_storage_failure(daemon, "big", errno.ENOSPC)
            assert _output_files(daemon) == []
            assert list(fs.iterdir()) == [], "the failed job left files on the small disk"
            # El disco quedó libre al borrar el temporal: el siguiente trabajo sale bien.
            daemon.drop_job({"url": small_url, "id": "small"})
            _assert_done(daemon, "small", small)
            assert _output_files(daemon) == ["small.bin"]
            assert len(test_server.requests_for("/big.bin")) == 1, "a storage error must not be retried"
        _final_verify(daemon, {"big": None, "small": _sha(small)})


@pytest.mark.timeout(120)
def test_concurrent_jobs_on_a_full_temp_disk(tmp_path: Path, test_server: TestServer) -> None:
    # Tres descargas retenidas a mitad del cuerpo ocupan a la vez más de lo que cabe: alguna falla
    # con ENOSPC; cada una acaba con un único desenlace correcto y nada parcial queda a la vista.
    hold = threading.Event()
    datas = {f"c{n}": os.urandom(1536 * 1024) for n in range(3)}
    for job_id, data in datas.items():
        test_server.add(f"/{job_id}.bin", Behavior(data=data, hold=hold, hold_after=1100 * 1024, hold_timeout=60))
    tail = os.urandom(200 * 1024)
    tail_url = test_server.add("/tail.bin", Behavior(data=tail))
    with mounted_tmpfs(tmp_path / "small-fs", "size=2m,mode=0700") as fs:
        daemon = DaemonProcess(tmp_path / "d", temp_dir=str(fs), max_concurrent=3, ytdlp={"enabled": False})
        daemon.temp_root = fs
        try:
            with daemon:
                for job_id in datas:
                    daemon.drop_job({"url": test_server.url(f"/{job_id}.bin"), "id": job_id})
                # Con 3 × 1 MiB escritos (o intentados) en 2 MiB, el disco se llena mientras el servidor
                # los retiene (o alguno ya falló al empezar).
                wait_until(lambda: os.statvfs(fs).f_bavail == 0 or any(daemon.record(j) for j in datas), 60,
                           what="the small disk to fill up")
                hold.set()
                outcomes = {job_id: daemon.wait_record(job_id) for job_id in datas}
                failed = [j for j, (folder, _r) in outcomes.items() if folder == "failed"]
                assert failed, outcomes
                for job_id, (folder, record) in outcomes.items():
                    if folder == "failed":
                        assert record["error"]["kind"] == "storage", record
                        assert record["error"]["errno"] == errno.ENOSPC, record
                    else:
                        assert Path(record["path"]).read_bytes() == datas[job_id]
                wait_until(lambda: daemon.temp_dirs() == [], 30, what="temp dirs removed")
                daemon.drop_job({"url": tail_url, "id": "tail"})
                _assert_done(daemon, "tail", tail)
                published = {f"{j}.bin" for j, (folder, _r) in outcomes.items() if folder == "done"}
                assert set(_output_files(daemon)) == published | {"tail.bin"}
        finally:
            hold.set()
        expected: dict[str, str | None] = {j: (_sha(datas[j]) if folder == "done" else None)
                                           for j, (folder, _r) in outcomes.items()}
        _final_verify(daemon, {**expected, "tail": _sha(tail)})


@pytest.mark.timeout(120)
def test_temp_disk_already_full_when_the_job_starts(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(64 * 1024)
    url = test_server.add("/f.bin", Behavior(data=data))
    with mounted_tmpfs(tmp_path / "small-fs", "size=1m,mode=0700") as fs:
        daemon = DaemonProcess(tmp_path / "d", temp_dir=str(fs), ytdlp={"enabled": False})
        daemon.temp_root = fs
        with daemon:
            filler_dir = fs / "filler"  # fuera del patrón videonote_*: el recolector no lo toca
            filler_dir.mkdir()
            assert _fill(filler_dir / "zeros") > 0
            daemon.drop_job({"url": url, "id": "full1"})
            _assert_storage_failure(daemon, "full1", errno.ENOSPC)
            assert sorted(p.name for p in fs.iterdir()) == ["filler"]
            shutil.rmtree(filler_dir)
            daemon.drop_job({"url": url, "id": "full2"})
            _assert_done(daemon, "full2", data)
        _final_verify(daemon, {"full1": None, "full2": _sha(data)})


@pytest.mark.timeout(120)
def test_temp_disk_out_of_inodes(tmp_path: Path, test_server: TestServer) -> None:
    # Sin inodos libres no se puede ni crear videonote_dl_<id>: el trabajo falla con un motivo
    # (almacenamiento) y una secuencia de eventos válida, y el daemon sigue.
    data = os.urandom(64 * 1024)
    url = test_server.add("/i.bin", Behavior(data=data))
    with mounted_tmpfs(tmp_path / "inode-fs", "size=4m,nr_inodes=8,mode=0700") as fs:
        daemon = DaemonProcess(tmp_path / "d", temp_dir=str(fs), ytdlp={"enabled": False})
        daemon.temp_root = fs
        with daemon:
            fillers = fs / "filler"
            fillers.mkdir()
            with contextlib.suppress(OSError):
                for n in range(100):
                    (fillers / str(n)).touch()
            with pytest.raises(OSError):
                (fs / "probe").mkdir()  # de verdad no quedan inodos
            daemon.drop_job({"url": url, "id": "noinode"})
            folder, record = daemon.wait_record("noinode")
            assert folder == "failed", record
            assert record["error"]["kind"] == "storage", record
            assert record["error"].get("errno") == errno.ENOSPC, record
            shutil.rmtree(fillers)
            daemon.drop_job({"url": url, "id": "inode-ok"})
            _assert_done(daemon, "inode-ok", data)
        _final_verify(daemon, {"noinode": None, "inode-ok": _sha(data)})


# --- fallos en la N-ésima escritura (libfiu) --------------------------------------------------------
class FiuDaemon(DaemonProcess):
    """El daemon lanzado con ``fiu-run -x``: fallos POSIX activables desde fuera con ``fiu-ctrl``."""

    def __init__(self, base: Path, **overrides: Any) -> None:
        super().__init__(base, **overrides)
        self.fifo_base = base / "fiu-ctrl"

    def start(self, wait_ready: bool = True, env: dict[str, str] | None = None) -> FiuDaemon:
        # Igual que DaemonProcess.start, pero con fiu-run delante (fiu-run hace exec: el pid es el
        # del propio daemon).
        ready_before = self.count_events("daemon.ready")
        self.stderr_path = self.base / f"stderr.{int(time.time() * 1000)}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["fiu-run", "-x", "-f", str(self.fifo_base),
             sys.executable, "-m", "daemon", "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        if wait_ready:
            wait_until(lambda: self.count_events("daemon.ready") > ready_before or self.proc.poll() is not None,
                       60, what="daemon.ready")
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.stderr_text()}")
        fifo = Path(f"{self.fifo_base}-{self.pid}.in")
        wait_until(fifo.exists, 10, what=f"libfiu control FIFO {fifo}")
        return self

    def fiu_ctrl(self, command: str) -> None:
        """Manda una orden de control remoto de libfiu al daemon y comprueba que la aceptó."""
        result = subprocess.run(["fiu-ctrl", "-f", str(self.fifo_base), "-c", command, str(self.pid)],
                                capture_output=True, text=True, timeout=30)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "error" not in output.lower(), f"fiu-ctrl {command!r}: {output}"


def _part_size(daemon: DaemonProcess, job_id: str) -> int:
    try:
        return (daemon.temp_root / f"videonote_dl_{job_id}" / PART_NAME).stat().st_size
    except FileNotFoundError:
        return 0


def _after_a_status_write(daemon: DaemonProcess) -> None:
    """Espera a que el daemon reescriba su archivo de estado (cada ~5 s).

    Es la única escritura periódica del daemon en reposo; justo después quedan ~5 s en los que la
    siguiente escritura del proceso es la de la descarga. Así el fallo de una sola vez de libfiu cae
    en ella y no en el archivo de estado.
    """
    status = daemon.status_file
    wait_until(status.exists, 15, what="status file")
    inode = status.stat().st_ino
    wait_until(lambda: status.exists() and status.stat().st_ino != inode, 15, interval=0.005,
               what="a fresh status write")


def _fiu_config() -> dict[str, Any]:
    # Sin eventos de progreso ni pasadas del recolector ni yt-dlp durante la prueba: las únicas
    # escrituras del proceso mientras la descarga está retenida son las del archivo de estado.
    return {"ytdlp": {"enabled": False}, "reaper": {"interval": "1h"},
            "download": {"progress_interval": "1h", "retries": 3}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("code", "mib"), [(errno.ENOSPC, 3), (errno.EIO, 1), (errno.EFBIG, 4)],
                         ids=["ENOSPC-after-3MiB", "EIO-after-1MiB", "EFBIG-after-4MiB"])
def test_write_fault_after_n_mib(tmp_path: Path, test_server: TestServer, code: int, mib: int) -> None:
    _require_fiu()
    hold = threading.Event()
    data = os.urandom((mib + 2) * MIB + 12345)
    after = mib * MIB + 4096  # el servidor se detiene aquí, a mitad del cuerpo
    url = test_server.add("/n.bin", Behavior(data=data, hold=hold, hold_after=after, hold_times=1,
                                             hold_timeout=60))
    small = os.urandom(100 * 1024)
    small_url = test_server.add("/after.bin", Behavior(data=small))
    daemon = FiuDaemon(tmp_path / "d", **_fiu_config())
    try:
        with daemon:
            daemon.drop_job({"url": url, "id": "nth"})
            # La descarga escribe por lotes de al menos 1 MiB: cuando el disco tiene todo lo recibido
            # salvo menos de un lote, ya no habrá más escrituras hasta que el servidor siga, y la
            # siguiente escritura del proceso es la del próximo lote.
            wait_until(lambda: _part_size(daemon, "nth") > after - BATCH, 30, what="the held body on disk")
            written_before = _part_size(daemon, "nth")
            _after_a_status_write(daemon)
            # La descarga escribe con writev (los trozos tal como llegan).
            daemon.fiu_ctrl(f"enable name=posix/io/rw/writev,failinfo={code},onetime")
            hold.set()
            record = _assert_storage_failure(daemon, "nth", code)
            assert record["attempts"] == 1, "a storage error is permanent: no retry"
            assert daemon.events(name="daemon.error") == [], "the fault hit another write, not the download"
            assert written_before >= BATCH
            assert _output_files(daemon) == []
            assert not (daemon.temp_root / "videonote_dl_nth").exists()
            # El daemon sigue: otro trabajo, con la misma biblioteca de fallos cargada, sale bien.
            daemon.drop_job({"url": small_url, "id": "after"})
            _assert_done(daemon, "after", small)
            assert _output_files(daemon) == ["after.bin"]
    finally:
        hold.set()
    _final_verify(daemon, {"nth": None, "after": _sha(small)})


@pytest.mark.timeout(120)
def test_fsync_eio_before_publishing(tmp_path: Path, test_server: TestServer) -> None:
    # El cuerpo entero se escribió pero fsync dice EIO: el archivo no es fiable y no se publica.
    _require_fiu()
    hold = threading.Event()
    data = os.urandom(2 * MIB + 777)
    url = test_server.add("/s.bin", Behavior(data=data, hold=hold, hold_after=MIB + 4096, hold_times=1,
                                             hold_timeout=60))
    small = os.urandom(50 * 1024)
    small_url = test_server.add("/ok.bin", Behavior(data=small))
    daemon = FiuDaemon(tmp_path / "d", **_fiu_config())
    try:
        with daemon:
            daemon.drop_job({"url": url, "id": "fsync"})
            wait_until(lambda: _part_size(daemon, "fsync") > MIB + 4096 - BATCH, 30, what="the held body on disk")
            # Nada más hace fsync hasta que termine la descarga: el primero es el del archivo.
            daemon.fiu_ctrl(f"enable name=posix/io/sync/fsync,failinfo={errno.EIO},onetime")
            hold.set()
            _assert_storage_failure(daemon, "fsync", errno.EIO)
            assert _output_files(daemon) == []
            daemon.drop_job({"url": small_url, "id": "ok"})
            _assert_done(daemon, "ok", small)
    finally:
        hold.set()
    _final_verify(daemon, {"fsync": None, "ok": _sha(small)})


# --- RLIMIT_FSIZE: EFBIG del núcleo ---------------------------------------------------------------
@pytest.mark.timeout(120)
def test_rlimit_fsize_efbig(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(3 * MIB)
    url = test_server.add("/huge.bin", Behavior(data=data))
    small = os.urandom(200 * 1024)
    small_url = test_server.add("/fits.bin", Behavior(data=small))
    daemon = DaemonProcess(tmp_path / "d", ytdlp={"enabled": False})
    with daemon:
        # Límite de 1.5 MiB por archivo para el proceso del daemon: el primer lote de 1 MiB cabe,
        # el segundo se corta a medias y la escritura siguiente da EFBIG (SIGXFSZ lo ignora Python).
        limit = 3 * MIB // 2
        _soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (limit, hard))
        daemon.drop_job({"url": url, "id": "huge"})
        _assert_storage_failure(daemon, "huge", errno.EFBIG)
        assert _output_files(daemon) == []
        daemon.drop_job({"url": small_url, "id": "fits"})
        _assert_done(daemon, "fits", small)
        assert daemon.proc is not None and daemon.proc.poll() is None, "SIGXFSZ must not kill the daemon"
    _final_verify(daemon, {"huge": None, "fits": _sha(small)})


# --- el registro de eventos sin sitio ---------------------------------------------------------------
@pytest.mark.timeout(120)
def test_event_log_disk_full_downloads_continue(tmp_path: Path, test_server: TestServer) -> None:
    datas = {f"e{n}": os.urandom(150 * 1024 + n) for n in range(3)}
    for job_id, data in datas.items():
        test_server.add(f"/{job_id}.bin", Behavior(data=data))
    late = os.urandom(80 * 1024)
    late_url = test_server.add("/late.bin", Behavior(data=late))
    with mounted_tmpfs(tmp_path / "log-fs", "size=64k,mode=0700") as fs:
        log = fs / "events.jsonl"
        daemon = DaemonProcess(tmp_path / "d", event_log=str(log), ytdlp={"enabled": False})
        daemon.event_log = log
        with daemon:
            filler = fs / "filler"
            _fill(filler)
            for job_id in datas:
                daemon.drop_job({"url": test_server.url(f"/{job_id}.bin"), "id": job_id})
            for job_id, data in datas.items():
                _assert_done(daemon, job_id, data)
            err = daemon.stderr_text()
            assert f"cannot write event log {log}" in err, err
            assert "downloads continue" in err
            assert "job.succeeded" in err, "events still reach stderr (the journal)"
            # Con sitio otra vez, el registro sigue: sin líneas rotas y con los eventos nuevos.
            filler.unlink()
            daemon.drop_job({"url": late_url, "id": "late"})
            _assert_done(daemon, "late", late)
            wait_until(lambda: b'"event":"job.succeeded","correlation_id":"late"' in log.read_bytes(), 30,
                       what="events of the late job in the log")
            events = _parse_lines(log)
            succeeded = {e.get("correlation_id") for e in events if e["event"] == "job.succeeded"}
            assert "late" in succeeded
            assert not set(datas) <= succeeded, "no event was dropped: the log never filled up"
        _final_verify(daemon, {**{j: _sha(d) for j, d in datas.items()}, "late": _sha(late)}, check_events=False)
        _parse_lines(log)
