"""Toda entrada de incoming/ y cancel/ es hostil: ninguna detiene ni frena el bucle (issue 12).

El daemon real (subproceso) y el servidor HTTP real en 127.0.0.1. Se deja en incoming/ y en
cancel/ cada clase de entrada (directorios con cada modo, un FIFO, un socket, un bucle de enlaces,
un archivo ilegible, un archivo que desaparece mientras se reclama, un punto de montaje que no se
puede mover) y después un trabajo normal, que debe terminar tan rápido como en un spool limpio.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import TestServer
from tests.support.mounts import mounted_tmpfs

DIR_MODES = (0o000, 0o700, 0o755, 0o1777, 0o3730)


def _plant_everything(target: Path, suffix: str) -> list[str]:
    """Planta cada clase de entrada en ``target`` (hechas al lado y entradas con rename, ya completas);
    devuelve los nombres."""
    folder = target.parent / f".plant-{target.name}"
    folder.mkdir()
    names = []
    for mode in DIR_MODES:
        path = folder / f"dir{mode:o}{suffix}"
        path.mkdir()
        (path / "inner.yaml").write_text("url: http://127.0.0.1/x\n") if mode & 0o200 else None
        path.chmod(mode)
        names.append(path.name)
    os.mkfifo(folder / f"fifo{suffix}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(folder / f"sock{suffix}"))
    sock.close()
    os.symlink(f"loopb{suffix}", folder / f"loopa{suffix}")
    os.symlink(f"loopa{suffix}", folder / f"loopb{suffix}")
    unreadable = folder / f"unreadable{suffix}"
    unreadable.write_text("url: http://127.0.0.1/x\n")
    unreadable.chmod(0)
    names += [f"fifo{suffix}", f"sock{suffix}", f"loopa{suffix}", f"loopb{suffix}", unreadable.name]
    for name in names:
        os.rename(folder / name, target / name)
    return names


def _time_to_done(daemon: DaemonProcess, server: TestServer, job_id: str) -> float:
    url = server.add(f"/{job_id}.bin", data=job_id.encode() * 1000)
    start = time.monotonic()
    daemon.drop_job({"id": job_id, "url": url})
    folder, record = daemon.wait_record(job_id, 30)
    assert folder == "done", record
    return time.monotonic() - start


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs inside incoming/ (needs root)")
def test_every_kind_of_entry_in_incoming_and_cancel_leaves_the_loop_running(tmp_path: Path,
                                                                            test_server: TestServer) -> None:
    with DaemonProcess(tmp_path / "clean") as clean:
        baseline = sorted(_time_to_done(clean, test_server, f"base{n}") for n in range(3))[1]
    # settle corto: si la tormenta de abajo desborda la cola de inotify, lo que se halla al reescanear
    # espera ``settle`` (daemon/settle.py); con 0,2 s eso cabe en el margen de la comparación.
    daemon = DaemonProcess(tmp_path / "d", producers={"cancel_ttl": "2s", "settle": "0.2s"})
    with daemon:
        incoming, cancel = daemon.spool / "incoming", daemon.spool / "cancel"
        planted = _plant_everything(incoming, ".yaml")
        _plant_everything(cancel, "_c")
        (cancel / "not a job id").touch()
        (cancel / ("x" * 65)).touch()
        with mounted_tmpfs(incoming / "mounted.yaml", "size=64k,mode=0755"):
            # Un archivo que desaparece mientras se reclama: aparece y se borra sin parar.
            stop = threading.Event()

            def flicker() -> None:
                path = incoming / "flicker.yaml"
                while not stop.is_set():
                    try:
                        path.write_text("url: http://127.0.0.1/x\n")
                        path.unlink()
                    except OSError:
                        pass
                    # Mil veces por segundo, sin acaparar el GIL del proceso del servidor de pruebas.
                    time.sleep(0.001)

            flickering = threading.Thread(target=flicker, daemon=True)
            flickering.start()
            try:
                times = sorted(_time_to_done(daemon, test_server, f"after{n}") for n in range(3))
            finally:
                stop.set()
                flickering.join(5)
            # Tan rápido como en un spool limpio (con margen para una máquina compartida).
            assert times[1] < baseline * 3 + 0.5, (times, baseline)
            wait_until(lambda: any(e["file"] == "mounted.yaml" for e in daemon.events(name="spool.entry_skipped")),
                       10, what="the mount point skipped")
            skipped = daemon.events(name="spool.entry_skipped")
            # Dicho una vez por inodo, no en cada pasada: la carpeta pudo verse antes de montarse
            # (otro inodo) y una vez montada; nunca más de esas dos.
            assert {e["file"] for e in skipped} == {"mounted.yaml"} and len(skipped) <= 2, skipped
            time.sleep(2.5)  # dos reescaneos más: el aviso no se repite
            assert len(daemon.events(name="spool.entry_skipped")) == len(skipped)
        # Lo que no es un archivo acaba en rejected/ con su motivo; nada queda en incoming/.
        wait_until(lambda: not [n for n in os.listdir(incoming) if n != "flicker.yaml" and n != "mounted.yaml"],
                   15, what="incoming/ emptied")
        rejected = set(daemon.rejected())
        assert set(planted) - {"unreadable.yaml"} <= rejected, rejected
        reasons = {e["file"]: e["reason"] for e in daemon.events(name="job.rejected")}
        assert "a directory" in reasons["dir700.yaml"] and "FIFO" in reasons["fifo.yaml"]
        assert "socket" in reasons["sock.yaml"] and "symbolic link" in reasons["loopa.yaml"]
        # cancel/ queda limpio: cada entrada inválida se retira con su evento, sin trazas.
        wait_until(lambda: not os.listdir(cancel), 15, what="cancel/ emptied")
        removed = {e["file"] for e in daemon.events(name="spool.cancel_removed")}
        assert {"fifo_c", "sock_c", "loopa_c", "dir700_c", "dir0_c", "not a job id"} <= removed, removed
        # Un marcador regular sin trabajo (el archivo ilegible) caduca con producers.cancel_ttl.
        assert [e["correlation_id"] for e in daemon.events(name="job.cancel_expired")] == ["unreadable_c"]
        assert daemon.events(name="daemon.error") == []
        assert "Traceback" not in daemon.stderr_text()
        assert daemon.proc is not None and daemon.proc.poll() is None
    for n in range(3):
        assert stat.S_ISREG(os.stat(daemon.output / f"after{n}.bin").st_mode)
