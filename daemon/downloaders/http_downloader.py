"""Descargador HTTP(S) en streaming sobre aiohttp.

- Memoria constante: el cuerpo va por lotes de ~1 MiB (``iter_any()``) a un hilo que escribe y
  resume mientras el bucle lee; uno grande por HTTP en claro, con ``splice(2)`` (``http_splice``).
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

Este módulo lleva la petición y el cuerpo; las partes: ``http_session`` (sesiones y guarda de
direcciones), ``http_response`` (estado, Location, Retry-After, nombre del archivo),
``http_resume`` (parte local y validadores) y ``http_sink`` (escritura y sha256 en un hilo).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

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
    IncompleteBody,
    InternalDownloadError,
    InvalidUrl,
    PrivateAddressRefused,
    ProgressCallback,
    RouteToYtdlp,
    SizeLimitExceeded,
    StorageError,
    TlsError,
    TooManyRedirects,
)
from daemon.downloaders.http_response import (
    REDIRECTS,
    filename_from_response,
    raise_for_status,
    redirect_target,
    watch_parser,
)
from daemon.downloaders.http_resume import (
    META_NAME,
    PART_NAME,
    is_whole_file,
    load_meta,
    resume_headers,
    resume_refused,
)
from daemon.downloaders.http_session import new_session
from daemon.downloaders.http_sink import WRITE_BATCH, Sink
from daemon.downloaders.http_splice import can_splice, splice_body
from daemon.downloaders.netguard import session_tls
from daemon.events import redact
from daemon.faultpoints import crash_point
from daemon.file_io import THREADED, FileIo
from daemon.manifest_routing import MANIFEST_CONTENT_TYPES

__all__ = ["META_NAME", "PART_NAME", "WRITE_BATCH", "HttpDownloader"]

# Nombre del archivo terminado en el directorio aislado si el publicado coincidiera con uno interno.
_DONE_NAME = "download.done"
_NO_RESUME_BELOW = 64 * 1024
_IN_FLIGHT = 2  # lotes escribiéndose mientras se lee el siguiente
_AUTH_HEADERS = ("authorization", "cookie", "proxy-authorization")


class HttpDownloader:
    """Descargador HTTP(S): ``await HttpDownloader().download(options, progress)``.

    ``ca_bundle``: archivo PEM con CAs de confianza además de las del sistema
    (``download.ca_bundle``), para servidores con una CA propia.
    """

    name = "http"

    def __init__(self, fsync: bool = True, user_agent: str = "videonote-dl/0.1",
                 ca_bundle: Path | None = None, file_io: FileIo | None = None) -> None:
        self.fsync = fsync
        self.file_io = file_io or THREADED
        self.user_agent = user_agent
        self._ssl = session_tls(ca_bundle)
        self._sessions: dict[tuple[bool, tuple[str, ...]], aiohttp.ClientSession] = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-sink")

    def _session(self, allow_private: bool, allowed_networks: tuple[str, ...] = ()) -> aiohttp.ClientSession:
        key = (allow_private, () if allow_private else allowed_networks)
        session = self._sessions.get(key)
        if session is None or session.closed:
            session = new_session(self.user_agent, self._ssl, allow_private, allowed_networks)
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        """Cierra las sesiones y el hilo de escritura."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def download(self, options: DownloadOptions, progress: ProgressCallback | None = None) -> DownloadResult:
        """Descarga ``options.url`` a ``options.output_path`` (el directorio aislado del trabajo)."""
        if options.output_path is None:
            raise ValueError("options.output_path must be the isolated temp dir")
        try:
            return await self._download(options, progress)
        except (DownloadError, RouteToYtdlp):
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
        meta = load_meta(meta_path, options.url)
        offset = part.stat().st_size if meta and part.exists() else 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(options.timeout, 30), sock_read=options.timeout)
        session = self._session(options.allow_private_networks, options.allowed_networks)
        restarted: str | None = None
        while True:
            response = await self._open(session, options, offset, meta, timeout)
            # ``content_type`` de aiohttp: el tipo sin parámetros, en minúsculas.
            if options.route_manifests and response.content_type in MANIFEST_CONTENT_TYPES:
                response.release()  # ni un byte del cuerpo: lo descarga yt-dlp
                raise RouteToYtdlp(response.content_type)
            why = resume_refused(response, offset, meta) if offset else None
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
        resume = resume_headers(offset, meta)
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
            if response.status in REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                url = redirect_target(url, location, hop + 1, options)
                continue
            return response
        raise TooManyRedirects(f"more than {options.max_redirects} redirects; the server may be in a redirect loop")

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
        raise_for_status(response)
        resumed = response.status == 206 and offset > 0  # ya validado por _resume_refused
        if response.status == 206 and not resumed and not is_whole_file(response):
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
        sink = Sink(part, 0) if offset == 0 else await loop.run_in_executor(writer, Sink, part, offset)
        # El nombre publicado lo decide ``filename``; en el directorio aislado no puede pisar los internos.
        final = part.with_name(_DONE_NAME if filename in (PART_NAME, META_NAME) else filename)
        try:
            if total is not None and can_splice(response, total - sink.size):  # HTTP en claro, grande
                tail: list[bytes] = await splice_body(response, sink, total, options.timeout, progress, writer)
            else:
                tail = await self._stream(response, sink, options, total, progress, loop, writer)
            # Cola del cuerpo, fsync, nombre final y fsync de la carpeta: un solo salto al hilo de
            # escritura, o ninguno si el cuerpo es pequeño y nada espera a un disco (``file_io``).
            if small and total is not None and self.file_io.runs_inline(total):
                complete = sink.complete_as(tail, final, total, self.fsync)
            else:
                complete = await loop.run_in_executor(writer, sink.complete_as, tail, final, total, self.fsync)
        except OSError as exc:
            raise StorageError(f"cannot write the download: {exc.strerror}", errno=exc.errno) from None
        finally:
            sink.close()
            if writer is not self._executor:
                writer.shutdown(wait=False)
        if not complete:
            raise IncompleteBody(f"the server sent {sink.size} of {total} bytes", received=sink.size)
        meta_path.unlink(missing_ok=True)
        return DownloadResult(
            path=final, filename=filename, size=sink.size, sha256=sink.hasher.hexdigest(),
            final_url=redact(str(response.url)),
            resumed=resumed,
        )

    async def _stream(
        self,
        response: aiohttp.ClientResponse,
        sink: Sink,
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
        watch = asyncio.create_task(watch_parser(response), name="http-parser-watch")
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
        sink: Sink,
        buffer: list[bytes],
        loop: asyncio.AbstractEventLoop,
        writer: Executor,
    ) -> None:
        """Escribe lo recibido hasta ahora (para poder reanudar desde ahí)."""
        while pending:
            await pending.popleft()
        if buffer:
            await loop.run_in_executor(writer, sink.write, buffer)

