"""Catálogo de servidores que se portan mal, para el corpus de tests/test_hostile_servers.py.

Cada entrada registra una o más rutas en los servidores reales de ``Scene`` (127.0.0.1 y, como
otro origen, 127.0.0.2) y devuelve la URL del trabajo. Las que rompen HTTP escriben bytes crudos
en el socket (``raw``); las demás ajustan ``Behavior``. Lo que debe pasar con cada una (bytes
publicados o tipo de error) está en la tabla de la prueba, no aquí.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.http_server import Behavior, TestServer

__all__ = ["CATALOGUE", "V1", "V2", "Scene", "raw"]

# Contenidos deterministas: V1 (la versión que se empieza a bajar) y V2 (la que la sustituye).
V1 = hashlib.shake_256(b"videonote v1").digest(200_000)
V2 = hashlib.shake_256(b"videonote v2").digest(200_000)
GZIPPED = gzip.compress(V1[:50_000], mtime=0)
CUT = 100_000  # dónde se corta la primera respuesta en los casos de reanudación
LM1 = "Mon, 02 Nov 2026 10:00:00 GMT"
LM2 = "Tue, 03 Nov 2026 11:00:00 GMT"

Handler = http.server.BaseHTTPRequestHandler


@dataclass
class Scene:
    """Los servidores de un caso: ``server`` (el origen del trabajo) y ``other`` (otro origen)."""

    server: TestServer
    other: TestServer
    tls: TestServer | None = None
    release: threading.Event = field(default_factory=threading.Event)  # suelta los servidores colgados


def raw(handler: Handler, *parts: bytes, pause: float = 0.0) -> bool:
    """Escribe ``parts`` tal cual en el socket (con ``pause`` entre ellas) y cierra la conexión."""
    handler.close_connection = True
    try:
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            handler.wfile.write(part)
            handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass
    return True


def _head(status: str, *headers: str) -> bytes:
    return ("HTTP/1.1 " + status + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1")


def _route(scene: Scene, path: str, handler: Callable[[Handler, int], bool]) -> str:
    return scene.server.add(path, Behavior(handler=handler))


# --- reanudación: el primer intento se corta en CUT; el segundo recibe la mala respuesta -----------
def _resumable(scene: Scene, path: str, second: Callable[[Behavior, Handler, int], bool],
               **kwargs: object) -> str:
    """V1 con un corte (RST) tras ``CUT`` bytes en la primera petición; desde la segunda, ``second``."""
    behavior = Behavior(data=V1, reset_after=CUT, reset_times=1, rate=8 * 1024 * 1024, chunk=16 * 1024,
                        **kwargs)  # type: ignore[arg-type]

    def handler(h: Handler, hit: int) -> bool:
        return hit >= 2 and second(behavior, h, hit)

    behavior.handler = handler
    return scene.server.add(path, behavior)


def _send_206(h: Handler, body: bytes, content_range: str, etag: str | None, length: int | None = None) -> bool:
    headers = [f"Content-Range: {content_range}", f"Content-Length: {len(body) if length is None else length}"]
    if etag:
        headers.append(f"ETag: {etag}")
    return raw(h, _head("206 Partial Content", *headers), body)


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def resume_behind_cross_origin_redirect(scene: Scene) -> str:
    """El archivo vive en otro origen (un CDN): el reintento reanuda allí, sin las cabeceras del trabajo."""
    scene.other.add("/cdn/file.bin", Behavior(data=V1, reset_after=CUT, reset_times=1, rate=8 * 1024 * 1024,
                                              chunk=16 * 1024))
    return _redirect(scene, "/r/to-cdn", scene.other.url("/cdn/file.bin"))


def resume_control(scene: Scene) -> str:
    return _resumable(scene, "/r/control.bin", lambda b, h, hit: False)


def if_range_ignored_new_etag(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        behavior.data, behavior.ignore_if_range = V2, True  # cambió el archivo y se ignora If-Range
        return False

    return _resumable(scene, "/r/new-etag.bin", second)


def if_range_ignored_new_last_modified(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        behavior.data, behavior.last_modified, behavior.ignore_if_range = V2, LM2, True
        return False

    return _resumable(scene, "/r/new-lm.bin", second, no_etag=True, last_modified=LM1)


def range_206_wrong_start(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        if "Range" not in h.headers:
            return False
        return _send_206(h, V1[1000:], f"bytes 1000-{len(V1) - 1}/{len(V1)}", _etag(V1))

    return _resumable(scene, "/r/wrong-start.bin", second)


def range_206_wrong_total(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        if "Range" not in h.headers:
            return False
        start = int(h.headers["Range"][6:-1])
        body = V1[start:] + b"\0" * 1000
        return _send_206(h, body, f"bytes {start}-{len(V1) + 999}/{len(V1) + 1000}", _etag(V1))

    return _resumable(scene, "/r/wrong-total.bin", second)


def range_206_unknown_total(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        if "Range" not in h.headers:
            return False
        start = int(h.headers["Range"][6:-1])
        return _send_206(h, V1[start:], f"bytes {start}-{len(V1) - 1}/*", _etag(V1))

    return _resumable(scene, "/r/star-total.bin", second)


def range_206_length_disagrees(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        if "Range" not in h.headers:
            return False
        start = int(h.headers["Range"][6:-1])
        body = V1[start:-10]
        return _send_206(h, body, f"bytes {start}-{len(V1) - 1}/{len(V1)}", _etag(V1), length=len(body))

    return _resumable(scene, "/r/length-disagrees.bin", second)


def range_answered_200(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        behavior.ignore_range = True
        return False

    return _resumable(scene, "/r/answered-200.bin", second)


def range_answered_416(scene: Scene) -> str:
    def second(behavior: Behavior, h: Handler, hit: int) -> bool:
        if "Range" not in h.headers:
            return False
        return raw(h, _head("416 Range Not Satisfiable", f"Content-Range: bytes */{len(V1)}", "Content-Length: 0"))

    return _resumable(scene, "/r/416.bin", second)


def weak_etag_only(scene: Scene) -> str:
    """Sólo un ETag débil (no vale para If-Range): el reintento no pide Range y baja todo."""
    return _resumable(scene, "/r/weak.bin", lambda b, h, hit: False, etag='W/"weak-1"')


def partial_206_to_plain_get(scene: Scene) -> str:
    return _route(scene, "/r/partial-206.bin",
                  lambda h, hit: _send_206(h, V1[:100], f"bytes 0-99/{len(V1)}", _etag(V1)))


# --- cuerpos ---------------------------------------------------------------------------------
def body_shorter_than_length(scene: Scene) -> str:
    return scene.server.add("/b/short.bin", Behavior(data=V1, short_by=1000))


def body_longer_than_length(scene: Scene) -> str:
    return scene.server.add("/b/long.bin", Behavior(data=V1, extra_bytes=5000))


def chunked_bad_size_line(scene: Scene) -> str:
    return _route(scene, "/b/chunked-bad.bin", lambda h, hit: raw(
        h, _head("200 OK", "Transfer-Encoding: chunked"), b"10\r\n" + V1[:16] + b"\r\nzz\r\nxxxx\r\n0\r\n\r\n"))


def chunked_bad_size_line_later(scene: Scene) -> str:
    """La misma rotura, pero llega tras 16 KiB de cuerpo bueno (el error salta leyendo el cuerpo)."""
    good = b"4000\r\n" + V1[:0x4000] + b"\r\n"
    return _route(scene, "/b/chunked-bad-later.bin", lambda h, hit: raw(
        h, _head("200 OK", "Transfer-Encoding: chunked"), good, b"zz\r\nxxxx\r\n0\r\n\r\n", pause=0.1))


def chunked_truncated(scene: Scene) -> str:
    return _route(scene, "/b/chunked-cut.bin", lambda h, hit: raw(
        h, _head("200 OK", "Transfer-Encoding: chunked"), b"4000\r\n" + V1[:0x4000] + b"\r\n4000\r\n" + V1[:100]))


def chunked_valid(scene: Scene) -> str:
    body = b"".join(b"%x\r\n%s\r\n" % (len(V1[i:i + 7000]), V1[i:i + 7000]) for i in range(0, len(V1), 7000))
    return _route(scene, "/b/chunked-ok.bin", lambda h, hit: raw(
        h, _head("200 OK", "Transfer-Encoding: chunked"), body + b"0\r\n\r\n"))


def chunked_and_content_length(scene: Scene) -> str:
    """Transfer-Encoding y Content-Length a la vez (la base del request smuggling)."""
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(V1[:5000]), V1[:5000])
    return _route(scene, "/b/te-and-cl.bin", lambda h, hit: raw(
        h, _head("200 OK", "Transfer-Encoding: chunked", "Content-Length: 10"), body))


def two_content_lengths(scene: Scene) -> str:
    return _route(scene, "/b/two-cl.bin", lambda h, hit: raw(
        h, _head("200 OK", "Content-Length: 100", "Content-Length: 200"), V1[:200]))


def negative_content_length(scene: Scene) -> str:
    return _route(scene, "/b/negative-cl.bin", lambda h, hit: raw(h, _head("200 OK", "Content-Length: -5"), V1[:50]))


def gzip_encoded(scene: Scene) -> str:
    return scene.server.add("/b/data.gz.bin", Behavior(data=GZIPPED, headers={"Content-Encoding": "gzip"}))


def br_encoded(scene: Scene) -> str:
    return scene.server.add("/b/data.br.bin", Behavior(data=V2[:30_000], headers={"Content-Encoding": "br"}))


def content_type_lies(scene: Scene) -> str:
    return scene.server.add("/b/really-binary.bin", Behavior(data=V1, content_type="text/html; charset=utf-8"))


def closed_after_headers(scene: Scene) -> str:
    return _route(scene, "/b/closed.bin", lambda h, hit: raw(h, _head("200 OK", "Content-Length: 1000")))


def reset_before_headers(scene: Scene) -> str:
    def handler(h: Handler, hit: int) -> bool:
        h._reset()  # type: ignore[attr-defined]
        return True

    return _route(scene, "/b/reset.bin", handler)


# --- protocolo -------------------------------------------------------------------------------
def huge_header(scene: Scene) -> str:
    return _route(scene, "/p/huge-header.bin", lambda h, hit: raw(
        h, _head("200 OK", "X-Big: " + "a" * 100_000, "Content-Length: 10"), b"0123456789"))


def endless_headers(scene: Scene) -> str:
    """Líneas de cabecera sin fin (unas 2 MB); nunca llega la línea en blanco."""
    def handler(h: Handler, hit: int) -> bool:
        lines = [b"HTTP/1.1 200 OK\r\n"] + [b"X-More-%d: yes\r\n" % i for i in range(100_000)]
        return raw(h, b"".join(lines))

    return _route(scene, "/p/endless-headers.bin", handler)


def interim_100_then_200(scene: Scene) -> str:
    return _route(scene, "/p/100.bin", lambda h, hit: raw(
        h, _head("100 Continue"), _head("200 OK", "Content-Length: 5000"), V1[:5000]))


def interim_103_then_200(scene: Scene) -> str:
    return _route(scene, "/p/103.bin", lambda h, hit: raw(
        h, _head("103 Early Hints", "Link: </style.css>; rel=preload"), _head("200 OK", "Content-Length: 5000"),
        V1[:5000]))


def only_1xx_then_close(scene: Scene) -> str:
    return _route(scene, "/p/only-100.bin", lambda h, hit: raw(h, _head("100 Continue")))


def status_204(scene: Scene) -> str:
    return _route(scene, "/p/204.bin", lambda h, hit: raw(h, _head("204 No Content")))


def status_304(scene: Scene) -> str:
    return _route(scene, "/p/304.bin", lambda h, hit: raw(h, _head("304 Not Modified", 'ETag: "x"')))


def not_http(scene: Scene) -> str:
    return _route(scene, "/p/ssh.bin", lambda h, hit: raw(h, b"SSH-2.0-OpenSSH_9.6\r\n"))


def garbage_status_line(scene: Scene) -> str:
    return _route(scene, "/p/garbage-status.bin", lambda h, hit: raw(h, b"HTTP/1.1 abc OK\r\n\r\n"))


# --- redirecciones ---------------------------------------------------------------------------
def _redirect(scene: Scene, path: str, location: str, status: int = 302) -> str:
    return _route(scene, path, lambda h, hit: raw(h, _head(f"{status} Found", f"Location: {location}",
                                                            "Content-Length: 0")))


def redirect_loop(scene: Scene) -> str:
    return _redirect(scene, "/d/loop", "/d/loop")


def redirect_chain_over_max(scene: Scene) -> str:
    for i in range(4):
        _redirect(scene, f"/d/over{i}", f"/d/over{i + 1}")
    scene.server.add("/d/over4", Behavior(data=V1))
    return scene.server.url("/d/over0")


def redirect_chain_at_max(scene: Scene) -> str:
    for i in range(3):
        _redirect(scene, f"/d/at{i}", f"/d/at{i + 1}", status=301 + i)
    scene.server.add("/d/at3", Behavior(data=V1))
    return scene.server.url("/d/at0")


def redirect_file(scene: Scene) -> str:
    return _redirect(scene, "/d/file", "file:///etc/passwd")


def redirect_data(scene: Scene) -> str:
    return _redirect(scene, "/d/data", "data:text/plain;base64,aGVsbG8=")


def redirect_javascript(scene: Scene) -> str:
    return _redirect(scene, "/d/js", "javascript:alert(1)")


def redirect_ftp(scene: Scene) -> str:
    return _redirect(scene, "/d/ftp", "ftp://127.0.0.1/pub/x.bin")


def redirect_private(scene: Scene) -> str:
    """Con sólo 127.0.0.1/32 permitido, un salto a 127.0.0.2 (otra dirección de loopback)."""
    scene.other.add("/inner.bin", Behavior(data=V1))
    return _redirect(scene, "/d/private", scene.other.url("/inner.bin"))


def redirect_cross_origin(scene: Scene) -> str:
    scene.other.add("/x/elsewhere.bin", Behavior(data=V1))
    return _redirect(scene, "/d/cross", scene.other.url("/x/elsewhere.bin"))


def redirect_same_origin(scene: Scene) -> str:
    scene.server.add("/d/same-target.bin", Behavior(data=V1))
    return _redirect(scene, "/d/same", scene.server.url("/d/same-target.bin"))


def redirect_back_to_origin(scene: Scene) -> str:
    scene.server.add("/d/back-home.bin", Behavior(data=V1))
    scene.other.add("/x/bounce", Behavior(redirect_to=scene.server.url("/d/back-home.bin")))
    return _redirect(scene, "/d/away", scene.other.url("/x/bounce"))


def redirect_relative(scene: Scene) -> str:
    scene.server.add("/d/sub/target.bin", Behavior(data=V1))
    return _redirect(scene, "/d/sub/start", "target.bin")


def redirect_protocol_relative(scene: Scene) -> str:
    scene.other.add("/x/pr.bin", Behavior(data=V1))
    return _redirect(scene, "/d/protocol-relative", f"//127.0.0.2:{scene.other.port}/x/pr.bin")


def redirect_credentials_in_location(scene: Scene) -> str:
    scene.other.add("/x/creds.bin", Behavior(data=V1))
    return _redirect(scene, "/d/creds", f"http://mallory:stolen-pw@127.0.0.2:{scene.other.port}/x/creds.bin")


def redirect_malformed_location(scene: Scene) -> str:
    return _redirect(scene, "/d/malformed", "http://[::1/broken")


def redirect_without_location(scene: Scene) -> str:
    return _route(scene, "/d/no-location", lambda h, hit: raw(h, _head("302 Found", "Content-Length: 0")))


# --- nombres del servidor (Content-Disposition) ----------------------------------------------
def _named(scene: Scene, path: str, disposition: str | bytes) -> str:
    value = disposition if isinstance(disposition, bytes) else disposition.encode("utf-8")

    def handler(h: Handler, hit: int) -> bool:
        return raw(h, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Disposition: " + value + b"\r\n\r\n",
                   V1[:1000])

    return _route(scene, path, handler)


def name_traversal(scene: Scene) -> str:
    return _named(scene, "/n/traversal.bin", 'attachment; filename="../../etc/passwd"')


def name_absolute(scene: Scene) -> str:
    return _named(scene, "/n/absolute.bin", 'attachment; filename="/etc/cron.d/evil"')


def name_backslashes(scene: Scene) -> str:
    return _named(scene, "/n/backslash.bin", 'attachment; filename="..\\\\..\\\\windows\\\\x.exe"')


def name_nul(scene: Scene) -> str:
    return _named(scene, "/n/nul.bin", "attachment; filename*=UTF-8''a%00b.bin")


def name_bidi(scene: Scene) -> str:
    return _named(scene, "/n/bidi.bin", "attachment; filename*=UTF-8''evil%E2%80%AEgpj.exe")


def name_invisible(scene: Scene) -> str:
    return _named(scene, "/n/invisible.bin", "attachment; filename*=UTF-8''clip%E2%80%8B%EF%BB%BF.mp4")


def name_newline_escape(scene: Scene) -> str:
    return _named(scene, "/n/newline.bin", "attachment; filename*=UTF-8''a%0D%0A%1B%5B31mred.txt")


def name_overlong(scene: Scene) -> str:
    return _named(scene, "/n/overlong.bin", 'attachment; filename="' + "é" * 150 + '.mp4"')


def name_empty(scene: Scene) -> str:
    return _named(scene, "/n/from-url-when-empty.bin", 'attachment; filename=""')


def name_only_dots(scene: Scene) -> str:
    return _named(scene, "/n/from-url-when-dots.bin", 'attachment; filename="..."')


def name_internal_collision(scene: Scene) -> str:
    return _named(scene, "/n/collision.bin", 'attachment; filename="download.meta.json"')


def name_not_utf8(scene: Scene) -> str:
    return _named(scene, "/n/latin1.bin", b'attachment; filename="caf\xe9\x85.txt"')


def name_unknown_charset(scene: Scene) -> str:
    return _named(scene, "/n/charset.bin", "attachment; filename*=x-klingon''a%E9.bin; filename=\"plain.bin\"")


# --- servidores callados ---------------------------------------------------------------------
def stall_before_headers(scene: Scene) -> str:
    def handler(h: Handler, hit: int) -> bool:
        scene.release.wait(30)
        return raw(h, _head("200 OK", "Content-Length: 1"), b"x")

    return _route(scene, "/s/before-headers.bin", handler)


def stall_between_chunks(scene: Scene) -> str:
    def handler(h: Handler, hit: int) -> bool:
        raw(h, _head("200 OK", "Transfer-Encoding: chunked"), b"1000\r\n" + V1[:0x1000] + b"\r\n")
        scene.release.wait(30)
        return raw(h, b"0\r\n\r\n")

    return _route(scene, "/s/between-chunks.bin", handler)


def stall_after_body_with_length(scene: Scene) -> str:
    """Todos los bytes (con Content-Length) y la conexión abierta: no hace falta esperar a nada."""
    def handler(h: Handler, hit: int) -> bool:
        raw(h, _head("200 OK", f"Content-Length: {len(V1)}"), V1)
        scene.release.wait(30)
        return True

    return _route(scene, "/s/after-body.bin", handler)


def stall_after_body_without_length(scene: Scene) -> str:
    """Sin Content-Length ni chunked el final es el cierre: si no llega, no se sabe si está entero."""
    def handler(h: Handler, hit: int) -> bool:
        raw(h, _head("200 OK"), V1[:5000])
        scene.release.wait(30)
        return True

    return _route(scene, "/s/after-body-no-length.bin", handler)


def stall_mid_body_then_resume(scene: Scene) -> str:
    release = threading.Event()
    scene.release = release
    return scene.server.add("/s/mid-body.bin", Behavior(data=V1, hold=release, hold_after=CUT, hold_times=1,
                                                         hold_timeout=30))


# --- TLS -------------------------------------------------------------------------------------
def tls_server(scene: Scene) -> str:
    assert scene.tls is not None
    return scene.tls.add("/t/secure.bin", Behavior(data=V1))


def tls_wrong_host_name(scene: Scene) -> str:
    assert scene.tls is not None
    scene.tls.add("/t/wrong-host.bin", Behavior(data=V1))
    return f"https://localhost:{scene.tls.port}/t/wrong-host.bin"


def plain_http_to_tls_port(scene: Scene) -> str:
    assert scene.tls is not None
    scene.tls.add("/t/plain.bin", Behavior(data=V1))
    return f"http://127.0.0.1:{scene.tls.port}/t/plain.bin"


CATALOGUE: dict[str, Callable[[Scene], str]] = {
    name: value for name, value in globals().items()
    if callable(value) and not name.startswith("_") and name not in ("raw", "Scene", "Behavior", "TestServer",
                                                                     "Callable", "field", "dataclass")
    and getattr(value, "__module__", None) == __name__ and not isinstance(value, type)
}
