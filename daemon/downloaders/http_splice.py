"""Un cuerpo grande por HTTP en claro, del socket al archivo sin pasar por Python: ``splice(2)``.

Con aiohttp cada trozo del cuerpo sube del núcleo a un ``bytes`` de Python y vuelve a bajar al
escribirlo: dos copias y un objeto por trozo, en el hilo del bucle. Para un cuerpo de tamaño
conocido, sin TLS ni ``chunked``, aiohttp sólo lee las cabeceras; después el cuerpo va del socket
a una tubería y de la tubería al archivo con ``splice(2)`` (el núcleo mueve las páginas del socket
sin copiarlas a espacio de usuario), en un hilo que suelta el GIL. Otro hilo calcula el sha256
leyendo el archivo por detrás del que escribe (de la caché de páginas, con un búfer reutilizado):
recibir y resumir se solapan en dos núcleos.

Las garantías son las del camino de aiohttp: nunca más de Content-Length bytes (lo que sobre se
ignora: la conexión se cierra, no vuelve al pool); un cierre antes de tiempo deja el cuerpo corto
(``IncompleteBody`` en quien llama); sin datos durante ``timeout`` segundos, ``DownloadTimeout``;
la cancelación se atiende en menos de ``_POLL`` segundos y lo ya escrito queda para reanudar.
Lo que aiohttp ya tenía leído del cuerpo se escribe primero, por el ``Sink`` de siempre.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

import aiohttp

from daemon.downloaders.base import ConnectionFailed, DownloadTimeout, IncompleteBody, ProgressCallback
from daemon.downloaders.http_sink import Sink
from daemon.faultpoints import crash_point

__all__ = ["SPLICE_MIN_BYTES", "can_splice", "splice_body"]

# Por debajo, el camino de aiohttp cuesta lo mismo y no paga dos hilos.
SPLICE_MIN_BYTES = 8 * 1024 * 1024
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031
_HASH_BLOCK = 4 * 1024 * 1024
_POLL = 0.1  # cada cuánto mira el hilo si lo cancelaron
_REPORT = 0.25


def can_splice(response: aiohttp.ClientResponse, remaining: int | None) -> bool:
    """Si el resto del cuerpo puede ir por ``splice``: HTTP en claro, tamaño conocido y grande, Linux."""
    if remaining is None or remaining < SPLICE_MIN_BYTES or not hasattr(os, "splice"):
        return False
    if "chunked" in response.headers.get("Transfer-Encoding", "").lower():
        return False
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return False
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() >= 0


async def splice_body(response: aiohttp.ClientResponse, sink: Sink, total: int, timeout: float,
                      progress: ProgressCallback | None, writer: Executor) -> list[bytes]:
    """Escribe (y resume en ``sink.hasher``) el resto del cuerpo hasta ``total`` bytes en ``sink``.

    Al volver, el archivo tiene ``sink.size`` bytes y el hash los cubre todos; la conexión queda
    cerrada. Un error del socket es ``ConnectionFailed``; uno del archivo, el ``OSError`` tal cual.
    """
    connection = response.connection
    assert connection is not None and connection.transport is not None
    transport = connection.transport
    # Lo que aiohttp ya leyó del cuerpo, y a partir de aquí el socket es sólo nuestro: sin un
    # ``await`` entre las dos cosas, el bucle no puede leer nada más en medio.
    try:
        early = response.content.read_nowait(-1)
    except aiohttp.ClientPayloadError as exc:
        raise IncompleteBody(f"the connection ended early: {exc}", received=sink.size) from None
    except aiohttp.ClientError as exc:
        raise ConnectionFailed(f"the connection failed mid-body: {exc}", received=sink.size) from None
    transport.pause_reading()
    sock_fd = transport.get_extra_info("socket").fileno()
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def report(received: int) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, received, total)

    work = loop.run_in_executor(writer, _splice_all, sock_fd, sink, early, total, timeout, stop, report)
    try:
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            stop.set()  # el hilo lo ve en menos de _POLL s; el socket no se cierra mientras lo usa
            with contextlib.suppress(Exception):
                await work
            raise
    finally:
        response.close()
    if progress is not None:
        progress(sink.size, total)
    return []  # nada queda sin escribir: la cola del camino de aiohttp, vacía


def _splice_all(sock_fd: int, sink: Sink, early: bytes, total: int, timeout: float, stop: threading.Event,
                report: Callable[[int], None]) -> None:
    """En un hilo: socket -> tubería -> archivo, con el sha256 en un segundo hilo por detrás."""
    if early:
        sink.write([early[: max(0, total - sink.size)]])
    hasher = _Hasher(sink)
    hasher.start()
    pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, _PIPE_SIZE)
        _pump(sock_fd, pipe_r, pipe_w, sink, total, timeout, stop, report, hasher)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
        hasher.finish()


def _pump(sock_fd: int, pipe_r: int, pipe_w: int, sink: Sink, total: int, timeout: float, stop: threading.Event,
          report: Callable[[int], None], hasher: _Hasher) -> None:
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    last_data = last_report = time.monotonic()
    first = True
    while sink.size < total and not stop.is_set():
        try:
            moved = os.splice(sock_fd, pipe_w, min(total - sink.size, _PIPE_SIZE),
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            idle = time.monotonic() - last_data
            if idle >= timeout:
                raise DownloadTimeout(f"no data from the server for {timeout:.0f}s", received=sink.size) from None
            poller.poll(int(min(_POLL, timeout - idle) * 1000) + 1)
            continue
        except OSError as exc:
            raise ConnectionFailed(f"the connection failed mid-body: {exc.strerror or exc}",
                                   received=sink.size) from None
        if moved == 0:
            return  # el servidor cerró antes de tiempo: cuerpo corto, lo dice quien llama
        while moved:  # de la tubería al archivo (en la posición actual del Sink)
            written = os.splice(pipe_r, sink.fd, moved, flags=os.SPLICE_F_MOVE)
            moved -= written
            sink.size += written
        hasher.advance(sink.size)
        now = last_data = time.monotonic()
        if first:
            first = False
            crash_point("mid_download")
        if now - last_report >= _REPORT:
            last_report = now
            report(sink.size)


class _Hasher:
    """El sha256 del archivo, leído por detrás de quien escribe, en su propio hilo."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.done = sink.size  # lo ya resumido (el Sink resumió lo anterior al escribirlo)
        self.limit = sink.size
        self.closed = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="http-splice-sha256", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def advance(self, limit: int) -> None:
        with self.cond:
            self.limit = limit
            self.cond.notify()

    def finish(self) -> None:
        """Espera a que el hash cubra todo lo escrito (también tras un error o una cancelación)."""
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            fd = os.open(self.sink.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.error = exc
            return
        try:
            while True:
                with self.cond:
                    while self.done >= self.limit and not self.closed:
                        self.cond.wait()
                    limit, closed = self.limit, self.closed
                if self.done >= limit and closed:
                    return
                while self.done < limit:
                    self._hash_mapped(fd, min(limit, self.done + _HASH_BLOCK))
        except (OSError, ValueError) as exc:
            self.error = exc if isinstance(exc, OSError) else OSError(str(exc))
        finally:
            os.close(fd)

    def _hash_mapped(self, fd: int, end: int) -> None:
        """Resume [done, end) leyendo las páginas del archivo en su sitio (mmap): sin copiarlas."""
        start = self.done - self.done % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(fd, end - start, prot=mmap.PROT_READ, offset=start) as mapped, memoryview(mapped) as view:
            self.sink.hasher.update(view[self.done - start:])
        self.done = end
