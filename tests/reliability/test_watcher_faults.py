"""Fallos del vigilante: excepciones en el manejador, incoming/ borrado y recreado, ráfagas enormes."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.watcher import SpoolWatcher
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def test_an_exception_in_the_wake_callback_does_not_kill_dispatch(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    calls: list[str] = []
    lock = threading.Lock()

    def wake(label: str) -> None:
        with lock:
            calls.append(label)
            if len(calls) == 1:
                raise RuntimeError("boom from the handler")
        watcher.acknowledge(label)  # como el daemon: atendido, el próximo evento vuelve a avisar

    watcher = SpoolWatcher({"incoming": folder}, wake)
    watcher.start()
    try:
        (folder / "first.yaml").write_text("url: http://x\n")
        wait_until(lambda: calls, 10, what="first wake")
        count = len(calls)
        (folder / "second.yaml").write_text("url: http://x\n")
        wait_until(lambda: len(calls) > count, 10, what="a wake after the exception")
        assert watcher.health_problem() is None
    finally:
        watcher.stop()


def test_health_check_sees_a_replaced_folder_and_a_dead_observer(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    watcher = SpoolWatcher({"incoming": folder}, lambda _label: None)
    watcher.start()
    try:
        assert watcher.health_problem() is None
        shutil.rmtree(folder)
        folder.mkdir()
        # Según el momento se ve la vigilancia perdida (IN_DELETE_SELF) o la carpeta nueva (otro inodo).
        problem = wait_until(watcher.health_problem, 5, what="a health problem")
        assert "replaced" in problem or "removed" in problem or "deleted" in problem, problem
        watcher.restart()
        assert watcher.health_problem() is None and watcher.restarts == 1
        watcher.stop()
        assert "not running" in (watcher.health_problem() or "")
    finally:
        watcher.stop()


def test_incoming_deleted_and_recreated_is_watched_again(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/w.bin", Behavior(data=b"w" * 5000))
    with DaemonProcess(tmp_path, rescan_interval="30s") as daemon:
        incoming = daemon.spool / "incoming"
        shutil.rmtree(incoming)
        incoming.mkdir(exist_ok=True)  # el daemon también puede recrearla al escanear
        wait_until(lambda: daemon.count_events("spool.watcher_restarted") >= 1, 20, what="watcher restart event")
        daemon.drop_job({"url": url, "id": "after-recreate"})
        folder, _record = daemon.wait_record("after-recreate", timeout=20)
        assert folder == "done"


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~160 s sola en 2 núcleos; con la suite en paralelo, el doble: el plazo es el de su espera
def test_burst_of_120000_job_files_is_fully_claimed(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs for the spool (CI runs as root)")
    mountpoint = tmp_path / "fast"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(mountpoint)], check=True)
    try:
        daemon = DaemonProcess(mountpoint / "d", log_level="warning", rescan_interval="1s")
        daemon.start()
        total = 120_000
        tmp, incoming = daemon.spool / "tmp", daemon.spool / "incoming"
        # Todos inválidos a propósito (esquema ftp): se reclaman y rechazan sin descargar nada, así la
        # prueba mide reclamo y vigilancia, no la red. Los temporales se escriben en tmp/, fuera de la vista.
        for n in range(total):
            (tmp / f"b{n}.yaml").write_bytes(b"url: ftp://example.org/x\n")
        for n in range(total):
            os.rename(tmp / f"b{n}.yaml", incoming / f"b{n}.yaml")
        rejected = daemon.spool / "rejected"
        wait_until(lambda: sum(1 for _ in os.scandir(rejected)) >= 2 * total, 600, interval=1.0,
                   what="every burst file claimed and rejected")
        assert not any(os.scandir(incoming))
        assert daemon.stop() == 0
        assert sum(1 for e in os.scandir(rejected) if e.name.endswith(".reason")) == total
    finally:
        time.sleep(0.2)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
