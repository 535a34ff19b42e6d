"""Pruebas del descargador yt-dlp con yt-dlp real, un servidor HTTP real en 127.0.0.1, procesos y
señales reales. Cada descarga pasa por ``DownloadLifecycle.execute`` como lo hará el gestor.

Los escenarios principales corren en los dos modos: ``subprocess`` (un ``python -m yt_dlp`` por
trabajo) y ``zygote`` (hijos de un proceso auxiliar con yt-dlp ya importado).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.downloaders import netguard
from daemon.downloaders.base import (
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    HTTPClientError,
    PermanentDownloadError,
    PrivateAddressRefused,
    ProgressCallback,
    SchemeNotAllowed,
    ServerError,
    SizeLimitExceeded,
    UnsupportedUrl,
)
from daemon.downloaders.download_lifecycle import DownloadLifecycle
from daemon.downloaders.netguard import FORBIDDEN_MESSAGE, is_forbidden_address
from daemon.downloaders.ytdlp import (
    FormatUnavailable,
    MediaUnavailable,
    YtdlpCrashed,
    YtdlpDownloader,
    build_argv,
    classify_failure,
    pick_downloader,
    ytdlp_command,
)
from daemon.downloaders.ytdlp.inputs import URL_FILE
from tests.support.http_server import Behavior, TestServer

MODES = ["subprocess", "zygote"]
PAGE_HTML = (
    b"<!DOCTYPE html><html><head><title>A cat page</title></head><body><h1>Cats</h1>"
    b'<video controls><source src="/media/clip.mp4" type="video/mp4"></video></body></html>'
)


# --- datos ------------------------------------------------------------------------------------
def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def tiny_mp4(payload_bytes: int = 200_000) -> bytes:
    """Un MP4 mínimo válido (ftyp + moov/mvhd + mdat) construido a mano, sin ffmpeg."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        bytes(4) + struct.pack(">IIII", 0, 0, 1000, 0) + struct.pack(">IH", 0x00010000, 0x0100)
        + bytes(10) + matrix + bytes(24) + struct.pack(">I", 2),
    )
    mdat = _box(b"mdat", bytes((i * 7) % 251 for i in range(payload_bytes)))
    return ftyp + _box(b"moov", mvhd) + mdat


MEDIA = tiny_mp4()


# --- utilidades -------------------------------------------------------------------------------
class Events:
    """Lee el registro de eventos JSON que escribe el daemon durante la prueba."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]

    def named(self, name: str, correlation_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.all() if e["event"] == name
                and (correlation_id is None or e.get("correlation_id") == correlation_id)]


@pytest.fixture
def events(event_log: Any) -> Events:
    """El registro de eventos de la prueba (``event_log`` de conftest, que además valida cada
    línea contra el vocabulario de docs/events.md al terminar)."""
    return Events(event_log.path)


@pytest.fixture
def server() -> Iterator[TestServer]:
    with TestServer() as srv:
        srv.add("/media/clip.mp4", Behavior(data=MEDIA, content_type="video/mp4"))
        srv.add("/page.html", Behavior(data=PAGE_HTML, content_type="text/html; charset=utf-8"))
        srv.add("/slow/clip.mp4", Behavior(data=MEDIA, content_type="video/mp4", rate=8192, chunk=2048))
        srv.add("/gone.mp4", Behavior(status=404))
        srv.add("/busy.mp4", Behavior(status=503))
        srv.add("/plain.html", Behavior(data=b"<html><head><title>t</title></head><body>no video</body></html>",
                                        content_type="text/html"))
        srv.add("/nolength.mp4", Behavior(data=MEDIA, content_type="video/mp4", no_content_length=True))
        yield srv


@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    return root


def options(url: str, **overrides: Any) -> DownloadOptions:
    """Opciones de prueba: las pruebas sirven desde 127.0.0.1, así que se permiten redes privadas."""
    values: dict[str, Any] = {"url": url, "allow_private_networks": True, "timeout": 120.0}
    values.update(overrides)
    return DownloadOptions(**values)


class Captured:
    """Envuelve ``download`` para leer el archivo antes de que el ciclo de vida borre el directorio."""

    def __init__(self, downloader: YtdlpDownloader) -> None:
        self.downloader = downloader
        self.data: bytes | None = None
        self.temp_dir: Path | None = None
        self.mode_of_path: int | None = None

    async def __call__(self, opts: DownloadOptions, progress: ProgressCallback | None) -> DownloadResult:
        self.temp_dir = opts.output_path
        result = await self.downloader.download(opts, progress)
        self.data = result.path.read_bytes()
        self.mode_of_path = result.path.lstat().st_mode
        return result


async def run_job(downloader: YtdlpDownloader, cid: str, opts: DownloadOptions, temp_root: Path,
                  progress: ProgressCallback | None = None) -> tuple[DownloadResult, Captured]:
    captured = Captured(downloader)
    lifecycle = DownloadLifecycle(cid, opts, base_temp_dir=temp_root)
    result = await lifecycle.execute(captured, progress)
    return result, captured


def make_downloader(mode: str, **kwargs: Any) -> YtdlpDownloader:
    return YtdlpDownloader(use_zygote=(mode == "zygote"), **kwargs)


def run(coro_factory: Callable[[YtdlpDownloader], Any], downloader: YtdlpDownloader) -> Any:
    """Corre una corrutina con el descargador en un bucle nuevo y para el zigoto al final."""

    async def main() -> Any:
        try:
            return await coro_factory(downloader)
        finally:
            await downloader.aclose()

    return asyncio.run(main())


def group_members(pgid: int) -> list[int]:
    """Pids cuyo grupo de procesos es ``pgid``, leídos de /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:  # estado, ppid, pgrp
            members.append(int(entry))
    return members


def assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert group_members(pgid) == []


def temp_dirs(temp_root: Path) -> list[str]:
    return sorted(p.name for p in temp_root.iterdir())


# --- descargas correctas ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_direct_media_forced_ytdlp(mode: str, server: TestServer, temp_root: Path, events: Events) -> None:
    url = server.url("/media/clip.mp4")
    assert pick_downloader(url, "ytdlp") == "ytdlp"
    seen: list[tuple[int, int | None]] = []

    result, captured = run(
        lambda d: run_job(d, "direct-1", options(url), temp_root, lambda n, t: seen.append((n, t))),
        make_downloader(mode),
    )

    assert captured.data == MEDIA
    assert result.size == len(MEDIA)
    assert result.sha256 == hashlib.sha256(MEDIA).hexdigest()
    assert captured.mode_of_path is not None and stat.S_ISREG(captured.mode_of_path)
    assert result.path.parent == captured.temp_dir  # el archivo estaba dentro del directorio aislado
    assert result.path.name == "media.mp4" and result.filename == "clip.mp4"  # nombre público: el título
    assert result.extra["extractor"] == "Generic"
    assert result.extra["ytdlp_mode"] == mode
    assert result.extra["ytdlp_version"]
    # Progreso: al menos el final, creciente, y el último con el tamaño completo.
    assert seen, "no progress callback"
    assert seen[-1] == (len(MEDIA), len(MEDIA))
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)
    # El directorio aislado ya no existe.
    assert captured.temp_dir is not None and not captured.temp_dir.exists()
    assert temp_dirs(temp_root) == []
    # Eventos de yt-dlp en el registro.
    started = events.named("ytdlp.started", "direct-1")
    finished = events.named("ytdlp.finished", "direct-1")
    assert len(started) == 1 and len(finished) == 1
    assert started[0]["pid"] > 0 and started[0]["ytdlp_version"] == result.extra["ytdlp_version"]
    assert started[0]["mode"] == mode
    assert finished[0]["returncode"] == 0 and finished[0]["extractor"] == "Generic"
    assert finished[0]["outcome"] == "succeeded"
    assert_group_gone(started[0]["pid"])


@pytest.mark.parametrize("mode", MODES)
def test_html_page_through_generic_extractor(mode: str, server: TestServer, temp_root: Path,
                                             events: Events) -> None:
    url = server.url("/page.html")
    seen: list[tuple[int, int | None]] = []

    result, captured = run(
        lambda d: run_job(d, "page-1", options(url), temp_root, lambda n, t: seen.append((n, t))),
        make_downloader(mode),
    )

    assert captured.data == MEDIA
    assert result.sha256 == hashlib.sha256(MEDIA).hexdigest()
    assert result.extra["extractor"] == "HTML5MediaEmbed"  # el <video> de la página, vía el genérico
    assert "A cat page" in result.filename
    assert seen and seen[-1][0] == len(MEDIA)
    assert temp_dirs(temp_root) == []
    # yt-dlp pidió la página y después el medio.
    assert server.requests_for("/page.html") and server.requests_for("/media/clip.mp4")


def test_concurrent_jobs_through_the_zygote(server: TestServer, temp_root: Path, events: Events) -> None:
    url = server.url("/media/clip.mp4")

    async def both(d: YtdlpDownloader) -> list[tuple[DownloadResult, Captured]]:
        return list(await asyncio.gather(*(run_job(d, f"conc-{i}", options(url), temp_root) for i in range(3))))

    results = run(both, make_downloader("zygote"))
    assert [c.data == MEDIA for _r, c in results] == [True, True, True]
    pids = {e["pid"] for e in events.named("ytdlp.started")}
    assert len(pids) == 3
    assert temp_dirs(temp_root) == []


# --- cancelación y timeout ------------------------------------------------------------------------
async def _cancel_when_downloading(d: YtdlpDownloader, url: str, temp_root: Path, events: Events,
                                   cid: str) -> tuple[int, list[int], bool]:
    """Lanza un trabajo lento, lo cancela cuando ya descarga y devuelve (pgid, miembros, cancelado)."""
    downloading = asyncio.Event()

    def progress(n: int, _total: int | None) -> None:
        if n > 0:
            downloading.set()

    task = asyncio.create_task(run_job(d, cid, options(url), temp_root, progress))
    waiter = asyncio.create_task(downloading.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED, timeout=120)
    assert waiter in done, f"the job never started downloading: {task}"
    pgid = events.named("ytdlp.started", cid)[0]["pid"]
    members = group_members(pgid)  # mientras corre: el proceso lidera su propio grupo
    task.cancel()
    cancelled = False
    try:
        await task
    except asyncio.CancelledError:
        cancelled = True
    return pgid, members, cancelled


@pytest.mark.parametrize("mode", MODES)
def test_cancel_mid_download_kills_the_process_group(mode: str, server: TestServer, temp_root: Path,
                                                     events: Events) -> None:
    url = server.url("/slow/clip.mp4")
    downloader = make_downloader(mode, kill_grace=5.0)
    pgid, members, cancelled = run(
        lambda d: _cancel_when_downloading(d, url, temp_root, events, "cancel-1"), downloader
    )
    assert cancelled, "CancelledError did not propagate"
    assert pgid in members and os.getpid() not in members  # grupo propio, no el de la prueba
    assert_group_gone(pgid)
    assert temp_dirs(temp_root) == []
    finished = events.named("ytdlp.finished", "cancel-1")
    assert finished and finished[0]["outcome"] == "cancelled" and finished[0]["killed"] is True
    assert events.named("job.cancelled", "cancel-1")


def test_cancel_escalates_to_sigkill_when_term_is_ignored(server: TestServer, temp_root: Path,
                                                          events: Events, tmp_path: Path) -> None:
    # Un intérprete envuelto que ignora SIGTERM (SIG_IGN se hereda a través de exec): sólo el
    # KILL tras kill_grace puede pararlo.
    wrapper = tmp_path / "python-ignoring-term"
    wrapper.write_text(f"#!/bin/sh\ntrap '' TERM\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    downloader = YtdlpDownloader(use_zygote=False, kill_grace=1.0, python=str(wrapper))
    url = server.url("/slow/clip.mp4")
    pgid, members, cancelled = run(
        lambda d: _cancel_when_downloading(d, url, temp_root, events, "stubborn-1"), downloader
    )
    assert cancelled and pgid in members
    assert_group_gone(pgid)
    finished = events.named("ytdlp.finished", "stubborn-1")[0]
    assert finished["returncode"] == -signal.SIGKILL  # el TERM no bastó
    assert temp_dirs(temp_root) == []


@pytest.mark.parametrize("mode", MODES)
def test_timeout_kills_the_process_group(mode: str, server: TestServer, temp_root: Path,
                                         events: Events) -> None:
    url = server.url("/slow/clip.mp4")

    async def job(d: YtdlpDownloader) -> DownloadTimeout:
        with pytest.raises(DownloadTimeout) as info:
            await run_job(d, "timeout-1", options(url, timeout=2.0), temp_root)
        return info.value

    error = run(job, make_downloader(mode, kill_grace=5.0))
    assert error.transient is True
    assert error.details["timeout_s"] == 2.0
    pgid = events.named("ytdlp.started", "timeout-1")[0]["pid"]
    assert_group_gone(pgid)
    assert temp_dirs(temp_root) == []
    assert events.named("ytdlp.finished", "timeout-1")[0]["outcome"] == "timeout"


# --- errores ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_404_is_permanent_with_ytdlp_message(mode: str, server: TestServer, temp_root: Path,
                                            events: Events) -> None:
    async def job(d: YtdlpDownloader) -> HTTPClientError:
        with pytest.raises(HTTPClientError) as info:
            await run_job(d, "gone-1", options(server.url("/gone.mp4")), temp_root)
        return info.value

    error = run(job, make_downloader(mode))
    assert error.transient is False
    assert error.details["status"] == 404
    assert "HTTP Error 404" in error.details["ytdlp_message"]
    assert any("HTTP Error 404" in line for line in error.details["stderr_tail"])
    record = error.to_record()
    assert record["kind"] == "http_status" and "HTTP Error 404" in record["message"]
    failed = events.named("job.failed", "gone-1")
    assert failed and failed[0]["error"]["status"] == 404
    assert temp_dirs(temp_root) == []


@pytest.mark.parametrize("mode", MODES)
def test_503_is_transient(mode: str, server: TestServer, temp_root: Path, events: Events) -> None:
    async def job(d: YtdlpDownloader) -> ServerError:
        with pytest.raises(ServerError) as info:
            await run_job(d, "busy-1", options(server.url("/busy.mp4")), temp_root)
        return info.value

    error = run(job, make_downloader(mode))
    assert error.transient is True and error.details["status"] == 503
    assert "HTTP Error 503" in error.details["ytdlp_message"]
    assert temp_dirs(temp_root) == []


def test_page_without_video_is_unsupported(server: TestServer, temp_root: Path, events: Events) -> None:
    async def job(d: YtdlpDownloader) -> UnsupportedUrl:
        with pytest.raises(UnsupportedUrl) as info:
            await run_job(d, "plain-1", options(server.url("/plain.html")), temp_root)
        return info.value

    error = run(job, make_downloader("zygote"))
    assert error.transient is False and "Unsupported URL" in error.details["ytdlp_message"]


def test_connection_refused_is_transient(temp_root: Path, events: Events) -> None:
    # Un puerto de 127.0.0.1 en el que nadie escucha: se reserva y se cierra.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def job(d: YtdlpDownloader) -> Exception:
        with pytest.raises(Exception) as info:
            await run_job(d, "refused-1", options(f"http://127.0.0.1:{port}/x.mp4"), temp_root)
        return info.value

    error = run(job, make_downloader("zygote"))
    assert getattr(error, "transient", None) is True, error
    assert getattr(error, "kind", None) == "connection"


@pytest.mark.parametrize("path", ["/media/clip.mp4", "/nolength.mp4"])
def test_size_limit(path: str, server: TestServer, temp_root: Path, events: Events) -> None:
    # Con Content-Length lo para --max-filesize de yt-dlp; sin él, nuestro control del progreso.
    async def job(d: YtdlpDownloader) -> SizeLimitExceeded:
        with pytest.raises(SizeLimitExceeded) as info:
            await run_job(d, "big-1", options(server.url(path), max_bytes=1000), temp_root)
        return info.value

    error = run(job, make_downloader("zygote"))
    assert error.transient is False
    assert temp_dirs(temp_root) == []
    pgid = events.named("ytdlp.started", "big-1")[0]["pid"]
    assert_group_gone(pgid)


# --- inyección de opciones ------------------------------------------------------------------------
def test_url_starting_with_dash_is_refused_and_inert(server: TestServer, temp_root: Path, tmp_path: Path,
                                                     events: Events) -> None:
    marker = tmp_path / "pwned-by-url"
    url = f"--exec=touch {marker}"

    # 1) El descargador lo rechaza antes de lanzar nada.
    async def job(d: YtdlpDownloader) -> Exception:
        with pytest.raises((UnsupportedUrl, SchemeNotAllowed)) as info:
            await run_job(d, "dash-1", options(url), temp_root)
        return info.value

    error = run(job, make_downloader("subprocess"))
    assert error.transient is False
    assert events.named("ytdlp.started", "dash-1") == []

    # 2) Aun saltándose esa comprobación, la URL no está en argv: va en el archivo de lotes...
    out = tmp_path / "out"
    out.mkdir()
    argv = build_argv(DownloadOptions(url=url, output_path=out))
    assert argv[-1] == f"--batch-file={out / URL_FILE}" and url not in argv
    assert not any(a.startswith("--exec") for a in argv)
    assert (out / URL_FILE).read_text() == url + "\n"
    # ...y yt-dlp de verdad la recibe como URL (no como opción): la rechaza y no ejecuta nada.
    proc = subprocess.run(ytdlp_command(argv, guard=False), cwd=out, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert f"'{url}' is not a valid URL" in proc.stderr
    assert not marker.exists()

    # 3) Una URL http con espacios que intenta colar opciones tampoco pasa.
    sneaky = server.url("/media/clip.mp4") + f" --exec touch {marker}"
    with pytest.raises(UnsupportedUrl):
        run(lambda d: run_job(d, "dash-2", options(sneaky), temp_root), make_downloader("subprocess"))
    assert not marker.exists()


@pytest.mark.parametrize("mode", MODES)
def test_format_cannot_inject_options(mode: str, server: TestServer, temp_root: Path, tmp_path: Path,
                                      events: Events) -> None:
    marker = tmp_path / "pwned-by-format"
    evil = f"best --exec 'touch {marker}'"
    opts = options(server.url("/media/clip.mp4"), format=evil)
    opts.output_path = tmp_path
    argv = build_argv(opts)
    assert f"--format={evil}" in argv  # un único elemento de argv
    assert "--exec" not in argv and not any(a.startswith("--exec") for a in argv)

    async def job(d: YtdlpDownloader) -> FormatUnavailable:
        with pytest.raises(FormatUnavailable) as info:
            await run_job(d, "fmt-1", options(server.url("/media/clip.mp4"), format=evil), temp_root)
        return info.value

    error = run(job, make_downloader(mode))
    assert error.transient is False and "Requested format is not available" in error.details["ytdlp_message"]
    assert not marker.exists()


def test_only_designed_job_fields_reach_ytdlp(tmp_path: Path) -> None:
    opts = DownloadOptions(url="https://example.org/v", output_path=tmp_path, format="best[height<=720]",
                           max_bytes=5000, filename="x.mp4", headers={"Authorization": "secret"},
                           sha256="0" * 64)
    argv = build_argv(opts)
    joined = "\n".join(argv)
    assert "secret" not in joined and "x.mp4" not in joined and "0" * 64 not in joined
    assert "https://example.org/v" not in joined  # la URL va en el archivo de lotes (0600)
    # Authorization no está en forward_headers: no llega a yt-dlp ni siquiera en su configuración.
    assert not any(a.startswith("--config-locations") for a in argv)
    assert "secret" not in "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert "--ignore-config" in argv and "--no-playlist" in argv and "--max-filesize=5000" in argv
    assert f"--paths=home:{tmp_path}" in argv and f"--paths=temp:{tmp_path}/.ytdlp" in argv
    assert "--format=best[height<=720]" in argv
    assert "--yes-playlist" in build_argv(DownloadOptions(url="https://e/v", output_path=tmp_path, playlist=True))


# --- red privada ----------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_private_address_refused_when_not_allowed(host: str, server: TestServer, temp_root: Path,
                                                  events: Events) -> None:
    url = f"http://{host}:{server.port}/media/clip.mp4"
    before = len(server.requests)

    async def job(d: YtdlpDownloader) -> PrivateAddressRefused:
        with pytest.raises(PrivateAddressRefused) as info:
            await run_job(d, "private-1", options(url, allow_private_networks=False), temp_root)
        return info.value

    error = run(job, make_downloader("subprocess"))
    assert error.transient is False
    assert len(server.requests) == before  # ni una petición llegó al servidor
    assert events.named("ytdlp.started", "private-1") == []  # yt-dlp ni siquiera arrancó
    assert temp_dirs(temp_root) == []


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
                                     "fe80::1", "fd00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                                     "64:ff9b::a00:1", "fe80::1%lo"])
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(address) is True


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_forbidden_address(address) is False


def test_network_guard_stops_ytdlp_inside_the_process(server: TestServer, tmp_path: Path) -> None:
    # La comprobación previa sólo ve el primer salto; la guarda vigila cada connect() dentro de
    # yt-dlp (redirecciones incluidas). Aquí se lanza yt-dlp con la guarda contra 127.0.0.1.
    redirect = server.add("/redirect.mp4", Behavior(redirect_to=server.url("/media/clip.mp4")))
    before = len(server.requests)
    argv = build_argv(DownloadOptions(url=redirect, output_path=tmp_path))
    proc = subprocess.run(ytdlp_command(argv, guard=True), cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert FORBIDDEN_MESSAGE in proc.stderr
    assert len(server.requests) == before  # el connect() se rechazó: nada llegó al servidor
    error = classify_failure(proc.returncode, proc.stderr.splitlines())
    assert isinstance(error, PrivateAddressRefused) and error.transient is False


def test_helper_script_loads_the_one_netguard_without_the_daemon_package(tmp_path: Path) -> None:
    # El proceso auxiliar se ejecuta por ruta (``python -P .../zygote_server.py``): carga
    # netguard.py desde su archivo y no paga la importación del paquete daemon (~0,1 s por trabajo).
    from daemon.downloaders.ytdlp.argv import ZYGOTE_SCRIPT
    from daemon.downloaders.ytdlp.extractors import ytdlp_version

    proc = subprocess.run([sys.executable, "-X", "importtime", *ytdlp_command(["--version"], guard=True)[1:]],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ytdlp_version()
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "yt_dlp" in imported
    assert not [name for name in imported if name == "daemon" or name.startswith("daemon.")]
    # La guarda que instala es la de daemon/downloaders/netguard.py, no una copia.
    probe = (
        "import runpy, sys\n"
        f"g = runpy.run_path({str(ZYGOTE_SCRIPT)!r}, run_name='probe')\n"
        "print(g['_netguard'].__file__)\n"
        "print(sorted(m for m in sys.modules if m == 'daemon' or m.startswith('daemon.')))\n"
    )
    proc = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == [str(Path(netguard.__file__).resolve()), "[]"]


def test_network_guard_in_zygote_children(server: TestServer, tmp_path: Path) -> None:
    from daemon.downloaders.ytdlp.zygote_client import ZygoteClient

    async def main() -> tuple[int | None, list[str]]:
        client = ZygoteClient(sys.executable)
        try:
            assert await client.ensure_started()
            argv = build_argv(DownloadOptions(url=server.url("/media/clip.mp4"), output_path=tmp_path))
            child = await client.spawn(argv, tmp_path, guard=True)
            err = (await child.stderr.read()).decode()
            await child.stdout.read()
            info = await child.wait()
            child.close()
            return info.returncode, err.splitlines()
        finally:
            await client.aclose()

    before = len(server.requests)
    returncode, stderr = asyncio.run(main())
    assert returncode == 1
    assert any(FORBIDDEN_MESSAGE in line for line in stderr)
    assert len(server.requests) == before


# --- zigoto: caída y vuelta a la etapa 1 ---------------------------------------------------------
def test_zygote_killed_between_jobs_is_replaced(server: TestServer, temp_root: Path, events: Events) -> None:
    url = server.url("/media/clip.mp4")

    async def main(d: YtdlpDownloader) -> tuple[int, DownloadResult, Captured]:
        await run_job(d, "z-1", options(url), temp_root)
        first = d.zygote_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        # Esperar a que muera de verdad (sin asumir tiempos): el zigoto es hijo nuestro.
        while d._zygote.popen is not None and d._zygote.popen.poll() is None:
            await asyncio.sleep(0.01)
        result, captured = await run_job(d, "z-2", options(url), temp_root)
        return first, result, captured

    first, result, captured = run(main, make_downloader("zygote"))
    assert captured.data == MEDIA
    assert events.named("ytdlp.zygote_unavailable")
    assert result.extra["ytdlp_mode"] in ("zygote", "subprocess")
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)


def test_zygote_unavailable_falls_back_to_subprocess(server: TestServer, temp_root: Path, tmp_path: Path,
                                                     events: Events) -> None:
    # Un intérprete que se niega a ser zigoto pero ejecuta yt-dlp con normalidad.
    wrapper = tmp_path / "python-no-zygote"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = serve ] && exit 3; done\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    downloader = YtdlpDownloader(use_zygote=True, python=str(wrapper))
    result, captured = run(lambda d: run_job(d, "fallback-1", options(server.url("/media/clip.mp4")),
                                             temp_root), downloader)
    assert captured.data == MEDIA
    assert result.extra["ytdlp_mode"] == "subprocess"
    assert events.named("ytdlp.zygote_unavailable")


def test_zygote_stops_with_aclose(server: TestServer, temp_root: Path, events: Events) -> None:
    downloader = make_downloader("zygote")

    async def main() -> int | None:
        assert await downloader.prestart()
        pid = downloader.zygote_pid
        await downloader.aclose()
        return pid

    pid = asyncio.run(main())
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert events.named("ytdlp.zygote_stopped")


# --- elección de descargador ----------------------------------------------------------------------
def test_pick_downloader_without_network_or_processes() -> None:
    started = time.perf_counter()
    assert pick_downloader("https://www.youtube.com/watch?v=dQw4w9WgXcQ") == "ytdlp"
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert pick_downloader("https://example.org/file.bin") == "http"
    assert pick_downloader("https://vimeo.com/76979871") == "ytdlp"
    assert pick_downloader("http://127.0.0.1:8080/media/clip.mp4") == "http"
    later = (time.perf_counter() - started) / 3
    assert pick_downloader("https://example.org/file.bin", "ytdlp") == "ytdlp"
    assert pick_downloader("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "http") == "http"
    with pytest.raises(ValueError):
        pick_downloader("https://example.org/", "curl")
    print(f"pick_downloader: first call {first * 1000:.0f} ms, then {later * 1000:.2f} ms per URL")


# --- clasificación (mensajes reales de yt-dlp) ----------------------------------------------------
@pytest.mark.parametrize(("line", "expected", "transient"), [
    ("ERROR: [generic] gone: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: "
     "Not Found>)", HTTPClientError, False),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable", ServerError, True),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests", ServerError, True),
    ("ERROR: Unsupported URL: https://example.org/", UnsupportedUrl, False),
    ("ERROR: [youtube] dQw4w9WgXcQ: Video unavailable", MediaUnavailable, False),
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", MediaUnavailable, False),
    ("ERROR: [vimeo] 1: This video has been removed", MediaUnavailable, False),
    ("ERROR: [generic] clip: Requested format is not available. Use --list-formats", FormatUnavailable, False),
    ("ERROR: [generic] x: Unable to download webpage: [Errno 111] Connection refused", None, True),
    ("ERROR: [generic] x: Unable to download webpage: The read operation timed out", DownloadTimeout, True),
    ("ERROR: unable to write data: [Errno 28] No space left on device", None, False),
])
def test_classify_failure(line: str, expected: type | None, transient: bool) -> None:
    error = classify_failure(1, ["WARNING: something harmless", line])
    if expected is not None:
        assert isinstance(error, expected)
    assert error.transient is transient
    assert error.details["ytdlp_message"] == line


def test_classify_failure_redacts_credentials_and_handles_signals() -> None:
    error = classify_failure(1, ["ERROR: [generic] x: HTTP Error 403: Forbidden https://user:pw@example.org/v"])
    assert "pw@" not in str(error.to_record())
    crashed = classify_failure(-9, [])
    assert isinstance(crashed, YtdlpCrashed) and crashed.transient
    assert isinstance(classify_failure(2, ["yt-dlp: error: no such option: --bogus"]), PermanentDownloadError)
    too_big = classify_failure(0, [], ["[download] File is larger than max-filesize (2 bytes > 1 bytes). Aborting."])
    assert isinstance(too_big, SizeLimitExceeded)
