"""Descargador HTTP(S) en streaming sobre aiohttp.

- Memoria constante: el cuerpo se lee con ``iter_any()`` y se entrega por lotes de ~1 MiB a un
  hilo que escribe y calcula el sha256 mientras el bucle sigue leyendo del socket.
- ``max_bytes`` se aplica desde Content-Length y a medida que llegan los bytes.
- Reanudación: ``download.part`` + ``download.meta.json`` en el directorio aislado; un
  reintento pide ``Range`` con ``If-Range`` (ETag fuerte o Last-Modified) y vuelve a empezar si
  el servidor no lo admite.
- Redirecciones seguidas a mano: esquema comprobado en cada salto, límite de saltos y sin
  credenciales hacia otro host. Las direcciones se comprueban al conectar (``netguard``).
- Nombre del archivo: el del trabajo, si no Content-Disposition, si no la URL; siempre saneado.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from yarl import URL

from daemon.downloaders.base import (
    ConnectionFailed,
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    HTTPClientError,
    IncompleteBody,
    InvalidUrl,
    PrivateAddressRefused,
    ProgressCallback,
    SchemeNotAllowed,
    ServerError,
    SizeLimitExceeded,
    StorageError,
    TooManyRedirects,
)
from daemon.downloaders.netguard import forbidden_reason
from daemon.durable import fsync_dir
from daemon.events import redact
from daemon.faultpoints import crash_point

__all__ = ["HttpDownloader", "filename_from_response", "sanitize_filename"]

PART_NAME = "download.part"
META_NAME = "download.meta.json"
WRITE_BATCH = 512 * 1024
_NO_RESUME_BELOW = 64 * 1024
_IN_FLIGHT = 2  # lotes escribiéndose mientras se lee el siguiente
_REDIRECTS = (301, 302, 303, 307, 308)
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
_DISPOSITION_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)
_DISPOSITION = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))', re.IGNORECASE)


def sanitize_filename(name: str | None, fallback: str = "download") -> str:
    """Reduce cualquier texto a un nombre de archivo simple y seguro."""
    if not name:
        return fallback
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip().lstrip(".").strip()
    while len(name.encode("utf-8")) > 200:
        name = name[:-1]
    return name or fallback


def filename_from_response(headers: Any, url: URL) -> str:
    """Nombre según Content-Disposition o, en su defecto, el último segmento de la URL."""
    disposition = headers.get("Content-Disposition", "")
    match = _DISPOSITION_STAR.search(disposition)
    if match:
        try:
            return sanitize_filename(unquote(match.group(2).strip().strip('"'), encoding=match.group(1) or "utf-8"))
        except LookupError:
            pass
    match = _DISPOSITION.search(disposition)
    if match:
        return sanitize_filename((match.group(1) or match.group(2) or "").strip())
    return sanitize_filename(unquote(urlsplit(str(url)).path.rsplit("/", 1)[-1]))


class _GuardedConnector(aiohttp.TCPConnector):
    """Conector que rechaza direcciones no públicas al resolver (también IPs literales)."""

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None) -> list[Any]:
        results = await super()._resolve_host(host, port, traces=traces)
        allowed = [r for r in results if forbidden_reason(r["host"]) is None]
        if not allowed:
            reason = forbidden_reason(results[0]["host"]) if results else "no address"
            raise PrivateAddressRefused(
                f"refusing to connect to {host}: {reason}; set download.allow_private_networks: true to allow it",
                host=host,
            )
        return allowed


class _Sink:
    """Escribe y resume (sha256) un archivo; se usa desde un hilo de trabajo."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        self.fd = os.open(path, flags, 0o600)
        if offset:
            with open(path, "rb") as existing:
                while self.size < offset:
                    block = existing.read(min(WRITE_BATCH * 4, offset - self.size))
                    if not block:
                        break
                    self.hasher.update(block)
                    self.size += len(block)
        os.ftruncate(self.fd, self.size)
        os.lseek(self.fd, self.size, os.SEEK_SET)

    def write(self, chunks: list[bytes]) -> None:
        """Escribe los trozos tal como llegaron (writev: sin juntarlos antes) y los resume."""
        for start in range(0, len(chunks), 512):  # IOV_MAX es 1024
            group = chunks[start:start + 512]
            expected = sum(map(len, group))
            written = os.writev(self.fd, group)
            if written != expected:  # escritura corta (disco casi lleno): completar o fallar
                self._write_rest(b"".join(group), written)
            for chunk in group:
                self.hasher.update(chunk)
            self.size += expected

    def _write_rest(self, data: bytes, offset: int) -> None:
        view = memoryview(data)[offset:]
        while view:
            view = view[os.write(self.fd, view):]

    def write_and_finish(self, chunks: list[bytes], fsync: bool) -> None:
        if chunks:
            self.write(chunks)
        self.finish(fsync)

    def finish(self, fsync: bool) -> None:
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HttpDownloader:
    """Descargador HTTP(S): ``await HttpDownloader().download(options, progress)``."""

    name = "http"

    def __init__(self, fsync: bool = True, user_agent: str = "videonote-dl/0.1") -> None:
        self.fsync = fsync
        self.user_agent = user_agent
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-sink")

    def _session(self, allow_private: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(allow_private)
        if session is None or session.closed:
            connector_cls = aiohttp.TCPConnector if allow_private else _GuardedConnector
            connector = connector_cls(limit=0, ttl_dns_cache=60, enable_cleanup_closed=False)
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                read_bufsize=256 * 1024,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                max_line_size=16384,
                max_field_size=16384,
            )
            self._sessions[allow_private] = session
        return session

    async def close(self) -> None:
        """Cierra las sesiones y el hilo de escritura."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def download(self, options: DownloadOptions, progress: ProgressCallback | None = None) -> DownloadResult:
        if options.output_path is None:
            raise ValueError("options.output_path must be the isolated temp dir")
        temp_dir = options.output_path
        part, meta_path = temp_dir / PART_NAME, temp_dir / META_NAME
        meta = self._load_meta(meta_path, options.url)
        offset = part.stat().st_size if meta and part.exists() else 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(options.timeout, 30), sock_read=options.timeout)
        session = self._session(options.allow_private_networks)
        response = await self._open(session, options, offset, meta, timeout)
        if response.status == 416 and offset:
            # La parte local no sirve para este archivo (cambió o ya no cuadra): se empieza de cero
            # en lugar de fallar como si fuera un 4xx permanente.
            response.release()
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            offset = 0
            response = await self._open(session, options, 0, None, timeout)
        try:
            return await self._receive(response, options, part, meta_path, offset, progress)
        finally:
            response.release()

    # --- petición y redirecciones -------------------------------------------------------
    async def _open(
        self,
        session: aiohttp.ClientSession,
        options: DownloadOptions,
        offset: int,
        meta: dict[str, Any] | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        url = URL(options.url, encoded="%" in options.url)
        headers = dict(options.headers)
        if offset and meta:
            validator = meta.get("etag") if not str(meta.get("etag", "W/")).startswith("W/") else None
            validator = validator or meta.get("last_modified")
            if validator:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = validator
        origin = url.origin()
        for hop in range(options.max_redirects + 1):
            if url.scheme not in options.allowed_schemes:
                raise SchemeNotAllowed(f"URL scheme {url.scheme!r} is not allowed (redirect hop {hop})")
            try:
                response = await session.get(url, headers=headers, allow_redirects=False, timeout=timeout)
            except PrivateAddressRefused:
                raise
            except TimeoutError:
                # Antes que OSError/ClientError: TimeoutError es un OSError y ServerTimeoutError de
                # aiohttp es ambas cosas; un servidor callado es un timeout, no un fallo de conexión.
                raise DownloadTimeout(
                    f"no answer from {url.host}:{url.port} within {options.timeout:.0f}s"
                ) from None
            except (aiohttp.InvalidURL, ValueError) as exc:
                raise InvalidUrl(f"invalid URL {redact(str(url))}: {exc}") from None
            except aiohttp.ClientConnectorDNSError as exc:
                raise ConnectionFailed(f"cannot resolve {url.host}: {exc.os_error}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ConnectionFailed(f"cannot connect to {url.host}:{url.port}: {exc}") from None
            if response.status in _REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                url = url.join(URL(location))
                if url.origin() != origin:
                    headers = {k: v for k, v in headers.items()
                               if k.lower() not in ("authorization", "cookie", "proxy-authorization")}
                continue
            return response
        raise TooManyRedirects(f"more than {options.max_redirects} redirects; the server may be in a redirect loop")

    # --- cuerpo -------------------------------------------------------------------------
    async def _receive(
        self,
        response: aiohttp.ClientResponse,
        options: DownloadOptions,
        part: Path,
        meta_path: Path,
        offset: int,
        progress: ProgressCallback | None,
    ) -> DownloadResult:
        self._raise_for_status(response)
        start = self._usable_range_start(response, offset) if response.status == 206 else 0
        if start is None:
            # Un 206 que no empieza donde pedimos (ni es el archivo entero desde 0): escribirlo
            # daría un archivo con otro contenido. Se tira la parte local y se reintenta de cero.
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise IncompleteBody(
                f"the server answered 206 with Content-Range {response.headers.get('Content-Range')!r} "
                f"to a request from byte {offset}; starting over"
            )
        resumed = response.status == 206 and offset > 0 and start == offset
        if not resumed:
            offset = 0
        length = response.content_length
        total = offset + length if length is not None else None
        if total is not None and total > options.max_bytes:
            raise SizeLimitExceeded(
                f"the file is {total} bytes, over the limit of {options.max_bytes} bytes (max_bytes)",
                size=total, limit=options.max_bytes,
            )
        filename = options.filename or filename_from_response(response.headers, response.url)
        meta = {
            "url": options.url,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
            "filename": filename,
        }
        small = total is not None and total <= WRITE_BATCH
        if total is None or total > _NO_RESUME_BELOW:  # reanudar 64 KiB no compensa escribir validadores
            meta_path.write_bytes(orjson.dumps(meta))
        loop = asyncio.get_running_loop()
        # Un cuerpo grande tiene su propio hilo de escritura: los lotes se escriben en orden, y hasta
        # dos pueden esperar mientras el bucle sigue leyendo (el hash no frena la red).
        writer = self._executor if small else ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-writer")
        # Sin nada que rehashear, abrir el archivo es barato: se hace aquí, sin saltar de hilo.
        sink = _Sink(part, 0) if offset == 0 else await loop.run_in_executor(writer, _Sink, part, offset)
        try:
            tail = await self._stream(response, sink, options, total, progress, loop, writer)
            # Un solo salto al hilo de escritura para la cola del cuerpo y el fsync.
            await loop.run_in_executor(writer, sink.write_and_finish, tail, self.fsync)
        except OSError as exc:
            raise StorageError(f"cannot write the download: {exc.strerror}", errno=exc.errno) from None
        finally:
            sink.close()
            if writer is not self._executor:
                writer.shutdown(wait=False)
        if length is not None and sink.size < (total or 0):
            raise IncompleteBody(f"the server sent {sink.size} of {total} bytes")
        final = part.with_name(filename)
        os.replace(part, final)
        if self.fsync:  # el nombre final, durable antes de publicar: la recuperación lo busca por inodo
            await loop.run_in_executor(None, fsync_dir, final.parent)
        meta_path.unlink(missing_ok=True)
        return DownloadResult(
            path=final, filename=filename, size=sink.size, sha256=sink.hasher.hexdigest(),
            content_type=response.headers.get("Content-Type"), final_url=redact(str(response.url)),
            resumed=resumed,
        )

    async def _stream(
        self,
        response: aiohttp.ClientResponse,
        sink: _Sink,
        options: DownloadOptions,
        total: int | None,
        progress: ProgressCallback | None,
        loop: asyncio.AbstractEventLoop,
        writer: Executor,
    ) -> list[bytes]:
        """Lee el cuerpo hasta el final; devuelve lo que queda sin escribir (la cola).

        Los trozos se agrupan en lotes de ~1 MiB sin copiarlos; mientras el hilo de escritura
        escribe y resume un lote, el bucle sigue leyendo el siguiente."""
        received = sink.size
        buffer: list[bytes] = []
        buffered = 0
        pending: deque[asyncio.Future[None]] = deque()
        last_report = 0.0
        try:
            async for chunk in response.content.iter_any():
                received += len(chunk)
                if received > options.max_bytes:
                    raise SizeLimitExceeded(
                        f"the download passed the limit of {options.max_bytes} bytes (max_bytes)",
                        limit=options.max_bytes,
                    )
                buffer.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BATCH:
                    if len(pending) >= _IN_FLIGHT:
                        await pending.popleft()
                    pending.append(loop.run_in_executor(writer, sink.write, buffer))
                    buffer, buffered = [], 0
                    crash_point("mid_download")
                    now = time.monotonic()
                    if progress is not None and now - last_report >= 0.25:
                        last_report = now
                        progress(received, total)
        except TimeoutError:
            # Primero: ServerTimeoutError de aiohttp también es un ClientError.
            await self._drain(pending, sink, buffer, loop, writer)
            raise DownloadTimeout(f"no data from the server for {options.timeout:.0f}s",
                                  received=received) from None
        except aiohttp.ClientPayloadError as exc:
            await self._drain(pending, sink, buffer, loop, writer)
            raise IncompleteBody(f"the connection ended early: {exc}", received=received) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            await self._drain(pending, sink, buffer, loop, writer)
            raise ConnectionFailed(f"the connection failed mid-body: {exc}", received=received) from None
        while pending:
            await pending.popleft()
        if progress is not None:
            progress(received, total)
        return buffer

    async def _drain(
        self,
        pending: deque[asyncio.Future[None]],
        sink: _Sink,
        buffer: list[bytes],
        loop: asyncio.AbstractEventLoop,
        writer: Executor,
    ) -> None:
        """Escribe lo recibido hasta ahora (para poder reanudar desde ahí)."""
        while pending:
            await pending.popleft()
        if buffer:
            await loop.run_in_executor(writer, sink.write, buffer)

    # --- ayudas -------------------------------------------------------------------------
    @staticmethod
    def _raise_for_status(response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status in (200, 206):
            return
        if status in (408, 429) or 500 <= status <= 599:
            raise ServerError(
                f"the server answered HTTP {status} {response.reason or ''}".rstrip(),
                retry_after=_retry_after(response.headers.get("Retry-After")), status=status,
            )
        if status in _REDIRECTS:
            raise HTTPClientError(f"HTTP {status} redirect without a Location header", status=status)
        raise HTTPClientError(f"the server answered HTTP {status} {response.reason or ''}".rstrip(), status=status)

    @staticmethod
    def _usable_range_start(response: aiohttp.ClientResponse, offset: int) -> int | None:
        """Dónde empieza el cuerpo de un 206 si sirve, o None.

        Sirve si llega hasta el final del archivo (``bytes a-b/c`` con b + 1 == c, o c
        desconocido) y empieza en ``offset`` (reanudación) o en 0 con tamaño conocido (el
        archivo entero enviado como 206).
        """
        match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", response.headers.get("Content-Range", ""))
        if not match:
            return None
        start, end, complete = int(match.group(1)), int(match.group(2)), match.group(3)
        if complete != "*" and end + 1 != int(complete):
            return None
        if start == offset or (start == 0 and complete != "*"):
            return start
        return None

    @staticmethod
    def _load_meta(meta_path: Path, url: str) -> dict[str, Any] | None:
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) and meta.get("url") == url else None


def _retry_after(value: str | None) -> float | None:
    """Segundos de Retry-After (número o fecha HTTP), acotados a [0, 3600]."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), 3600.0))


