"""Descargador HTTP(S) en streaming sobre aiohttp.

- Memoria constante: el cuerpo se lee con ``iter_any()`` y se entrega por lotes de ~1 MiB a un
  hilo que escribe y calcula el sha256 mientras el bucle sigue leyendo del socket.
- ``max_bytes`` se aplica desde Content-Length y a medida que llegan los bytes.
- Reanudación: ``download.part`` + ``download.meta.json`` en el directorio aislado; un
  reintento pide ``Range`` con ``If-Range`` (ETag fuerte o Last-Modified). Sólo se añade a la
  parte local un 206 que empieza donde se pidió, con el mismo tamaño total y el mismo validador
  que la primera respuesta; cualquier otra cosa descarta la parte y empieza de cero (nunca se
  publica un archivo empalmado de dos versiones).
- Redirecciones seguidas a mano: esquema comprobado en cada salto (``file:``, ``data:``... son
  ``scheme_not_allowed``), límite de saltos, sin credenciales del Location, y las cabeceras del
  trabajo sólo hacia el origen del trabajo (salvo las de ``forward_headers``). Las direcciones se
  comprueban al conectar (``netguard``).
- Nombre del archivo: el del trabajo, si no Content-Disposition, si no la URL; los del servidor
  pasan por ``daemon.names.safe_name`` (las reglas del ``filename`` de un trabajo).
- El cuerpo se guarda tal como llega (``Accept-Encoding: identity`` y sin descomprimir: lo mismo
  que ``curl -o``); el sha256 es el de esos bytes.
- Sólo lanza ``DownloadError`` con un ``kind`` de la lista cerrada (``daemon.error_kinds``).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import re
import ssl
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from daemon.downloaders.base import (
    BadResponse,
    ConnectionFailed,
    DownloadError,
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    HTTPClientError,
    IncompleteBody,
    InternalDownloadError,
    InvalidUrl,
    PrivateAddressRefused,
    ProgressCallback,
    SchemeNotAllowed,
    ServerError,
    SizeLimitExceeded,
    StorageError,
    TlsError,
    TooManyRedirects,
)
from daemon.downloaders.netguard import IPNetwork, forbidden_reason, parse_networks, tls_context
from daemon.events import redact
from daemon.faultpoints import crash_point
from daemon.names import safe_name
from daemon.text import printable

__all__ = ["HttpDownloader", "filename_from_response", "sanitize_filename"]

PART_NAME = "download.part"
META_NAME = "download.meta.json"
# Nombre del archivo terminado en el directorio aislado si el publicado coincidiera con uno interno.
_DONE_NAME = "download.done"
WRITE_BATCH = 512 * 1024
_NO_RESUME_BELOW = 64 * 1024
_IN_FLIGHT = 2  # lotes escribiéndose mientras se lee el siguiente
_REDIRECTS = (301, 302, 303, 307, 308)
_DISPOSITION_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)
_DISPOSITION = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))', re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")
_AUTH_HEADERS = ("authorization", "cookie", "proxy-authorization")


def sanitize_filename(name: str | None, fallback: str = "download") -> str:
    """Reduce cualquier texto a un nombre de archivo simple y seguro (``daemon.names.safe_name``)."""
    return safe_name(name, fallback)


def filename_from_response(headers: Any, url: URL) -> str:
    """Nombre según Content-Disposition o, en su defecto, el último segmento de la URL.

    El nombre del servidor nunca se usa crudo: pasa por las reglas del ``filename`` de un
    trabajo; si no queda nada (vacío, sólo puntos), se usa el de la URL y, si tampoco, ``download``.
    """
    from_url = safe_name(unquote(urlsplit(str(url)).path.rsplit("/", 1)[-1]))
    disposition = headers.get("Content-Disposition", "")
    match = _DISPOSITION_STAR.search(disposition)
    if match:
        try:
            raw = unquote(match.group(2).strip().strip('"'), encoding=match.group(1) or "utf-8", errors="strict")
            return safe_name(raw, from_url)
        except (LookupError, UnicodeDecodeError):
            pass
    match = _DISPOSITION.search(disposition)
    if match:
        return safe_name((match.group(1) or match.group(2) or "").strip(), from_url)
    return from_url


class _GuardedConnector(aiohttp.TCPConnector):
    """Conector que rechaza direcciones no públicas al resolver (también IPs literales), salvo
    las de ``allowed`` (``download.allowed_networks``)."""

    def __init__(self, *args: Any, allowed: tuple[IPNetwork, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowed = allowed

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None) -> list[Any]:
        results = await super()._resolve_host(host, port, traces=traces)
        allowed = [r for r in results if forbidden_reason(r["host"], self._allowed) is None]
        if not allowed:
            reason = forbidden_reason(results[0]["host"], self._allowed) if results else "no address"
            raise PrivateAddressRefused(
                f"refusing to connect to {host}: {reason}; set download.allow_private_networks: true "
                "(or list its network in download.allowed_networks) to allow it",
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
    """Descargador HTTP(S): ``await HttpDownloader().download(options, progress)``.

    ``ca_bundle``: archivo PEM con CAs de confianza además de las del sistema
    (``download.ca_bundle``), para servidores con una CA propia.
    """

    name = "http"

    def __init__(self, fsync: bool = True, user_agent: str = "videonote-dl/0.1",
                 ca_bundle: Path | None = None) -> None:
        self.fsync = fsync
        self.user_agent = user_agent
        self._ssl = tls_context(ca_bundle)
        self._sessions: dict[tuple[bool, tuple[str, ...]], aiohttp.ClientSession] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-sink")

    def _session(self, allow_private: bool, allowed_networks: tuple[str, ...] = ()) -> aiohttp.ClientSession:
        key = (allow_private, () if allow_private else allowed_networks)
        session = self._sessions.get(key)
        if session is None or session.closed:
            common: dict[str, Any] = {"limit": 0, "ttl_dns_cache": 60, "enable_cleanup_closed": False, "ssl": self._ssl}
            connector = (aiohttp.TCPConnector(**common) if allow_private
                         else _GuardedConnector(allowed=parse_networks(allowed_networks), **common))
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                read_bufsize=256 * 1024,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
                # Sin tarro de cookies: la sesión es compartida y un Set-Cookie de un trabajo no
                # debe viajar en las peticiones de otro.
                cookie_jar=aiohttp.DummyCookieJar(),
                max_line_size=16384,
                max_field_size=16384,
            )
            self._sessions[key] = session
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
        try:
            return await self._download(options, progress)
        except DownloadError:
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError, HttpProcessingError) as exc:
            raise BadResponse(f"the server's response is not valid HTTP: {exc}") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionFailed(f"the connection failed: {exc}") from None
        except ssl.SSLError as exc:
            raise TlsError(f"TLS failed: {exc}") from None
        except OSError as exc:
            # Los fallos de red ya salieron traducidos: lo que queda es el disco local.
            where = f" ({exc.filename})" if exc.filename else ""
            raise StorageError(f"storage error: {exc.strerror or exc}{where}", errno=exc.errno) from None
        except (ValueError, UnicodeError, LookupError) as exc:
            # Red de seguridad: nada sale de aquí sin un ``kind`` de la lista cerrada.
            raise InternalDownloadError(f"{type(exc).__name__}: {exc}") from exc

    async def _download(self, options: DownloadOptions, progress: ProgressCallback | None) -> DownloadResult:
        assert options.output_path is not None
        temp_dir = options.output_path
        part, meta_path = temp_dir / PART_NAME, temp_dir / META_NAME
        meta = self._load_meta(meta_path, options.url)
        offset = part.stat().st_size if meta and part.exists() else 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(options.timeout, 30), sock_read=options.timeout)
        session = self._session(options.allow_private_networks, options.allowed_networks)
        restarted: str | None = None
        while True:
            response = await self._open(session, options, offset, meta, timeout)
            why = self._resume_refused(response, offset, meta) if offset else None
            if why is None:
                break
            # La parte local no sirve para lo que manda el servidor ahora (otro archivo, otro
            # trozo, otro tamaño, o un 416): se tira y se pide de cero, en este mismo intento.
            response.release()
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            offset, meta, restarted = 0, None, why
        try:
            result = await self._receive(response, options, part, meta_path, offset, progress)
        finally:
            response.release()
        if restarted is not None:
            result.extra["restarted"] = restarted
        return result

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
        resume: dict[str, str] = {}
        if offset and meta:
            validator = meta.get("etag") if not str(meta.get("etag", "W/")).startswith("W/") else None
            validator = validator or meta.get("last_modified")
            if validator:
                resume = {"Range": f"bytes={offset}-", "If-Range": validator}
        job_origin = url.origin()
        # Las credenciales nunca pasan a otro origen, aunque se pidan en ``forward_headers``.
        forward = {name.lower() for name in options.forward_headers} - set(_AUTH_HEADERS)
        for hop in range(options.max_redirects + 1):
            if url.origin() == job_origin:
                headers = {**options.headers, **resume}
            else:
                # Las cabeceras del trabajo son para su origen: a otro sólo van las que el
                # trabajo deja pasar (``forward_headers``). Range/If-Range son nuestras y no
                # son secretas: siguen al archivo (p. ej. a su CDN) para poder reanudar allí.
                headers = {k: v for k, v in options.headers.items() if k.lower() in forward} | resume
            response = await self._request(session, url, headers, timeout, options)
            if response.status in _REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                url = self._redirect_target(url, location, hop + 1, options)
                continue
            return response
        raise TooManyRedirects(f"more than {options.max_redirects} redirects; the server may be in a redirect loop")

    @staticmethod
    def _redirect_target(url: URL, location: str, hop: int, options: DownloadOptions) -> URL:
        """El destino de un Location, comprobado: esquema permitido, absoluto y sin credenciales."""
        shown = printable(redact(location), 200)
        try:
            target = URL(location, encoded="%" in location)
            joined = url.join(target)
        except (ValueError, TypeError) as exc:
            raise BadResponse(f"redirect hop {hop}: the Location {shown!r} is not a URL ({exc})") from None
        scheme = joined.scheme.lower()
        if scheme not in options.allowed_schemes:
            raise SchemeNotAllowed(
                f"redirect hop {hop} goes to a {scheme or 'scheme-less'}: URL ({shown}); only "
                f"{', '.join(options.allowed_schemes)} redirects are followed"
            )
        if not joined.is_absolute() or not joined.host:
            raise BadResponse(f"redirect hop {hop}: the Location {shown!r} has no host")
        if target.is_absolute() and (target.user is not None or target.password is not None):
            # Credenciales puestas por el servidor en el Location: no se envían a ningún sitio.
            joined = joined.with_user(None)
        return joined

    async def _request(self, session: aiohttp.ClientSession, url: URL, headers: dict[str, str],
                       timeout: aiohttp.ClientTimeout, options: DownloadOptions) -> aiohttp.ClientResponse:
        """Una petición (un salto), con cada fallo traducido a su ``kind``."""
        where = f"{url.host}:{url.port}"
        try:
            return await session.get(url, headers=headers, allow_redirects=False, timeout=timeout)
        except PrivateAddressRefused:
            raise
        except TimeoutError:
            # Antes que OSError/ClientError: TimeoutError es un OSError y ServerTimeoutError de
            # aiohttp es ambas cosas; un servidor callado es un timeout, no un fallo de conexión.
            raise DownloadTimeout(f"no answer from {where} within {options.timeout:.0f}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TlsError(
                f"the TLS certificate of {where} is not trusted ({exc.certificate_error}); if the server uses "
                "your own CA, set download.ca_bundle to its PEM file", host=url.host,
            ) from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise TlsError(f"the TLS handshake with {where} failed: {exc}", host=url.host) from None
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise InvalidUrl(f"invalid URL {redact(str(url))}: {exc}") from None
        except aiohttp.ClientConnectorDNSError as exc:
            raise ConnectionFailed(f"cannot resolve {url.host}: {exc.os_error}") from None
        except aiohttp.ClientResponseError as exc:
            # El analizador de aiohttp rechazó la respuesta (cabeceras enormes o mal formadas...).
            raise BadResponse(f"{where} sent a response that is not valid HTTP: {exc.message}",
                              status=exc.status or None) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"cannot connect to {where}: {exc}") from None

    # --- reanudación --------------------------------------------------------------------
    @staticmethod
    def _resume_refused(response: aiohttp.ClientResponse, offset: int, meta: dict[str, Any] | None) -> str | None:
        """Por qué la respuesta a una petición de reanudación no se puede añadir a la parte local
        (None si se puede, o si no es un 206 y por tanto no se añade nada)."""
        if response.status == 416:
            return "the server refused the range (416)"
        if response.status != 206:
            return None  # un 200 reescribe desde cero; un error se trata en _receive
        meta = meta or {}
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match:
            return f"206 with an unusable Content-Range {response.headers.get('Content-Range')!r}"
        start, end, complete = int(match.group(1)), int(match.group(2)), match.group(3)
        if start != offset:
            return f"206 starts at byte {start}, not at {offset} as asked"
        known_total = meta.get("total")
        if complete == "*" or end + 1 != int(complete) or (known_total is not None and int(complete) != known_total):
            return f"206 with Content-Range {response.headers.get('Content-Range')!r} for a file of {known_total} bytes"
        if response.content_length is not None and response.content_length != end + 1 - start:
            return "206 whose Content-Length disagrees with its Content-Range"
        etag, last_modified = meta.get("etag"), meta.get("last_modified")
        if etag and not str(etag).startswith("W/"):
            if response.headers.get("ETag") != etag:
                return f"the ETag changed ({etag} -> {response.headers.get('ETag')}): the file changed"
        elif last_modified and response.headers.get("Last-Modified") != last_modified:
            return "the Last-Modified date changed: the file changed"
        return None

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
        resumed = response.status == 206 and offset > 0  # ya validado por _resume_refused
        if response.status == 206 and not resumed and not self._is_whole_file(response):
            # Un 206 a una petición sin Range que no es el archivo entero: nunca se da por bueno.
            raise IncompleteBody(
                f"the server answered 206 with Content-Range {response.headers.get('Content-Range')!r} "
                "to a request for the whole file"
            )
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
            "total": total,
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
        if total is not None and sink.size != total:
            raise IncompleteBody(f"the server sent {sink.size} of {total} bytes", received=sink.size)
        # El nombre publicado lo decide ``filename``; en el directorio aislado no puede pisar los internos.
        final = part.with_name(_DONE_NAME if filename in (PART_NAME, META_NAME) else filename)
        os.replace(part, final)
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
        watch = asyncio.create_task(_watch_parser(response), name="http-parser-watch")
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
        except asyncio.CancelledError:
            # Cancelado desde fuera (tope del intento, parada del daemon): lo ya recibido se
            # guarda igualmente, para que el siguiente intento reanude desde ahí.
            await self._drain(pending, sink, buffer, loop, writer)
            raise
        except TimeoutError:
            # Primero: ServerTimeoutError de aiohttp también es un ClientError.
            await self._drain(pending, sink, buffer, loop, writer)
            raise DownloadTimeout(f"no data from the server for {options.timeout:.0f}s",
                                  received=received) from None
        except aiohttp.ClientPayloadError as exc:
            await self._drain(pending, sink, buffer, loop, writer)
            raise IncompleteBody(f"the connection ended early: {exc}", received=received) from None
        except HttpProcessingError as exc:
            # El analizador puro de aiohttp (sin extensiones C) deja salir su propio error.
            raise BadResponse(f"the body is not valid HTTP: {exc.message}", received=received) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            await self._drain(pending, sink, buffer, loop, writer)
            raise ConnectionFailed(f"the connection failed mid-body: {exc}", received=received) from None
        finally:
            watch.cancel()
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
        if status in (204, 304) or status < 200:
            raise HTTPClientError(
                f"the server answered HTTP {status} {response.reason or ''} to a plain GET: it has no file to "
                "give at this URL".replace("  ", " "), status=status,
            )
        raise HTTPClientError(f"the server answered HTTP {status} {response.reason or ''}".rstrip(), status=status)

    @staticmethod
    def _is_whole_file(response: aiohttp.ClientResponse) -> bool:
        """Si un 206 trae el archivo entero (``bytes 0-N/N+1``, con Content-Length que cuadre)."""
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if not match or match.group(3) == "*" or int(match.group(1)) != 0:
            return False
        size = int(match.group(2)) + 1
        return size == int(match.group(3)) and response.content_length in (None, size)

    @staticmethod
    def _load_meta(meta_path: Path, url: str) -> dict[str, Any] | None:
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) and meta.get("url") == url else None


async def _watch_parser(response: aiohttp.ClientResponse, interval: float = 0.5) -> None:
    """Despierta al lector del cuerpo si el analizador HTTP falló a mitad del cuerpo.

    Con el analizador en C, un cuerpo mal formado (p. ej. un tamaño de trozo chunked inválido
    tras unos bytes buenos) deja el error en el protocolo, no en el flujo del cuerpo, y quita el
    timeout de lectura: ``iter_any()`` esperaría para siempre. Aquí se mira cada ``interval``
    segundos y se entrega ese error al lector como ``bad_response``.
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return
    while True:
        await asyncio.sleep(interval)
        failure = protocol.exception()
        if isinstance(failure, HttpProcessingError):
            response.content.set_exception(
                BadResponse(f"the body is not valid HTTP: {failure.message}".strip()))
            return


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


