"""Servidor HTTP real en 127.0.0.1 para las pruebas, con rutas programables y fallos a demanda.

Sirve contenido registrado con soporte de Range/If-Range/ETag y registra cada petición
(método, ruta, cabeceras) para que las pruebas comprueben, por ejemplo, que hubo un Range.
Puede escuchar en otra dirección de loopback (``host="127.0.0.2"``: otro origen) y con TLS
(``tls=(cert, key)``). Los servidores que rompen HTTP a propósito están en misbehaviours.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Behavior", "RecordedRequest", "TestServer"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    time: float


@dataclass
class Behavior:
    """Cómo responde una ruta. Los campos de fallo se aplican en orden de intento."""

    data: bytes = b""
    content_type: str = "application/octet-stream"
    status: int = 200
    fail_statuses: list[int] = field(default_factory=list)  # estados a devolver en los primeros intentos
    retry_after: str | None = None
    rate: int | None = None  # bytes por segundo (servidor lento)
    chunk: int = 64 * 1024
    reset_after: int | None = None  # cortar la conexión tras N bytes (una vez por cada entrada)
    reset_times: int = 0
    short_by: int = 0  # declarar Content-Length mayor que el cuerpo
    short_times: int | None = None  # aplicar short_by sólo en las N primeras peticiones (None: siempre)
    extra_bytes: int = 0  # enviar más bytes que Content-Length
    no_content_length: bool = False
    ignore_range: bool = False
    ignore_if_range: bool = False  # atender Range aunque If-Range no coincida (servidor roto)
    no_etag: bool = False
    last_modified: str | None = None
    stall: float = 0.0  # dormir antes de responder
    redirect_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    handler: Callable[[http.server.BaseHTTPRequestHandler, int], bool] | None = None
    hold: threading.Event | None = None  # tras enviar ``hold_after`` bytes, esperar a este evento
    hold_after: int = 0
    hold_times: int | None = None  # retener sólo en las N primeras peticiones (None: siempre)
    hold_timeout: float = 120.0  # tope de la espera, para no colgar nunca la suite
    hits: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silencio en las pruebas
        pass

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):  # el cliente no aceptó el certificado: nada que servir
                self.close_connection = True
                return
        # Si el cliente se va (o corta a propósito), no es un fallo del servidor.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError, ssl.SSLError):
            super().handle()

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        with owner.lock:
            owner.requests.append(RecordedRequest(self.command, self.path, dict(self.headers.items()), time.time()))
            behavior = owner.routes.get(path)
            if behavior is not None:
                behavior.hits += 1
                hit = behavior.hits
        if behavior is None:
            self._plain(404, b"not found\n")
            return
        if behavior.stall:
            time.sleep(behavior.stall)
        if behavior.handler is not None and behavior.handler(self, hit):
            return
        if hit <= len(behavior.fail_statuses):
            status = behavior.fail_statuses[hit - 1]
            extra = {"Retry-After": behavior.retry_after} if behavior.retry_after else {}
            self._plain(status, f"status {status}\n".encode(), extra)
            return
        if behavior.redirect_to is not None:
            self._plain(behavior.status if behavior.status in (301, 302, 303, 307, 308) else 302, b"",
                        {"Location": behavior.redirect_to})
            return
        if behavior.status != 200:
            self._plain(behavior.status, f"status {behavior.status}\n".encode())
            return
        self._send_body(behavior, head, hit)

    def _plain(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_body(self, behavior: Behavior, head: bool, hit: int) -> None:
        data = behavior.data
        etag = behavior.etag or '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        validator = behavior.last_modified if behavior.no_etag else etag
        start, status = 0, 200
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if range_header and not behavior.ignore_range and (
                if_range is None or if_range == validator or behavior.ignore_if_range):
            match = re.fullmatch(r"bytes=(\d+)-", range_header.strip())
            if match and int(match.group(1)) < len(data):
                start, status = int(match.group(1)), 206
        body = data[start:]
        short_by = behavior.short_by if behavior.short_times is None or hit <= behavior.short_times else 0
        self.send_response(status)
        self.send_header("Content-Type", behavior.content_type)
        if not behavior.no_etag:
            self.send_header("ETag", etag)
        if behavior.last_modified:
            self.send_header("Last-Modified", behavior.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if not behavior.no_content_length:
            self.send_header("Content-Length", str(len(body) + short_by))
        else:
            self.send_header("Connection", "close")
        for key, value in behavior.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if behavior.extra_bytes:
            body = body + b"x" * behavior.extra_bytes
        reset_at = behavior.reset_after if hit <= behavior.reset_times else None
        hold = behavior.hold if behavior.hold_times is None or hit <= behavior.hold_times else None
        sent = 0
        try:
            while sent < len(body):
                if hold is not None and sent >= behavior.hold_after:
                    self.wfile.flush()
                    hold.wait(behavior.hold_timeout)
                    hold = None
                piece = body[sent:sent + behavior.chunk]
                if hold is not None and sent + len(piece) > behavior.hold_after:
                    piece = piece[: behavior.hold_after - sent]
                if reset_at is not None and sent + len(piece) > reset_at:
                    self.wfile.write(piece[: max(0, reset_at - sent)])
                    self.wfile.flush()
                    self._reset()
                    return
                self.wfile.write(piece)
                sent += len(piece)
                if behavior.rate:
                    time.sleep(len(piece) / behavior.rate)
        except (BrokenPipeError, ConnectionResetError):
            return
        if short_by or behavior.no_content_length or behavior.extra_bytes:
            self.close_connection = True

    def _reset(self) -> None:
        # RST en lugar de FIN: SO_LINGER con tiempo 0.
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close_connection = True
        sock.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: TestServer


class TestServer:
    """Servidor de pruebas: ``with TestServer() as srv: srv.add('/a.bin', Behavior(data=...))``."""

    __test__ = False  # que pytest no lo tome por una clase de pruebas

    def __init__(self, host: str = "127.0.0.1", tls: tuple[str, str] | None = None) -> None:
        self.routes: dict[str, Behavior] = {}
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self.host = host
        self.scheme = "https" if tls else "http"
        self._httpd = _Server((host, 0), _Handler)
        self._httpd.owner = self
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            # El apretón de manos se hace en el hilo de cada conexión, no en el que acepta: un
            # cliente que aborta (certificado no aceptado) no frena al servidor.
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def add(self, path: str, behavior: Behavior | None = None, **kwargs: Any) -> str:
        """Registra una ruta y devuelve su URL completa."""
        with self.lock:
            self.routes[path] = behavior or Behavior(**kwargs)
        return self.url(path)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def start(self) -> TestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
