"""``file_io``: dónde corre el final de un trabajo pequeño (publicar, registrar), hilo o bucle.

Con ``auto`` decide el sistema de archivos real (``statfs``) de las tres carpetas: en el bucle
sólo si todas están en memoria (tmpfs). Lo que corre en el bucle se comprueba por el hilo que
escribe el registro terminal (``on_outcome``), con el servidor HTTP real; un archivo de más de
``INLINE_MAX_BYTES`` sigue en un hilo aunque el modo sea ``inline``. El daemon real dice el modo
en ``daemon.file_io`` y, en ``inline``, publica exactamente lo descargado.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest

from daemon import FileIo, choose_file_io
from daemon.config import load_settings
from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.download_manager import DownloadManager
from daemon.downloaders.download_task import DownloadTask
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.file_io import INLINE_MAX_BYTES
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess
from tests.support.http_server import Behavior, TestServer
from tests.support.mounts import mounted_tmpfs


def test_auto_is_inline_only_when_every_folder_is_on_a_memory_file_system(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "mem", "size=1m,mode=0755") as mem:
        memory = {"spool_dir": mem / "spool", "temp_dir": mem / "tmp", "output_dir": mem / "not-yet" / "out"}
        chosen = choose_file_io("auto", memory)
        assert chosen.inline and chosen.mode == "inline", chosen
        assert "memory file systems" in chosen.reason
        disk = tmp_path / "disk-out"  # /tmp de la prueba: un disco, no tmpfs
        if choose_file_io("auto", {"output_dir": disk}).inline:
            pytest.skip("the test's tmp_path is itself on a memory file system")
        mixed = choose_file_io("auto", {**memory, "output_dir": disk})
        assert not mixed.inline and mixed.mode == "thread"
        assert mixed.reason.startswith(f"output_dir {disk} is on a ") and "fsync can wait" in mixed.reason
        # A mano manda el config, sea cual sea el disco.
        assert not choose_file_io("thread", memory).inline
        assert choose_file_io("inline", {"output_dir": disk}).inline


def test_inline_runs_only_files_up_to_the_limit() -> None:
    inline = FileIo(True, "set in the config")
    assert inline.runs_inline(0) and inline.runs_inline(INLINE_MAX_BYTES)
    assert not inline.runs_inline(INLINE_MAX_BYTES + 1)
    assert not FileIo(False, "set in the config").runs_inline(1)


def _finish_threads(tmp_path: Path, server: TestServer, file_io: FileIo, sizes: dict[str, int]) -> dict[str, str]:
    """Descarga cada archivo con el gestor real; devuelve, por trabajo, el hilo que escribió su registro."""
    threads: dict[str, str] = {}
    payloads = {name: os.urandom(size) for name, size in sizes.items()}
    urls = {name: server.add(f"/{name}.bin", Behavior(data=data)) for name, data in payloads.items()}

    def record(task: DownloadTask) -> None:
        threads[task.correlation_id] = "loop" if threading.current_thread() is threading.main_thread() else "worker"

    async def main() -> list[DownloadTask]:
        downloader = HttpDownloader(file_io=file_io)
        manager = DownloadManager({"http": downloader}, tmp_path / "out", max_concurrent=2,
                                  temp_root=tmp_path / "tmp", on_outcome=record, file_io=file_io)
        tasks = [manager.submit(name, DownloadOptions(url=url, filename=f"{name}.bin", allow_private_networks=True))
                 for name, url in urls.items()]
        await manager.wait_idle()
        await downloader.close()
        return tasks

    for task in asyncio.run(main()):
        assert task.state == "succeeded", task.error
        assert (tmp_path / "out" / f"{task.correlation_id}.bin").read_bytes() == payloads[task.correlation_id]
    assert not list((tmp_path / "tmp").glob("videonote_dl_*"))
    return threads


def test_inline_publishes_small_files_on_the_loop_and_big_ones_in_a_thread(tmp_path: Path,
                                                                           test_server: TestServer) -> None:
    sizes = {"tiny": 16 * 1024, "batch": 700 * 1024, "big": INLINE_MAX_BYTES + 1}
    threads = _finish_threads(tmp_path, test_server, FileIo(True, "set in the config"), sizes)
    assert threads == {"tiny": "loop", "batch": "loop", "big": "worker"}


def test_thread_mode_publishes_every_file_in_a_thread(tmp_path: Path, test_server: TestServer) -> None:
    threads = _finish_threads(tmp_path, test_server, FileIo(False, "set in the config"), {"tiny": 16 * 1024})
    assert threads == {"tiny": "worker"}


def test_daemon_on_tmpfs_says_inline_and_publishes_exactly(tmp_path: Path, test_server: TestServer) -> None:
    with mounted_tmpfs(tmp_path / "mem", "size=16m,mode=0755") as mem:
        payloads = {f"f{n}": os.urandom(n * 37_000 + 1) for n in range(12)}
        daemon = DaemonProcess(tmp_path / "d", spool_dir=str(mem / "spool"), temp_dir=str(mem / "tmp"),
                               output_dir=str(mem / "out"), max_concurrent=4, ytdlp={"enabled": False})
        with daemon:
            [event] = [e for e in daemon.events() if e["event"] == "daemon.file_io"]
            assert (event["file_io"], event["configured"]) == ("inline", "auto"), event
            for job_id, data in payloads.items():
                daemon.drop_job({"url": test_server.add(f"/{job_id}.bin", Behavior(data=data)), "id": job_id,
                                 "sha256": hashlib.sha256(data).hexdigest()})
            for job_id in payloads:
                assert daemon.wait_record(job_id)[0] == "done"
        expected: dict[str, str | None] = {k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()}
        report = verify_spool(load_settings(daemon.config_path), expected=expected, daemon_stopped=True)
        assert report.ok, "\n".join(report.problems)
        assert not daemon.temp_dirs()
