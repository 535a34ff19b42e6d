"""Los secretos de un trabajo yt-dlp no salen de él (issue 12): ni en argv ni en nombres de archivo.

El daemon real (subproceso), yt-dlp real y el servidor HTTP real en 127.0.0.1. Mientras la
descarga está retenida a medias se lee ``/proc/<pid>/cmdline`` del yt-dlp que corre (en los dos
modos: subproceso propio e hijo del zigoto) y los nombres del directorio aislado; al final, el
nombre publicado, el registro y el registro de eventos. En ninguno aparece el token de la URL ni el
valor de una cabecera; la cabecera de ``forward_headers`` sí llega al servidor, y la que sólo debía ir
al origen de la URL se retiene (``withheld_headers``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import pytest

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.test_ytdlp import tiny_mp4

TOKEN = "SECRET-tok-5f2a9c"
BEARER = "SECRET-bearer-77d1"
TRACE = "SECRET-trace-0b3e"


def _cmdlines(pid: int) -> list[str]:
    """La línea de órdenes de ``pid`` y de todos sus descendientes (ffmpeg, si yt-dlp lo lanzara)."""
    found: list[str] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            found.append(Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except FileNotFoundError:
            continue
        with contextlib.suppress(OSError):  # el proceso pudo terminar entre medias
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    return found


def _names_under(root: Path) -> list[str]:
    return [str(Path(folder, name).relative_to(root)) for folder, dirs, files in os.walk(root)
            for name in dirs + files]


@pytest.mark.parametrize("mode", ["subprocess", "zygote"])
def test_no_url_token_or_header_value_in_any_argv(mode: str, tmp_path: Path, test_server: TestServer) -> None:
    media = tiny_mp4(400_000)
    hold = threading.Event()
    url = test_server.add("/v/clip.mp4", Behavior(data=media, content_type="video/mp4", hold=hold,
                                                  hold_after=128 * 1024)) + f"?token={TOKEN}&lang=en"
    job = {"url": url, "id": f"argv-{mode}", "downloader": "ytdlp",
           "headers": {"Authorization": f"Bearer {BEARER}", "X-Trace-Id": TRACE},
           "forward_headers": ["X-Trace-Id"]}
    try:
        with DaemonProcess(tmp_path, ytdlp={"zygote": mode == "zygote"}) as daemon:
            daemon.drop_job(job)
            started = wait_until(lambda: daemon.events(job["id"], "ytdlp.started"), 120, what="yt-dlp started")[0]
            assert started["mode"] == mode
            assert started["withheld_headers"] == ["Authorization"]
            wait_until(lambda: test_server.requests, 60, what="yt-dlp's request")
            lines = _cmdlines(int(started["pid"]))
            assert lines, "the running yt-dlp must be visible in /proc"
            if mode == "subprocess":
                assert any("yt_dlp" in line or "zygote_server.py run" in line for line in lines), lines
            for line in lines:
                for secret in (TOKEN, BEARER, TRACE, "token="):
                    assert secret not in line, f"{secret!r} in a process's argv: {line}"
            # Los archivos que las llevan son 0600, del daemon, dentro del directorio aislado (0700).
            temp_dir = daemon.temp_root / f"videonote_dl_{job['id']}"
            for name in (".vndl-url", ".vndl-ytdlp.conf"):
                info = (temp_dir / name).lstat()
                assert (info.st_mode & 0o7777, info.st_uid) == (0o600, os.geteuid()), name
            hold.set()
            folder, record = daemon.wait_record(job["id"], timeout=120)
            assert folder == "done", record
            assert record["sha256"] == hashlib.sha256(media).hexdigest()
    finally:
        hold.set()
    sent = [r for r in test_server.requests if r.path.startswith("/v/clip.mp4")]
    assert sent and all(r.path.endswith(f"token={TOKEN}&lang=en") for r in sent)  # la URL llegó entera
    assert all(r.headers.get("X-Trace-Id") == TRACE for r in sent)  # forward_headers: llega
    assert not any("Authorization" in r.headers for r in sent)  # sólo para el origen: retenida
    assert TOKEN not in daemon.event_log.read_text()


@pytest.mark.parametrize("path", ["/v/clip.mp4", "/download", "/page.html"])
def test_query_token_never_reaches_a_file_name(path: str, tmp_path: Path, test_server: TestServer) -> None:
    media = tiny_mp4(300_000)
    hold = threading.Event()
    media_url = test_server.add("/v/clip.mp4", Behavior(data=media, content_type="video/mp4", hold=hold,
                                                        hold_after=64 * 1024))
    test_server.add("/download", Behavior(data=media, content_type="video/mp4", hold=hold, hold_after=64 * 1024))
    page = (f"<html><head><title>A page</title></head><body><video controls><source src='{media_url}?token="
            f"{TOKEN}' type='video/mp4'></video></body></html>")
    test_server.add("/page.html", Behavior(data=page.encode(), content_type="text/html"))
    url = test_server.url(path) + f"?token={TOKEN}"
    job_id = "tok-" + path.strip("/").replace(".", "-").replace("/", "-")
    seen: list[str] = []
    try:
        with DaemonProcess(tmp_path, ytdlp={"zygote": False}) as daemon:
            daemon.drop_job({"url": url, "id": job_id, "downloader": "ytdlp"})
            temp_dir = daemon.temp_root / f"videonote_dl_{job_id}"
            # Mientras yt-dlp escribe (la respuesta retenida a medias): sus temporales.
            wait_until(lambda: any(".part" in n for n in _names_under(temp_dir)), 120, what="a .part file")
            seen = _names_under(temp_dir)
            hold.set()
            folder, record = daemon.wait_record(job_id, timeout=120)
            assert folder == "done", record
            assert record["sha256"] == hashlib.sha256(media).hexdigest()
            published = Path(record["path"])
            assert published.is_file() and TOKEN not in published.name and "token" not in published.name
            for name in seen:
                assert TOKEN not in name and "token" not in name, seen
            assert not [n for n in _names_under(daemon.output) if TOKEN in n or "token" in n]
            for leaked in (daemon.event_log.read_text(), (daemon.spool / "done" / f"{job_id}.json").read_text()):
                assert TOKEN not in leaked
    finally:
        hold.set()
    assert any(".part" in n for n in seen), seen  # se miró de verdad mientras descargaba


@pytest.mark.parametrize(("text", "expected"), [
    ("download?token=abc", "download"), ("clip.mp4?sig=1&x=2", "clip.mp4"), ("?token=abc", ""),
    ("Why? A talk", "Why? A talk"), ("What?", "What?"), ("a=b", "a=b"),
])
def test_without_query(text: str, expected: str) -> None:
    from daemon.downloaders.ytdlp.names import without_query

    assert without_query(text) == expected
