"""El cuerpo grande por ``splice(2)``: las mismas garantías que el camino de aiohttp.

Contra el servidor de pruebas real (HTTP en claro en 127.0.0.1) y con cuerpos por encima de
``SPLICE_MIN_BYTES``: el contenido y su sha256 son exactos; un corte a mitad se reanuda con
``Range`` (y el resto vuelve a ir por splice, con el hash de lo ya escrito); un servidor que
declara más de lo que envía deja ``incomplete``, uno que envía de más no añade nada; sin datos
durante ``timeout``, ``timeout``; y una cancelación a mitad del cuerpo vuelve enseguida, con lo
recibido guardado para reanudar. Un cuerpo sin Content-Length (chunked) sigue por aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.downloaders import http_downloader
from daemon.downloaders.base import DownloadOptions, DownloadTimeout, IncompleteBody
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.downloaders.http_resume import PART_NAME
from daemon.downloaders.http_splice import SPLICE_MIN_BYTES
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.test_http_downloader import MiB, opts, run_download, sha, temp_dirs

BIG = SPLICE_MIN_BYTES + 4 * MiB + 123


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Cuántos bytes quedaban por recibir en cada cuerpo que fue por splice (un espía, no un sustituto)."""
    calls: list[int] = []
    real = http_downloader.splice_body

    async def spy(response: Any, sink: Any, total: int, *args: Any) -> list[bytes]:
        calls.append(total - sink.size)
        return await real(response, sink, total, *args)

    monkeypatch.setattr(http_downloader, "splice_body", spy)
    return calls


def test_big_plain_http_body_is_spliced_exactly(temp_root: Path, test_server: TestServer,
                                                spliced: list[int]) -> None:
    data = os.urandom(BIG)
    url = test_server.add("/big.bin", Behavior(data=data, chunk=256 * 1024))
    out = run_download(temp_root, "sp1", opts(url))
    assert out.error is None, out.error
    assert spliced == [BIG]
    assert out.data == data
    assert out.result is not None and out.result.sha256 == sha(data) and out.result.size == BIG
    assert temp_dirs(temp_root) == []


def test_reset_mid_body_resumes_and_the_rest_is_spliced_too(temp_root: Path, test_server: TestServer,
                                                            spliced: list[int]) -> None:
    data = os.urandom(2 * SPLICE_MIN_BYTES + 8 * MiB)
    cut = 6 * MiB
    url = test_server.add("/cut.bin", Behavior(data=data, reset_after=cut, reset_times=1, rate=64 * MiB))
    out = run_download(temp_root, "sp2", opts(url), attempts=3)
    assert out.error is None, out.error
    assert [type(e).__name__ for e in out.attempt_errors] in (["ConnectionFailed"], ["IncompleteBody"])
    requests = test_server.requests_for("/cut.bin")
    assert len(requests) == 2 and requests[1].headers.get("Range", "").startswith("bytes=")
    offset = int(requests[1].headers["Range"][len("bytes="):-1])
    assert 0 < offset <= cut
    assert spliced == [len(data), len(data) - offset]
    assert out.result is not None and out.result.resumed
    assert out.data == data and out.result.sha256 == sha(data)


def test_a_server_that_sends_less_than_it_declared_is_incomplete(temp_root: Path, test_server: TestServer,
                                                                 spliced: list[int]) -> None:
    data = os.urandom(BIG)
    url = test_server.add("/short.bin", Behavior(data=data, short_by=4096))
    out = run_download(temp_root, "sp3", opts(url))
    assert isinstance(out.error, IncompleteBody), out.error
    assert spliced == [BIG + 4096]
    assert temp_dirs(temp_root) == []


def test_bytes_beyond_content_length_are_not_kept(temp_root: Path, test_server: TestServer,
                                                  spliced: list[int]) -> None:
    data = os.urandom(BIG)
    url = test_server.add("/extra.bin", Behavior(data=data, extra_bytes=70_000))
    out = run_download(temp_root, "sp4", opts(url))
    assert out.error is None, out.error
    assert spliced == [BIG]
    assert out.data == data and out.result is not None and out.result.sha256 == sha(data)


def test_silence_mid_body_is_a_timeout(temp_root: Path, test_server: TestServer, spliced: list[int]) -> None:
    hold = threading.Event()
    data = os.urandom(BIG)
    url = test_server.add("/quiet.bin", Behavior(data=data, hold=hold, hold_after=3 * MiB, hold_timeout=30))
    try:
        out = run_download(temp_root, "sp5", opts(url, timeout=1.0))
    finally:
        hold.set()
    assert isinstance(out.error, DownloadTimeout), out.error
    assert out.error.kind == "timeout"
    assert spliced == [BIG]


def test_cancel_mid_body_returns_promptly_and_keeps_what_arrived(tmp_path: Path, test_server: TestServer,
                                                                 spliced: list[int]) -> None:
    hold = threading.Event()
    data = os.urandom(BIG)
    url = test_server.add("/held.bin", Behavior(data=data, hold=hold, hold_after=3 * MiB, hold_timeout=30))
    work = tmp_path / "work"
    work.mkdir()

    async def main() -> None:
        downloader = HttpDownloader(fsync=False)
        options = DownloadOptions(url=url, allow_private_networks=True, timeout=60.0, output_path=work)
        seen: list[int] = []
        task = asyncio.create_task(downloader.download(options, lambda done, _total: seen.append(done)))
        part = work / PART_NAME
        while not (part.exists() and part.stat().st_size >= 3 * MiB):
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)  # el hilo lo ve en su siguiente poll (0,1 s)
        await downloader.close()

    try:
        asyncio.run(main())
    finally:
        hold.set()
    assert spliced == [BIG]
    assert (work / PART_NAME).read_bytes() == data[: (work / PART_NAME).stat().st_size]
    assert (work / PART_NAME).stat().st_size >= 3 * MiB


def test_a_body_without_content_length_stays_on_aiohttp(temp_root: Path, test_server: TestServer,
                                                        spliced: list[int]) -> None:
    data = os.urandom(BIG)
    url = test_server.add("/nolen.bin", Behavior(data=data, no_content_length=True))
    out = run_download(temp_root, "sp6", opts(url))
    assert out.error is None, out.error
    assert spliced == []
    assert out.data == data


def test_kill_mid_splice_then_restart_resumes_from_what_reached_the_disk(tmp_path: Path,
                                                                           test_server: TestServer) -> None:
    """El daemon real, muerto (SIGKILL) a mitad de un cuerpo que va por splice: al arrancar otra vez,
    reanuda desde lo que llegó al archivo (``Range``) y publica exactamente el original."""
    hold = threading.Event()
    data = os.urandom(BIG)
    url = test_server.add("/crash.bin", Behavior(data=data, hold=hold, hold_after=4 * MiB, hold_times=1,
                                                 hold_timeout=60))
    daemon = DaemonProcess(tmp_path, ytdlp={"enabled": False}, download={"backoff": "50ms"})
    try:
        daemon.start()
        daemon.drop_job({"url": url, "id": "spk", "sha256": sha(data)})
        part = wait_until(lambda: next(iter(daemon.temp_root.glob(f"videonote_dl_spk/{PART_NAME}")), None), 30,
                          what="the part file")
        wait_until(lambda: part.stat().st_size >= 4 * MiB, 30, what="4 MiB spliced to the part file")
        daemon.kill9()
        hold.set()
        daemon.start()
        folder, record = daemon.wait_record("spk", 60)
        assert daemon.stop() == 0
    finally:
        hold.set()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill9()
    assert folder == "done" and record["sha256"] == sha(data), record
    assert Path(record["path"]).read_bytes() == data
    requests = test_server.requests_for("/crash.bin")
    assert len(requests) == 2 and requests[1].headers.get("Range", "").startswith("bytes=")
    assert int(requests[1].headers["Range"][len("bytes="):-1]) >= 4 * MiB
