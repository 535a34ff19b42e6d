"""HttpDownloader dentro de DownloadLifecycle.execute(), en proceso, contra el servidor de pruebas real.

Cada prueba corre una descarga aislada (``videonote_dl_<id>`` bajo la raíz temporal de la
prueba) y comprueba su resultado, lo que vio el servidor (cabeceras Range/If-Range, número de
peticiones) y que el directorio temporal desaparece al terminar, pase lo que pase.
Los reintentos los hace aquí un bucle mínimo (sin esperas): el gestor real se prueba aparte.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.downloaders.base import (
    DownloadError,
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    HTTPClientError,
    IncompleteBody,
    PrivateAddressRefused,
    ProgressCallback,
    SchemeNotAllowed,
    ServerError,
    SizeLimitExceeded,
    TooManyRedirects,
    TransientDownloadError,
)
from daemon.downloaders.download_lifecycle import DownloadLifecycle, LifecycleState
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.names import safe_name
from tests.conftest import EventLog
from tests.support.http_server import Behavior, TestServer

MiB = 1024 * 1024


@dataclass
class Outcome:
    """Lo que dejó una descarga: el resultado, el contenido publicado y los errores por intento."""

    result: DownloadResult | None = None
    data: bytes | None = None
    error: BaseException | None = None
    attempt_errors: list[DownloadError] = field(default_factory=list)
    lifecycle: DownloadLifecycle | None = None


def run_download(temp_root: Path, job_id: str, options: DownloadOptions, attempts: int = 1) -> Outcome:
    """Corre ``options`` con HttpDownloader dentro de DownloadLifecycle; reintenta lo transitorio."""
    outcome = Outcome()

    async def main() -> None:
        downloader = HttpDownloader(fsync=False)

        async def download(opts: DownloadOptions, progress: ProgressCallback | None) -> DownloadResult:
            for attempt in range(1, attempts + 1):
                try:
                    result = await downloader.download(opts, progress)
                except TransientDownloadError as exc:
                    outcome.attempt_errors.append(exc)
                    if attempt == attempts:
                        raise
                    lifecycle.begin_attempt()
                    continue
                # El directorio aislado se borra al salir: se lee el archivo antes.
                outcome.data = result.path.read_bytes()
                assert result.path.parent == opts.output_path, "the file must stay in the isolated dir"
                return result
            raise AssertionError("unreachable")

        lifecycle = DownloadLifecycle(job_id, options, base_temp_dir=temp_root)
        outcome.lifecycle = lifecycle
        try:
            outcome.result = await lifecycle.execute(download)
        except DownloadError as exc:
            outcome.error = exc
        finally:
            await downloader.close()

    asyncio.run(main())
    return outcome


def temp_dirs(temp_root: Path) -> list[str]:
    return sorted(p.name for p in temp_root.glob("videonote_dl_*")) if temp_root.exists() else []


def opts(url: str, **kwargs: Any) -> DownloadOptions:
    kwargs.setdefault("allow_private_networks", True)
    kwargs.setdefault("timeout", 30.0)
    return DownloadOptions(url=url, **kwargs)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- éxito y nombres ----------------------------------------------------------------------------
def test_plain_download_streams_to_the_isolated_dir(temp_root: Path, test_server: TestServer,
                                                     event_log: EventLog) -> None:
    data = os.urandom(3 * MiB + 5)
    url = test_server.add("/videos/clip.bin", Behavior(data=data))
    out = run_download(temp_root, "plain", opts(url))
    assert out.error is None and out.result is not None
    assert out.data == data
    assert out.result.sha256 == sha(data) and out.result.size == len(data)
    assert out.result.filename == "clip.bin"
    assert out.result.resumed is False
    assert out.lifecycle is not None and out.lifecycle.state is LifecycleState.SUCCEEDED
    assert temp_dirs(temp_root) == []
    assert [e["event"] for e in event_log.read() if e["event"].startswith("tempdir.")] == [
        "tempdir.created", "tempdir.removed"]


def test_content_disposition_name_is_sanitised(temp_root: Path, test_server: TestServer) -> None:
    data = b"hello" * 1000
    url = test_server.add("/dl", Behavior(data=data,
                                          headers={"Content-Disposition": 'attachment; filename="../../etc/passwd"'}))
    out = run_download(temp_root, "dispo", opts(url))
    assert out.result is not None and out.result.filename == "passwd"
    assert out.data == data
    assert temp_dirs(temp_root) == []


@pytest.mark.parametrize(("raw", "expected"), [
    ("../../etc/shadow", "shadow"), ("a\x00b\nc", "a_b_c"), ("..", "download"), ("", "download"),
    ("C:\\evil\\x.exe", "x.exe"), (".hidden", "hidden"),
])
def test_server_names_are_sanitized(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_relative_redirect_is_followed(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(100_000)
    test_server.add("/real.bin", Behavior(data=data))
    url = test_server.add("/moved", Behavior(redirect_to="/real.bin", status=301))
    out = run_download(temp_root, "redir", opts(url))
    assert out.result is not None and out.data == data
    assert out.result.filename == "real.bin"
    assert [r.path for r in test_server.requests] == ["/moved", "/real.bin"]
    assert temp_dirs(temp_root) == []


# --- reanudación -------------------------------------------------------------------------------
def test_reset_mid_body_resumes_with_range(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(4 * MiB)
    # El servidor va despacio antes del corte: lo enviado llega al cliente antes del RST.
    behavior = Behavior(data=data, reset_after=2 * MiB, reset_times=1, rate=16 * MiB, chunk=64 * 1024)
    url = test_server.add("/reset.bin", behavior)
    out = run_download(temp_root, "reset", opts(url), attempts=3)
    assert out.error is None, out.error
    assert [type(e).__name__ for e in out.attempt_errors] in (["ConnectionFailed"], ["IncompleteBody"])
    requests = test_server.requests_for("/reset.bin")
    assert len(requests) == 2
    assert "Range" not in requests[0].headers
    range_header = requests[1].headers.get("Range", "")
    assert range_header.startswith("bytes=") and range_header.endswith("-")
    offset = int(range_header[len("bytes="):-1])
    assert 0 < offset <= 2 * MiB
    # If-Range lleva el validador (ETag) de la primera respuesta.
    assert requests[1].headers.get("If-Range") == '"' + sha(data)[:16] + '"'
    assert out.result is not None and out.result.resumed is True
    assert out.data == data and out.result.sha256 == sha(data)
    assert temp_dirs(temp_root) == []


def test_server_ignoring_range_starts_over(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(3 * MiB)
    behavior = Behavior(data=data, reset_after=MiB, reset_times=1, rate=16 * MiB, ignore_range=True)
    url = test_server.add("/norange.bin", behavior)
    out = run_download(temp_root, "norange", opts(url), attempts=3)
    assert out.error is None, out.error
    requests = test_server.requests_for("/norange.bin")
    assert len(requests) == 2 and requests[1].headers.get("Range", "").startswith("bytes=")
    assert out.result is not None and out.result.resumed is False
    assert out.data == data and out.result.sha256 == sha(data)
    assert temp_dirs(temp_root) == []


def test_changed_file_on_server_starts_over(temp_root: Path, test_server: TestServer) -> None:
    """If-Range con un ETag viejo: el servidor manda el archivo nuevo entero (200) y no se mezclan."""
    old = os.urandom(2 * MiB)
    new = os.urandom(2 * MiB)
    behavior = Behavior(data=old, reset_after=MiB, reset_times=1, rate=16 * MiB)

    def swap(_handler: http.server.BaseHTTPRequestHandler, hit: int) -> bool:
        if hit == 2:
            behavior.data = new  # el archivo cambió entre intentos: otro ETag
        return False

    behavior.handler = swap
    url = test_server.add("/changing.bin", behavior)
    out = run_download(temp_root, "changed", opts(url), attempts=3)
    assert out.error is None, out.error
    assert test_server.requests_for("/changing.bin")[1].headers.get("If-Range") == '"' + sha(old)[:16] + '"'
    assert out.result is not None and out.result.resumed is False
    assert out.data == new
    assert temp_dirs(temp_root) == []


def test_range_not_satisfiable_on_resume_starts_over(temp_root: Path, test_server: TestServer) -> None:
    """Un 416 a la petición de reanudación (parte local inservible) no es un fallo permanente."""
    data = os.urandom(MiB)
    behavior = Behavior(data=data, reset_after=MiB // 2, reset_times=1, rate=16 * MiB)

    def refuse_range(handler: http.server.BaseHTTPRequestHandler, hit: int) -> bool:
        if "Range" in handler.headers:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        return False

    behavior.handler = refuse_range
    url = test_server.add("/r416.bin", behavior)
    out = run_download(temp_root, "r416", opts(url), attempts=3)
    assert out.error is None, out.error
    requests = test_server.requests_for("/r416.bin")
    assert [("Range" in r.headers) for r in requests] == [False, True, False]
    assert out.data == data
    assert temp_dirs(temp_root) == []


def _send_206(handler: http.server.BaseHTTPRequestHandler, data: bytes, start: int, end: int) -> None:
    body = data[start:end + 1]
    handler.send_response(206)
    handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("ETag", '"fixed"')
    handler.end_headers()
    handler.wfile.write(body)


def test_206_from_an_unexpected_offset_is_not_mixed_in(temp_root: Path, test_server: TestServer) -> None:
    """Al pedir ``bytes=N-`` el servidor manda otro trozo (desde M): no se escribe como si fuera el
    principio; se descarta la parte local y el mismo intento vuelve a pedir el archivo de cero."""
    data = os.urandom(MiB)
    behavior = Behavior(data=data, etag='"fixed"', reset_after=MiB // 2, reset_times=1, rate=16 * MiB)

    def wrong_range(handler: http.server.BaseHTTPRequestHandler, hit: int) -> bool:
        if hit == 2:
            _send_206(handler, data, 1000, len(data) - 1)
            return True
        return False

    behavior.handler = wrong_range
    url = test_server.add("/wrong-range.bin", behavior)
    out = run_download(temp_root, "wrongrange", opts(url), attempts=3)
    assert out.error is None, out.error
    assert len(out.attempt_errors) == 1  # sólo el corte del primer intento
    assert out.result is not None and "starts at byte 1000" in out.result.extra["restarted"]
    requests = test_server.requests_for("/wrong-range.bin")
    assert len(requests) == 3 and "Range" in requests[1].headers and "Range" not in requests[2].headers
    assert out.data == data
    assert temp_dirs(temp_root) == []


def test_206_with_the_whole_file_from_zero_is_accepted(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(300_000)

    def whole_as_206(handler: http.server.BaseHTTPRequestHandler, _hit: int) -> bool:
        _send_206(handler, data, 0, len(data) - 1)
        return True

    url = test_server.add("/whole-206.bin", Behavior(handler=whole_as_206))
    out = run_download(temp_root, "whole206", opts(url))
    assert out.error is None, out.error
    assert out.data == data and out.result is not None and out.result.resumed is False


def test_206_with_only_part_of_the_file_never_succeeds(temp_root: Path, test_server: TestServer) -> None:
    """Un 206 ``bytes 0-99/1000`` a una petición sin Range no es el archivo: nunca se da por bueno."""
    data = os.urandom(1000)

    def head_only(handler: http.server.BaseHTTPRequestHandler, _hit: int) -> bool:
        _send_206(handler, data, 0, 99)
        return True

    url = test_server.add("/head-206.bin", Behavior(handler=head_only))
    out = run_download(temp_root, "head206", opts(url), attempts=2)
    assert isinstance(out.error, IncompleteBody), out.error
    assert out.data is None
    assert temp_dirs(temp_root) == []


# --- cuerpos que no cuadran con Content-Length ------------------------------------------------
def test_body_shorter_than_content_length_is_transient(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(MiB + 3)
    url = test_server.add("/short.bin", Behavior(data=data, short_by=1000, short_times=1))
    out = run_download(temp_root, "short", opts(url), attempts=3)
    assert out.error is None, out.error
    assert len(out.attempt_errors) == 1 and isinstance(out.attempt_errors[0], IncompleteBody)
    assert out.attempt_errors[0].transient
    assert out.data == data
    assert temp_dirs(temp_root) == []


def test_body_always_short_fails_as_incomplete(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(200_000)
    url = test_server.add("/always-short.bin", Behavior(data=data, short_by=10))
    out = run_download(temp_root, "ashort", opts(url), attempts=2)
    assert isinstance(out.error, IncompleteBody)
    assert out.lifecycle is not None and out.lifecycle.state is LifecycleState.FAILED
    assert temp_dirs(temp_root) == []


def test_body_longer_than_content_length_keeps_the_declared_length(temp_root: Path,
                                                                    test_server: TestServer) -> None:
    data = os.urandom(MiB)
    url = test_server.add("/long.bin", Behavior(data=data, extra_bytes=5000))
    out = run_download(temp_root, "long", opts(url))
    assert out.error is None, out.error
    assert out.result is not None and out.result.size == len(data)
    assert out.data == data and out.result.sha256 == sha(data)
    assert temp_dirs(temp_root) == []


# --- servidores callados ------------------------------------------------------------------------
def test_server_silent_before_headers_is_a_timeout(temp_root: Path, test_server: TestServer) -> None:
    url = test_server.add("/stall.bin", Behavior(data=b"x" * 1000, stall=4.0))
    out = run_download(temp_root, "stall", opts(url, timeout=1.0))
    assert isinstance(out.error, DownloadTimeout), out.error
    assert out.error.to_record()["kind"] == "timeout" and out.error.transient
    assert temp_dirs(temp_root) == []


def test_server_silent_mid_body_is_a_timeout_and_keeps_what_arrived(temp_root: Path,
                                                                     test_server: TestServer) -> None:
    release = threading.Event()
    data = os.urandom(MiB)
    behavior = Behavior(data=data, hold=release, hold_after=300_000, hold_times=1)
    url = test_server.add("/hold.bin", behavior)
    try:
        out = run_download(temp_root, "hold", opts(url, timeout=1.0), attempts=2)
    finally:
        release.set()
    assert out.error is None, out.error
    assert len(out.attempt_errors) == 1 and isinstance(out.attempt_errors[0], DownloadTimeout)
    assert out.attempt_errors[0].to_record()["received"] == 300_000
    # El segundo intento reanuda justo donde se quedó el primero.
    assert test_server.requests_for("/hold.bin")[1].headers.get("Range") == "bytes=300000-"
    assert out.data == data
    assert temp_dirs(temp_root) == []


# --- límites de tamaño ------------------------------------------------------------------------
def test_content_length_over_max_bytes_fails_before_reading_the_body(temp_root: Path,
                                                                      test_server: TestServer) -> None:
    """El servidor anuncia 5 GB y no manda ni un byte: si el cliente intentara leer el cuerpo,
    el resultado sería un timeout, no ``too_large``."""
    release = threading.Event()
    body_sent: list[int] = []

    def headers_only(handler: http.server.BaseHTTPRequestHandler, _hit: int) -> bool:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(5 * 10**9))
        handler.end_headers()
        handler.wfile.flush()
        release.wait(60)
        body_sent.append(0)
        handler.close_connection = True
        return True

    url = test_server.add("/huge.bin", Behavior(handler=headers_only))
    try:
        out = run_download(temp_root, "huge", opts(url, max_bytes=MiB, timeout=20.0), attempts=3)
    finally:
        release.set()
    assert isinstance(out.error, SizeLimitExceeded), out.error
    record = out.error.to_record()
    assert record["kind"] == "too_large" and record["size"] == 5 * 10**9 and record["limit"] == MiB
    assert out.attempt_errors == []  # permanente: ningún reintento
    assert len(test_server.requests_for("/huge.bin")) == 1
    assert temp_dirs(temp_root) == []


def test_growing_body_without_length_stops_at_max_bytes(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(4 * MiB)
    url = test_server.add("/grow.bin", Behavior(data=data, no_content_length=True))
    out = run_download(temp_root, "grow", opts(url, max_bytes=MiB))
    assert isinstance(out.error, SizeLimitExceeded), out.error
    assert out.error.to_record()["kind"] == "too_large"
    assert temp_dirs(temp_root) == []


def test_body_without_length_within_limit_is_fine(temp_root: Path, test_server: TestServer) -> None:
    data = os.urandom(MiB)
    url = test_server.add("/nolen.bin", Behavior(data=data, no_content_length=True))
    out = run_download(temp_root, "nolen", opts(url, max_bytes=2 * MiB))
    assert out.error is None and out.data == data
    assert temp_dirs(temp_root) == []


# --- estados HTTP, redirecciones y esquemas -----------------------------------------------------
def test_404_is_permanent(temp_root: Path, test_server: TestServer) -> None:
    out = run_download(temp_root, "missing", opts(test_server.url("/nope")), attempts=3)
    assert isinstance(out.error, HTTPClientError) and not out.error.transient
    assert out.error.to_record()["status"] == 404
    assert len(test_server.requests) == 1
    assert temp_dirs(temp_root) == []


def test_503_with_retry_after_is_transient_and_carries_the_delay(temp_root: Path,
                                                                  test_server: TestServer) -> None:
    url = test_server.add("/busy", Behavior(data=b"x", fail_statuses=[503], retry_after="7"))
    out = run_download(temp_root, "busy", opts(url), attempts=1)
    assert isinstance(out.error, ServerError) and out.error.transient
    assert out.error.retry_after == 7.0 and out.error.to_record()["status"] == 503
    assert temp_dirs(temp_root) == []


def test_redirect_loop_fails(temp_root: Path, test_server: TestServer) -> None:
    url = test_server.add("/loop", Behavior(redirect_to="/loop"))
    out = run_download(temp_root, "loop", opts(url, max_redirects=5))
    assert isinstance(out.error, TooManyRedirects)
    assert out.error.to_record()["kind"] == "too_many_redirects"
    assert len(test_server.requests_for("/loop")) == 6  # la original y 5 saltos
    assert temp_dirs(temp_root) == []


def test_redirect_to_a_scheme_not_allowed_is_refused(temp_root: Path, test_server: TestServer) -> None:
    url = test_server.add("/to-ftp", Behavior(redirect_to="ftp://127.0.0.1/x"))
    out = run_download(temp_root, "toftp", opts(url))
    assert isinstance(out.error, SchemeNotAllowed)
    assert temp_dirs(temp_root) == []


# --- redes privadas y credenciales --------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_address_refused_at_connect_time(temp_root: Path, test_server: TestServer, host: str) -> None:
    test_server.add("/secret.bin", Behavior(data=b"internal"))
    url = f"http://{host}:{test_server.port}/secret.bin"
    out = run_download(temp_root, "ssrf", DownloadOptions(url=url, timeout=10.0), attempts=3)
    assert isinstance(out.error, PrivateAddressRefused), out.error
    assert out.error.to_record()["kind"] == "private_address"
    assert out.attempt_errors == []
    assert test_server.requests == []  # nunca se llegó a conectar
    assert temp_dirs(temp_root) == []


def test_redirect_hop_to_private_address_is_refused(temp_root: Path, test_server: TestServer) -> None:
    """Un salto a loopback se comprueba igual que la URL original (aquí ambas son locales:
    se prueba que con la red privada prohibida no sale ni la primera petición)."""
    test_server.add("/inner", Behavior(data=b"x"))
    url = test_server.add("/hop", Behavior(redirect_to=test_server.url("/inner")))
    out = run_download(temp_root, "hop", DownloadOptions(url=url.replace("127.0.0.1", "localhost")))
    assert isinstance(out.error, PrivateAddressRefused)
    assert test_server.requests == []


def test_credentials_in_url_never_reach_logs_or_result(temp_root: Path, test_server: TestServer,
                                                        event_log: EventLog) -> None:
    data = os.urandom(50_000)
    test_server.add("/private/clip.bin", Behavior(data=data))
    url = f"http://alice:s3cr3t-pw@127.0.0.1:{test_server.port}/private/clip.bin"
    out = run_download(temp_root, "creds", opts(url))
    assert out.error is None and out.data == data
    assert out.result is not None and "s3cr3t" not in (out.result.final_url or "")
    # Las credenciales viajan como Basic auth (no en la ruta).
    request = test_server.requests_for("/private/clip.bin")[0]
    assert request.headers.get("Authorization", "").startswith("Basic ")
    assert b"s3cr3t" not in event_log.path.read_bytes()
    assert temp_dirs(temp_root) == []


@pytest.mark.parametrize("how", ["url_credentials", "job_headers"])
def test_credentials_are_not_sent_to_another_origin(temp_root: Path, test_server: TestServer, how: str) -> None:
    """Una redirección a otro origen (otro puerto) no lleva ni las credenciales de la URL ni las
    cabeceras del trabajo (salvo las de ``forward_headers``); al origen de la URL sí llegan."""
    data = os.urandom(20_000)
    with TestServer() as other:
        other.add("/elsewhere.bin", Behavior(data=data))
        test_server.add("/jump", Behavior(redirect_to=other.url("/elsewhere.bin")))
        if how == "url_credentials":
            options = opts(f"http://alice:pw-123@127.0.0.1:{test_server.port}/jump",
                           headers={"X-Trace": "1", "X-Api-Key": "S"}, forward_headers=("x-trace",))
        else:
            options = opts(test_server.url("/jump"), headers={"Authorization": "Bearer tok-456",
                                                              "Cookie": "session=abc", "X-Trace": "1",
                                                              "X-Api-Key": "S"},
                           forward_headers=("X-Trace",))
        out = run_download(temp_root, "xorigin", options)
        assert out.error is None, out.error
        assert out.data == data
        first = test_server.requests_for("/jump")[0].headers
        assert first.get("Authorization", "").startswith("Basic " if how == "url_credentials" else "Bearer ")
        (second,) = other.requests_for("/elsewhere.bin")
        assert "Authorization" not in second.headers and "Cookie" not in second.headers
        assert "X-Api-Key" not in second.headers and first.get("X-Api-Key") == "S"
        assert second.headers.get("X-Trace") == "1"  # la que el trabajo deja pasar
    assert temp_dirs(temp_root) == []
