"""Descargador yt-dlp: páginas de vídeo (y medios directos) a través de yt-dlp, aislado y cancelable.

Cada trabajo corre yt-dlp en un proceso propio, en su propio grupo de procesos (``setsid``), con
stdin cerrado y sólo las opciones que fija este módulo: ``--ignore-config``, rutas dentro del
directorio aislado del trabajo (temporales y fragmentos incluidos), progreso en JSON por stdout,
``--print after_move:...`` para conocer el archivo final y ``--`` antes de la URL. De un trabajo
sólo llegan a yt-dlp la URL, ``format``, ``playlist`` y ``max_bytes``; nada más puede añadir
opciones. La cancelación y el ``timeout`` terminan el grupo entero (TERM, KILL tras
``kill_grace``) y esperan al proceso: no quedan zombis ni huérfanos.

Dos formas de lanzar el proceso, con el mismo argv y la misma lectura de stdout/stderr:

- ``subprocess`` (etapa 1): ``python -m yt_dlp ...`` por trabajo (~0,6-0,8 s de CPU cada uno).
- ``zygote`` (etapa 2): un proceso auxiliar de larga vida (``ytdlp_zygote.py serve``) con yt-dlp
  ya importado y precalentado hace ``fork()`` por trabajo; el hijo hace ``setsid()`` y ejecuta
  ``yt_dlp.main(argv)``. Si el zigoto no está disponible se vuelve a la etapa 1.

``pick_downloader`` decide entre ``http`` e ``ytdlp`` para ``downloader: auto`` consultando en
proceso (sin subprocesos) los extractores de yt-dlp, cargados una vez y de forma perezosa.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import mimetypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from daemon.downloaders.base import (
    ConnectionFailed,
    DownloadError,
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    HTTPClientError,
    IncompleteBody,
    PermanentDownloadError,
    PrivateAddressRefused,
    ProgressCallback,
    SchemeNotAllowed,
    ServerError,
    SizeLimitExceeded,
    StorageError,
    TransientDownloadError,
    UnsupportedUrl,
)
from daemon.downloaders.ytdlp_zygote import FORBIDDEN_MESSAGE, is_forbidden_address
from daemon.events import get_logger, redact

__all__ = [
    "FormatUnavailable",
    "MediaUnavailable",
    "YtdlpCrashed",
    "YtdlpDownloader",
    "YtdlpFailed",
    "build_argv",
    "claiming_extractor",
    "classify_failure",
    "pick_downloader",
    "preload_extractors",
    "ytdlp_command",
    "ytdlp_version",
]

_log = get_logger()

# Marcas de las líneas que yt-dlp escribe por stdout para nosotros (plantillas de --print y de
# --progress-template). El resto de stdout son mensajes de pantalla ("[download] ...").
PROGRESS_MARK = "vndl:progress "
INFO_MARK = "vndl:info "
FILE_MARK = "vndl:file "

OUTPUT_TEMPLATE = "%(title).150B [%(id).60B].%(ext)s"
TEMP_SUBDIR = ".ytdlp"
STDERR_TAIL_LINES = 20
_LINE_LIMIT = 256 * 1024
_MAX_LINE_CHARS = 1000
_ZYGOTE_SCRIPT = Path(__file__).with_name("ytdlp_zygote.py")
_ZYGOTE_START_TIMEOUT = 60.0
_ZYGOTE_RETRY_AFTER = 30.0
_SPAWN_REPLY_TIMEOUT = 30.0


# --- errores propios (todos encajan en la jerarquía de base.py) ----------------------------
class MediaUnavailable(PermanentDownloadError):
    """El sitio dice que el vídeo no está disponible (privado, borrado, restringido...)."""

    kind = "media_unavailable"


class FormatUnavailable(PermanentDownloadError):
    """El ``format`` pedido no existe para ese vídeo o no es una especificación válida."""

    kind = "format_unavailable"


class YtdlpFailed(PermanentDownloadError):
    """yt-dlp falló con un error que no sabemos clasificar: no se reintenta."""

    kind = "ytdlp_failed"


class YtdlpCrashed(TransientDownloadError):
    """yt-dlp murió por una señal ajena (OOM...) o el zigoto desapareció: se reintenta."""

    kind = "ytdlp_crashed"


class _SizeLimitHit(Exception):
    """Interna: el progreso superó ``max_bytes``; hay que matar el proceso."""

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.seen = seen


class _ZygoteUnavailable(Exception):
    """Interna: el zigoto no pudo lanzar el trabajo (que no llegó a empezar)."""


# --- versión de yt-dlp -----------------------------------------------------------------------
_version_cache: str | None = None


def ytdlp_version() -> str:
    """Versión de yt-dlp instalada, leída de los metadatos del paquete (sin importar yt_dlp)."""
    global _version_cache
    if _version_cache is None:
        try:
            from importlib.metadata import PackageNotFoundError, version

            _version_cache = version("yt-dlp")
        except PackageNotFoundError:
            _version_cache = "unknown"
    return _version_cache


# --- elección de descargador (downloader: auto) ------------------------------------------------
_Matcher = Callable[[str], Any]


@dataclass(slots=True)
class _ExtractorIndex:
    """Índice de extractores.

    ``ordered``: (clave, coincidencia) en el orden de yt-dlp, para dar la respuesta exacta.
    ``patterns``: todos los ``_VALID_URL`` compilados (también los de las clases que redefinen
    ``suitable``), para descartar deprisa con ``any(map(re.Pattern.match, ...))``, un bucle en C.
    ``always``: los ``suitable`` propios de clases sin ``_VALID_URL``, que hay que llamar siempre.

    El descarte rápido es exacto porque un ``suitable`` propio sólo estrecha su ``_VALID_URL``
    en favor de otro extractor no genérico (así son las 75 clases que lo redefinen en yt-dlp
    2026.10.26): si ningún ``_VALID_URL`` coincide, ningún extractor reclama la URL.
    """

    ordered: list[tuple[str, _Matcher]]
    patterns: list[re.Pattern[str]]
    always: list[_Matcher]


_index_lock = threading.Lock()
_index: _ExtractorIndex | None = None
_claims: collections.OrderedDict[str, str | None] = collections.OrderedDict()
_claims_lock = threading.Lock()
_CLAIMS_MAX = 1024


def _load_index() -> _ExtractorIndex:
    """Carga una vez las clases de extractores de yt-dlp y prepara el índice.

    Se omiten el genérico y las clases que yt-dlp no usa por defecto (``_ENABLED = False``).
    Se compilan los ``_VALID_URL`` (los mismos objetos que usa yt-dlp) y se hace una pasada de
    prueba para que los ``suitable`` propios compilen ya lo que compilan perezosamente.
    """
    global _index
    with _index_lock:
        if _index is not None:
            return _index
        from yt_dlp.extractor import gen_extractor_classes

        ordered: list[tuple[str, _Matcher]] = []
        patterns: list[re.Pattern[str]] = []
        always: list[_Matcher] = []
        for klass in gen_extractor_classes():
            key = klass.ie_key()
            if key == "Generic" or not getattr(klass, "_ENABLED", True):
                continue
            own: tuple[re.Pattern[str], ...] = ()
            if klass._VALID_URL:
                klass._match_valid_url("")  # compila y guarda _VALID_URL_RE en la clase
                own = tuple(klass.__dict__.get("_VALID_URL_RE") or ())
            patterns.extend(own)
            if _default_suitable(klass):
                ordered.extend((key, pattern.match) for pattern in own)
            else:
                ordered.append((key, klass.suitable))
                if not own:
                    always.append(klass.suitable)
        for _key, match in ordered:  # pasada de prueba: compilaciones perezosas
            _safe(match, "http://127.0.0.1/")
        _index = _ExtractorIndex(ordered, patterns, always)
        return _index


def preload_extractors() -> None:
    """Prepara ya el índice de ``pick_downloader`` (importa yt_dlp; ~1 s de CPU una vez).

    Opcional; pensado para ``await asyncio.to_thread(preload_extractors)`` al arrancar, para
    que el primer trabajo ``auto`` no bloquee el bucle de eventos."""
    _load_index()


def _default_suitable(klass: type) -> bool:
    """True si ``suitable`` y ``_match_valid_url`` son los de la clase base de yt-dlp."""
    for name in ("suitable", "_match_valid_url"):
        owner = next((k for k in klass.__mro__ if name in k.__dict__), None)
        if owner is None or owner.__name__ not in ("InfoExtractor", "LazyLoadExtractor"):
            return False
    return True


def _safe(match: _Matcher, url: str) -> bool:
    try:
        return bool(match(url))
    except Exception:
        return False  # un suitable() propio que falle no decide nada


def _first_claim(url: str) -> str | None:
    index = _load_index()
    if not any(map(re.Pattern.match, index.patterns, itertools.repeat(url))) and not any(
        _safe(match, url) for match in index.always
    ):
        return None
    # Algún _VALID_URL coincide: el recorrido en orden da el extractor que elegiría yt-dlp.
    return next((key for key, match in index.ordered if _safe(match, url)), None)


def claiming_extractor(url: str) -> str | None:
    """Clave del primer extractor de yt-dlp (no genérico) que reclama ``url``, o None.

    La primera llamada importa yt_dlp y prepara el índice (~0,5-0,7 s, una vez por proceso);
    las siguientes cuestan décimas de milisegundo. No usa la red ni lanza procesos.
    """
    with _claims_lock:
        if url in _claims:
            _claims.move_to_end(url)
            return _claims[url]
    found = _first_claim(url)
    with _claims_lock:
        _claims[url] = found
        if len(_claims) > _CLAIMS_MAX:
            _claims.popitem(last=False)
    return found


def pick_downloader(url: str, requested: str = "auto") -> str:
    """``"http"`` o ``"ytdlp"`` para ``url`` según ``requested`` (auto | http | ytdlp).

    ``auto`` elige yt-dlp cuando uno de sus extractores distinto del genérico reclama la URL
    (``suitable()``), y HTTP en otro caso. yt_dlp se importa sólo en la primera llamada con
    ``auto``, nunca al importar el daemon.
    """
    if requested == "ytdlp":
        return "ytdlp"
    if requested == "http":
        return "http"
    if requested != "auto":
        raise ValueError(f"unknown downloader {requested!r}; use auto, http or ytdlp")
    return "ytdlp" if claiming_extractor(url) is not None else "http"


# --- argv -----------------------------------------------------------------------------------
def build_argv(
    options: DownloadOptions,
    *,
    socket_timeout: float = 30.0,
    progress_delta: float = 0.25,
    fragment_retries: int = 3,
) -> list[str]:
    """Argumentos de yt-dlp para un trabajo (sin el intérprete). La URL va la última, tras ``--``.

    Cada valor que viene del trabajo es un único elemento de argv en la forma ``--opción=valor``,
    así que nunca puede leerse como otra opción.
    """
    if options.output_path is None:
        raise ValueError("options.output_path is not set; run the download through DownloadLifecycle")
    home = str(options.output_path)
    temp = str(options.output_path / TEMP_SUBDIR)
    socket_timeout = max(1.0, min(float(socket_timeout), float(options.timeout)))
    argv = [
        "--ignore-config",
        "--no-plugin-dirs",
        "--no-cache-dir",
        "--yes-playlist" if options.playlist else "--no-playlist",
        f"--paths=home:{home}",
        f"--paths=temp:{temp}",
        f"--output={OUTPUT_TEMPLATE}",
        # --print implica --quiet: --no-quiet deja los mensajes de pantalla en stdout (p. ej. el
        # aviso de --max-filesize, que no es un error) y --progress mantiene el progreso.
        "--no-quiet",
        "--progress",
        "--newline",
        "--color=never",
        f"--progress-delta={progress_delta:g}",
        f"--progress-template=download:{PROGRESS_MARK}"
        "%(progress.{status,downloaded_bytes,total_bytes,total_bytes_estimate,filename})j",
        f"--print=before_dl:{INFO_MARK}%(.{{extractor_key,extractor,id,ext,format_id}})j",
        f"--print=after_move:{FILE_MARK}%(.{{filepath,extractor_key,extractor,id}})j",
        "--no-mtime",
        f"--socket-timeout={socket_timeout:g}",
        # Los reintentos de intentos completos son del gestor; dentro de un intento sólo se
        # reintentan fragmentos sueltos, y un fragmento perdido aborta (no un archivo corrupto).
        "--retries=0",
        "--extractor-retries=0",
        f"--fragment-retries={int(fragment_retries)}",
        "--abort-on-unavailable-fragments",
        f"--max-filesize={int(options.max_bytes)}",
    ]
    if options.format:
        argv.append(f"--format={options.format}")
    argv += ["--", options.url]
    return argv


def ytdlp_command(args: Sequence[str], *, guard: bool, python: str | None = None) -> list[str]:
    """Línea de órdenes de la etapa 1: ``python -P -m yt_dlp ARGS`` o, con guarda de red,
    ``python -P ytdlp_zygote.py run ARGS`` (el mismo ``yt_dlp.main`` con ``connect()`` vigilado).
    ``-P`` evita que el directorio actual (el del trabajo) entre en ``sys.path``."""
    interpreter = python or sys.executable
    if guard:
        return [interpreter, "-P", str(_ZYGOTE_SCRIPT), "run", *args]
    return [interpreter, "-P", "-m", "yt_dlp", *args]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUTF8="1", PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    for key in ("PYTHONSTARTUP", "PYTHONINSPECT", "YTDLP_NO_LAZY_EXTRACTORS"):
        env.pop(key, None)
    return env


# --- URL y red --------------------------------------------------------------------------------
def _validate_url(options: DownloadOptions) -> tuple[str, int]:
    """Comprueba esquema y forma de la URL; devuelve (host, puerto)."""
    url = options.url
    if not isinstance(url, str) or not url or url.startswith("-"):
        raise UnsupportedUrl(f"{redact(str(url))!r} is not a URL yt-dlp may be given", url=redact(str(url)))
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise UnsupportedUrl("the URL contains spaces or control characters", url=redact(url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = tuple(s.lower() for s in options.allowed_schemes)
    if scheme not in allowed:
        raise SchemeNotAllowed(
            f"URL scheme {scheme or '(none)'!r} is not allowed; allowed: {', '.join(allowed)}",
            url=redact(url),
        )
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise UnsupportedUrl(f"malformed URL: {exc}", url=redact(url)) from None
    if not host:
        raise UnsupportedUrl("the URL has no host", url=redact(url))
    return host, port or (443 if scheme == "https" else 80)


async def _refuse_private_host(host: str, port: int, url: str) -> None:
    """Resuelve ``host`` y rechaza el trabajo si alguna dirección no es pública.

    Sólo cubre el primer salto: las redirecciones y peticiones que yt-dlp haga después las
    vigila la guarda de red del proceso hijo (``install_network_guard``).
    """
    try:
        addresses = [host] if _is_ip(host) else [
            str(info[4][0])
            for info in await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ]
    except socket.gaierror as exc:
        raise ConnectionFailed(f"cannot resolve {host}: {exc.strerror or exc}", url=redact(url)) from None
    bad = sorted({a for a in addresses if is_forbidden_address(a)})
    if bad or not addresses:
        raise PrivateAddressRefused(
            f"{host} resolves to a non-public address ({', '.join(bad) or 'none'}); "
            "set download.allow_private_networks to allow it",
            url=redact(url), addresses=bad,
        )


def _is_ip(host: str) -> bool:
    try:
        is_forbidden_address(host)
    except ValueError:
        return False
    return True


# --- clasificación de errores ---------------------------------------------------------------
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
_FORMAT_HINTS = ("requested format is not available", "invalid format specification",
                 "no video formats found", "format is not available", "invalid filter specification")
_UNAVAILABLE_HINTS = ("video unavailable", "private video", "this video is private", "is private",
                      "has been removed", "been removed", "no longer available", "not available",
                      "has been terminated", "copyright", "sign in to confirm", "members-only",
                      "members only", "this live event will begin", "premieres in", "geo restrict",
                      "login required", "requires authentication", "account required", "blocked it")
_STORAGE_HINTS = ("no space left on device", "disk quota exceeded", "read-only file system",
                  "file name too long", "file too large")
_INCOMPLETE_HINTS = ("content too short", "did not get any data blocks", "incompleteread",
                     "incomplete read", "downloaded file is empty")
_TIMEOUT_HINTS = ("timed out", "timeout")
_CONNECTION_HINTS = ("connection refused", "connection reset", "connection aborted",
                     "remote end closed", "network is unreachable", "no route to host",
                     "name or service not known", "temporary failure in name resolution",
                     "failed to resolve", "getaddrinfo failed", "errno -2", "errno -3",
                     "eof occurred in violation", "unexpected eof", "broken pipe", "unable to connect",
                     "connection error", "protocolerror", "http/1.1 protocol error")


def classify_failure(
    returncode: int | None,
    stderr_lines: Sequence[str],
    screen_lines: Sequence[str] = (),
    **details: Any,
) -> DownloadError:
    """Convierte la salida de yt-dlp en un error de la jerarquía de base.py.

    Permanentes (no se reintentan): URL no soportada, 4xx, vídeo no disponible, formato,
    almacenamiento, red privada y cualquier error desconocido. Transitorios: 5xx/408/429, red,
    timeouts, cuerpo incompleto y muertes por señal ajena. ``details`` se añade al error junto
    con ``stderr_tail`` (últimas líneas, sin credenciales), ``returncode`` y el mensaje de yt-dlp.
    """
    tail = [_clean_line(line) for line in stderr_lines][-STDERR_TAIL_LINES:]
    errors = [line for line in tail if line.startswith("ERROR:")]
    message = errors[-1] if errors else (tail[-1] if tail else "")
    text = (message if errors else "\n".join(tail)).lower()
    info: dict[str, Any] = {"returncode": returncode, "stderr_tail": tail, "ytdlp_message": message,
                            **details}
    shown = message[len("ERROR:"):].strip() if message.startswith("ERROR:") else message
    shown = shown or "no message"

    if FORBIDDEN_MESSAGE.lower() in text:
        return PrivateAddressRefused(f"yt-dlp was refused a non-public address: {shown}", **info)
    if "unsupported url" in text or "is not a valid url" in text:
        return UnsupportedUrl(f"yt-dlp does not support this URL: {shown}", **info)
    status_match = _HTTP_STATUS.search(message) or _HTTP_STATUS.search("\n".join(tail))
    if status_match:
        status = int(status_match.group(1))
        if status >= 500 or status in (408, 429):
            return ServerError(f"server error {status}: {shown}", status=status, **info)
        if 400 <= status < 500:
            return HTTPClientError(f"HTTP {status}: {shown}", status=status, **info)
    if any(h in text for h in _FORMAT_HINTS):
        return FormatUnavailable(f"format not available: {shown}", **info)
    if any(h in text for h in _UNAVAILABLE_HINTS):
        return MediaUnavailable(f"media unavailable: {shown}", **info)
    if any(h in text for h in _STORAGE_HINTS):
        return StorageError(f"cannot write the file: {shown}", **info)
    if any(h in text for h in _INCOMPLETE_HINTS):
        return IncompleteBody(f"incomplete download: {shown}", **info)
    if any(h in text for h in _TIMEOUT_HINTS):
        return DownloadTimeout(f"network timeout: {shown}", **info)
    if any(h in text for h in _CONNECTION_HINTS):
        return ConnectionFailed(f"connection failed: {shown}", **info)
    if returncode is None:
        return YtdlpCrashed("the yt-dlp helper process vanished during the download", **info)
    if returncode < 0:
        name = _signal_name(-returncode)
        return YtdlpCrashed(f"yt-dlp was killed by {name}", signal=name, **info)
    if returncode == 2:
        return YtdlpFailed(f"yt-dlp rejected its options: {shown}", **info)
    if returncode == 0:
        if any("larger than max-filesize" in line for line in screen_lines):
            return SizeLimitExceeded(f"the file is larger than the limit: {_last_match(screen_lines)}",
                                     **info)
        return YtdlpFailed("yt-dlp finished without producing a file"
                           + (f": {_last_screen(screen_lines)}" if screen_lines else ""), **info)
    return YtdlpFailed(f"yt-dlp failed: {shown}", **info)


def _clean_line(line: str) -> str:
    line = redact(line.replace("\r", "").rstrip())
    return line if len(line) <= _MAX_LINE_CHARS else line[:_MAX_LINE_CHARS] + "..."


def _last_match(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        if "max-filesize" in line:
            return _clean_line(line).removeprefix("[download] ").strip()
    return ""


def _last_screen(lines: Sequence[str]) -> str:
    return _clean_line(lines[-1]) if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- procesos en marcha -----------------------------------------------------------------------
@dataclass(slots=True)
class _ExitInfo:
    returncode: int | None  # negativo: señal; None: desconocido (el zigoto desapareció)
    cpu_s: float | None = None


class _Running:
    """Un yt-dlp en marcha, sea subproceso o hijo del zigoto: pid (= pgid), stdout, stderr."""

    mode = "?"

    def __init__(self, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._transports = transports
        self.exit_info: _ExitInfo | None = None
        self._wait_task: asyncio.Task[_ExitInfo] = asyncio.ensure_future(self._wait_impl())

    async def _wait_impl(self) -> _ExitInfo:  # pragma: no cover - lo redefine cada modo
        raise NotImplementedError

    async def wait(self) -> _ExitInfo:
        """Espera el final (varias esperas comparten la misma; cancelar una no la cancela)."""
        return await asyncio.shield(self._wait_task)

    def signal_group(self, sig: int) -> None:
        """Envía ``sig`` al grupo entero mientras el proceso no haya sido recogido."""
        if self.exit_info is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


class _SubprocessRun(_Running):
    """Etapa 1: ``Popen`` propio en una sesión nueva; lo recogemos nosotros con ``wait4``."""

    mode = "subprocess"

    def __init__(self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader, transports: list[asyncio.BaseTransport]) -> None:
        self.popen = popen
        super().__init__(popen.pid, stdout, stderr, transports)

    async def _wait_impl(self) -> _ExitInfo:
        pid = self.pid
        await self._exited()
        # El proceso es un zombi sin recoger: su pgid no puede reutilizarse todavía. Se mata lo
        # que quede en el grupo y después se recoge (con su uso de CPU).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _pid, status, usage = os.wait4(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = returncode  # que Popen no intente recogerlo otra vez
        self.exit_info = _ExitInfo(returncode, round(usage.ru_utime + usage.ru_stime, 6))
        return self.exit_info

    async def _exited(self) -> None:
        """Espera a que el hijo termine sin recogerlo (pidfd; si no hay, un hilo con waitid)."""
        pid = self.pid
        flags = os.WEXITED | os.WNOWAIT
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            await asyncio.to_thread(os.waitid, os.P_PID, pid, flags)
            return
        loop = asyncio.get_running_loop()
        try:
            while os.waitid(os.P_PID, pid, flags | os.WNOHANG) is None:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(pidfd, _resolve, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)


class _ZygoteRun(_Running):
    """Etapa 2: hijo del zigoto. El zigoto lo recoge y nos manda el estado por un socket."""

    mode = "zygote"

    def __init__(self, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport], status: asyncio.StreamReader) -> None:
        self._status = status
        super().__init__(pid, stdout, stderr, transports)

    async def _wait_impl(self) -> _ExitInfo:
        try:
            line = await self._status.readline()
            message = json.loads(line) if line else {}
        except (ValueError, OSError):
            message = {}
        if "returncode" not in message:
            # El zigoto murió: el hijo queda huérfano. Se mata su grupo por si sigue vivo.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.exit_info = _ExitInfo(None, None)
        else:
            self.exit_info = _ExitInfo(int(message["returncode"]), message.get("cpu_s"))
        return self.exit_info


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def _lines(reader: asyncio.StreamReader) -> Any:
    """Itera las líneas de ``reader`` como texto; corta las demasiado largas sin atascarse."""
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                yield exc.partial.decode("utf-8", "replace")
            return
        except asyncio.LimitOverrunError as exc:
            raw = await reader.read(exc.consumed)
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


# --- zigoto (lado del daemon) ------------------------------------------------------------------
class _ZygoteClient:
    """Arranca el zigoto a demanda, le pide procesos y lo para. Un fallo lo deja fuera un rato."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.popen: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.version: str | None = None
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    async def ensure_started(self) -> bool:
        async with self._lock:
            if self.control is not None and self.popen is not None and self.popen.poll() is None:
                return True
            if self.popen is not None:
                # Murió entre trabajos. Si llevaba un rato vivo se rearranca ya; si murió nada más
                # arrancar, cuenta como fallo y se espera antes de volver a intentarlo.
                lived = time.monotonic() - self._started_at
                self._discard(f"exited with status {self.popen.returncode}",
                              failed=lived < _ZYGOTE_RETRY_AFTER)
            if self._failed_at is not None and time.monotonic() - self._failed_at < _ZYGOTE_RETRY_AFTER:
                return False
            try:
                await self._start()
            except (OSError, TimeoutError, ValueError) as exc:
                self._discard(f"start-up failed: {exc or type(exc).__name__}")
                return False
            except BaseException:
                self._discard("start-up cancelled", failed=False)
                raise
            return True

    async def _start(self) -> None:
        started = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [self.python, "-P", str(_ZYGOTE_SCRIPT), "serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=_child_env(), start_new_session=True, close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_ZYGOTE_START_TIMEOUT):
            data = await loop.sock_recv(ours, 65536)
        if not data:
            raise OSError("the yt-dlp zygote exited during start-up")
        hello = json.loads(data)
        self.version = str(hello.get("ytdlp_version") or ytdlp_version())
        self._failed_at = None
        self._started_at = time.monotonic()
        _log.info("ytdlp.zygote_started", pid=self.popen.pid, ytdlp_version=self.version,
                  startup_s=round(time.monotonic() - started, 3))

    def _discard(self, reason: str, failed: bool = True) -> None:
        """Olvida un zigoto roto (lo mata si sigue vivo); si ``failed``, recuerda cuándo falló."""
        if self.control is not None:
            self.control.close()
            self.control = None
        retry_after_s = _ZYGOTE_RETRY_AFTER if failed else 0.0
        if self.popen is not None:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
            _log.warning("ytdlp.zygote_unavailable", pid=self.popen.pid, reason=reason,
                         retry_after_s=retry_after_s)
        else:
            _log.warning("ytdlp.zygote_unavailable", reason=reason, retry_after_s=retry_after_s)
        self.popen = None
        self._failed_at = time.monotonic() if failed else None

    async def spawn(self, argv: Sequence[str], cwd: Path, guard: bool) -> _ZygoteRun:
        """Pide al zigoto un hijo para ``argv``. ``_ZygoteUnavailable`` si no llegó a empezar.

        Una vez enviada la petición, el resto (esperar el pid, abrir las tuberías) termina
        aunque llegue una cancelación, que se entrega después: así ningún hijo queda sin dueño.
        """
        control = self.control
        if control is None:
            raise _ZygoteUnavailable("not running")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            payload = json.dumps({"argv": list(argv), "cwd": str(cwd), "guard": guard}).encode()
            await _send_fds(control, payload, [out_w, err_w, theirs.fileno()])
        except BaseException as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            ours.close()
            if isinstance(exc, OSError):
                async with self._lock:
                    if self.control is control:
                        self._discard(f"request failed: {exc.strerror or exc}")
                raise _ZygoteUnavailable(str(exc)) from None
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        try:
            return await _complete(self._accept(control, ours, out_r, err_r))
        except _ZygoteUnavailable as exc:
            async with self._lock:
                if self.control is control:
                    self._discard(f"no reply to a job request: {exc}")
            raise

    async def _accept(self, control: socket.socket, ours: socket.socket, out_r: int,
                      err_r: int) -> _ZygoteRun:
        """Espera el pid del hijo y abre sus tuberías; si no llega, no hubo hijo."""
        transports: list[asyncio.BaseTransport] = []
        try:
            # Lector a mano, sin StreamWriter: su __del__ cerraría el socket al recogerse.
            status = asyncio.StreamReader(limit=_LINE_LIMIT)
            t_status, _ = await asyncio.get_running_loop().create_unix_connection(
                lambda: asyncio.StreamReaderProtocol(status), sock=ours
            )
            transports.append(t_status)
            async with asyncio.timeout(_SPAWN_REPLY_TIMEOUT):
                line = await status.readline()
            reply = json.loads(line) if line else {}
            if not isinstance(reply, dict) or "pid" not in reply:
                error = reply.get("error") if isinstance(reply, dict) else None
                raise _ZygoteUnavailable(str(error or "the zygote did not start the job"))
            stdout, t_out = await _pipe_reader(out_r)
            out_r = -1
            transports.append(t_out)
            stderr, t_err = await _pipe_reader(err_r)
            err_r = -1
            transports.append(t_err)
        except (OSError, ValueError, TimeoutError) as exc:
            raise _ZygoteUnavailable(str(exc) or type(exc).__name__) from None
        finally:
            if err_r >= 0:
                for transport in transports:
                    transport.close()
                if not transports:
                    ours.close()
                for fd in (out_r, err_r):
                    if fd >= 0:
                        os.close(fd)
        return _ZygoteRun(int(reply["pid"]), stdout, stderr, transports, status)

    async def aclose(self) -> None:
        """Cierra el socket de control: el zigoto termina sus trabajos vivos y sale."""
        async with self._lock:
            control, popen = self.control, self.popen
            self.control, self.popen = None, None
            if control is not None:
                control.close()
            if popen is None:
                return
            try:
                await asyncio.to_thread(popen.wait, 10)
            except subprocess.TimeoutExpired:
                popen.kill()
                await asyncio.to_thread(popen.wait)
            _log.info("ytdlp.zygote_stopped", pid=popen.pid, returncode=popen.returncode)


async def _send_fds(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """``send_fds`` sobre un socket no bloqueante, esperando a que admita escritura."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(sock, [payload], fds)
            return
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), _resolve, ready)
            try:
                await ready
            finally:
                loop.remove_writer(sock.fileno())


async def _complete(coro: Any) -> Any:
    """Espera ``coro`` hasta el final aunque cancelen la tarea actual; la cancelación se vuelve
    a pedir al terminar, de modo que llega en el siguiente ``await`` (tras la limpieza)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        current = asyncio.current_task()
        if current is not None:
            current.cancel()
    return task.result()


# --- estado de una ejecución ------------------------------------------------------------------
class _RunState:
    """Lo que se sabe de una ejecución: progreso, archivos, extractor y colas de mensajes."""

    def __init__(self, max_bytes: int, progress: ProgressCallback | None) -> None:
        self.max_bytes = max_bytes
        self.progress = progress
        self.completed = 0  # bytes de archivos ya terminados (vídeo + audio por separado, etc.)
        self.files: list[str] = []
        self.extractor: str | None = None
        self.media_id: str | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.screen_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def on_stdout(self, line: str) -> None:
        if line.startswith(PROGRESS_MARK):
            self._on_progress(_json_or_empty(line[len(PROGRESS_MARK):]))
        elif line.startswith(FILE_MARK):
            data = _json_or_empty(line[len(FILE_MARK):])
            if isinstance(data.get("filepath"), str):
                self.files.append(data["filepath"])
            self._on_info(data)
        elif line.startswith(INFO_MARK):
            self._on_info(_json_or_empty(line[len(INFO_MARK):]))
        elif line.strip():
            self.screen_tail.append(_clean_line(line))

    def _on_info(self, data: dict[str, Any]) -> None:
        extractor = data.get("extractor_key") or data.get("extractor")
        if isinstance(extractor, str):
            self.extractor = extractor
        if isinstance(data.get("id"), str):
            self.media_id = data["id"]

    def _on_progress(self, data: dict[str, Any]) -> None:
        downloaded = _as_int(data.get("downloaded_bytes")) or 0
        total = _as_int(data.get("total_bytes"))
        estimate = total or _as_int(data.get("total_bytes_estimate"))
        base = self.completed
        seen = base + downloaded
        if data.get("status") == "finished":
            self.completed = base + (total or downloaded)
        if seen > self.max_bytes or (total is not None and base + total > self.max_bytes):
            raise _SizeLimitHit(max(seen, base + (total or 0)))
        if self.progress is not None:
            self.progress(seen, base + estimate if estimate else None)


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(1024 * 1024)
        view = memoryview(buffer)
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


# --- el descargador -------------------------------------------------------------------------
class YtdlpDownloader:
    """Descargador ``ytdlp`` (protocolo ``Downloader``).

    ``kill_grace``: espera entre TERM y KILL al cancelar o agotar el tiempo.
    ``socket_timeout``: ``--socket-timeout`` de yt-dlp (acotado por el ``timeout`` del trabajo).
    ``use_zygote``: lanzar cada trabajo desde el zigoto (etapa 2); si no, o si el zigoto no está
    disponible, un subproceso por trabajo (etapa 1). Los tres atributos pueden cambiarse en
    caliente (recarga de configuración); ``aclose()`` para el zigoto al parar el daemon.
    """

    name = "ytdlp"

    def __init__(
        self,
        kill_grace: float = 5.0,
        socket_timeout: float = 30.0,
        use_zygote: bool = True,
        python: str | None = None,
        fragment_retries: int = 3,
    ) -> None:
        self.kill_grace = float(kill_grace)
        self.socket_timeout = float(socket_timeout)
        self.use_zygote = bool(use_zygote)
        self.python = python or sys.executable
        self.fragment_retries = int(fragment_retries)
        self._zygote = _ZygoteClient(self.python)

    @property
    def zygote_pid(self) -> int | None:
        """Pid del zigoto si está en marcha (para el estado y las pruebas)."""
        return self._zygote.pid

    async def prestart(self) -> bool:
        """Arranca ya el zigoto (si ``use_zygote``) para que el primer trabajo no espere ~1 s.

        Opcional: sin esto se arranca con el primer trabajo. True si quedó disponible."""
        return self.use_zygote and await self._zygote.ensure_started()

    async def aclose(self) -> None:
        """Para el zigoto (si lo hay). Los trabajos en curso deben cancelarse antes."""
        await self._zygote.aclose()

    async def download(self, options: DownloadOptions, progress: ProgressCallback | None = None) -> DownloadResult:
        """Descarga ``options.url`` con yt-dlp dentro de ``options.output_path``."""
        if options.output_path is None:
            raise ValueError("options.output_path is not set; run the download through DownloadLifecycle")
        out_dir = Path(options.output_path)
        host, port = _validate_url(options)
        if not options.allow_private_networks:
            await _refuse_private_host(host, port, options.url)
        args = build_argv(options, socket_timeout=self.socket_timeout, fragment_retries=self.fragment_retries)
        guard = not options.allow_private_networks
        run, version = await self._start(args, out_dir, guard)
        cid = options.correlation_id
        started_event: dict[str, Any] = {"ytdlp_version": version, "pid": run.pid, "mode": run.mode}
        known = _claims.get(options.url)
        if known:
            started_event["extractor"] = known
        _log.info("ytdlp.started", correlation_id=cid, **started_event)

        state = _RunState(options.max_bytes, progress)
        started = time.monotonic()
        outcome = "failed"
        killed = False
        exit_info: _ExitInfo | None = None
        try:
            try:
                async with asyncio.timeout(options.timeout):
                    await self._consume(run, state)
                    exit_info = await run.wait()
            except TimeoutError:
                killed, outcome = True, "timeout"
                exit_info = await self._terminate_uninterruptibly(run)
                raise DownloadTimeout(
                    f"yt-dlp did not finish within {options.timeout:g}s", timeout_s=options.timeout,
                    **self._details(state, exit_info, version),
                ) from None
            except _SizeLimitHit as hit:
                killed, outcome = True, "too_large"
                exit_info = await self._terminate_uninterruptibly(run)
                raise SizeLimitExceeded(
                    f"download exceeded the size limit of {options.max_bytes} bytes",
                    max_bytes=options.max_bytes, seen_bytes=hit.seen, **self._details(state, exit_info, version),
                ) from None
            except BaseException as exc:  # CancelledError, KeyboardInterrupt, errores propios
                killed = True
                outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                exit_info = await self._terminate_uninterruptibly(run)
                raise
            if exit_info.returncode == 0 and state.files:
                result = await self._result(out_dir, state, version, run, options)
                outcome = "succeeded"
                return result
            raise classify_failure(
                exit_info.returncode, list(state.stderr_tail), list(state.screen_tail),
                **self._details(state, exit_info, version, with_tail=False),
            )
        finally:
            run.close()
            info = exit_info or run.exit_info
            _log.info(
                "ytdlp.finished", correlation_id=cid, pid=run.pid, mode=run.mode,
                returncode=info.returncode if info else None, extractor=state.extractor,
                outcome=outcome, killed=killed, duration_s=round(time.monotonic() - started, 3),
                cpu_s=info.cpu_s if info else None,
            )

    # --- partes de download() ------------------------------------------------------------------
    async def _start(self, args: list[str], cwd: Path, guard: bool) -> tuple[_Running, str]:
        if self.use_zygote and await self._zygote.ensure_started():
            try:
                run = await self._zygote.spawn(args, cwd, guard)
                return run, self._zygote.version or ytdlp_version()
            except _ZygoteUnavailable:
                pass  # el trabajo no llegó a empezar: etapa 1
        return await self._start_subprocess(args, cwd, guard), ytdlp_version()

    async def _start_subprocess(self, args: list[str], cwd: Path, guard: bool) -> _SubprocessRun:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            popen = subprocess.Popen(
                ytdlp_command(args, guard=guard, python=self.python),
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd, env=_child_env(),
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            raise YtdlpFailed(f"cannot start yt-dlp: {exc.strerror or exc}") from None
        finally:
            os.close(out_w)
            os.close(err_w)

        async def attach() -> _SubprocessRun:
            stdout, t_out = await _pipe_reader(out_r)
            stderr, t_err = await _pipe_reader(err_r)
            return _SubprocessRun(popen, stdout, stderr, [t_out, t_err])

        # El proceso ya corre: terminar de engancharlo aunque llegue una cancelación.
        return await _complete(attach())

    async def _consume(self, run: _Running, state: _RunState) -> None:
        """Lee stdout (progreso, archivos) y stderr a la vez hasta que ambos se cierran."""

        async def read_stderr() -> None:
            async for line in _lines(run.stderr):
                if line.strip():
                    state.stderr_tail.append(line)

        stderr_task = asyncio.create_task(read_stderr())
        try:
            async for line in _lines(run.stdout):
                state.on_stdout(line)
            await stderr_task
        finally:
            if not stderr_task.done():
                stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stderr_task

    async def _terminate(self, run: _Running) -> _ExitInfo:
        """TERM al grupo; KILL si no termina en ``kill_grace``; espera y recoge el proceso."""
        if run.exit_info is not None:
            return run.exit_info
        run.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.kill_grace):
                return await run.wait()
        except TimeoutError:
            run.signal_group(signal.SIGKILL)
            return await run.wait()

    async def _terminate_uninterruptibly(self, run: _Running) -> _ExitInfo:
        """``_terminate`` que sobrevive a nuevas cancelaciones: ningún proceso queda atrás."""
        result: _ExitInfo = await _complete(self._terminate(run))
        return result

    def _details(self, state: _RunState, exit_info: _ExitInfo | None, version: str,
                 with_tail: bool = True) -> dict[str, Any]:
        details: dict[str, Any] = {"ytdlp_version": version, "extractor": state.extractor}
        if with_tail:
            details["returncode"] = exit_info.returncode if exit_info else None
            details["stderr_tail"] = [_clean_line(line) for line in state.stderr_tail]
        return details

    async def _result(self, out_dir: Path, state: _RunState, version: str, run: _Running,
                      options: DownloadOptions) -> DownloadResult:
        root = out_dir.resolve()
        paths: list[Path] = []
        for reported in state.files:
            path = Path(reported)
            try:
                inside = path.resolve(strict=True).parent == root and not path.is_symlink()
            except OSError:
                inside = False
            if not inside or not path.is_file():
                raise StorageError(
                    "yt-dlp reported a file that is not a regular file in the job's temp dir",
                    path=redact(str(path)), **self._details(state, run.exit_info, version),
                )
            paths.append(path)
        path = paths[0]
        try:
            size, digest = await asyncio.to_thread(_sha256_file, path)
        except OSError as exc:
            raise StorageError(f"cannot read the downloaded file: {exc.strerror or exc}") from None
        if size > options.max_bytes:
            raise SizeLimitExceeded(f"the file has {size} bytes, over the limit of {options.max_bytes}",
                                    max_bytes=options.max_bytes, size=size)
        extra: dict[str, Any] = {"ytdlp_version": version, "extractor": state.extractor,
                                 "ytdlp_mode": run.mode}
        if state.media_id:
            extra["media_id"] = state.media_id
        if run.exit_info is not None and run.exit_info.cpu_s is not None:
            extra["ytdlp_cpu_s"] = run.exit_info.cpu_s
        if len(paths) > 1:
            extra["files"] = [p.name for p in paths]
        return DownloadResult(
            path=path, filename=path.name, size=size, sha256=digest,
            content_type=mimetypes.guess_type(path.name)[0], final_url=None, extra=extra,
        )
