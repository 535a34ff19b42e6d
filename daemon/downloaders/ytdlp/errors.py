"""Errores propios de yt-dlp y clasificación de su salida en la jerarquía de ``base.py``.

``classify_failure`` lee el final de stderr (y los mensajes de pantalla de stdout) de un yt-dlp
que terminó sin archivo y devuelve el ``DownloadError`` de la lista cerrada de ``kind``.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from typing import Any

from daemon.downloaders.base import (
    ConnectionFailed,
    DownloadError,
    DownloadTimeout,
    HTTPClientError,
    IncompleteBody,
    PermanentDownloadError,
    PrivateAddressRefused,
    ServerError,
    SizeLimitExceeded,
    StorageError,
    TransientDownloadError,
    UnsupportedUrl,
)
from daemon.downloaders.netguard import FORBIDDEN_MESSAGE
from daemon.downloaders.ytdlp.output import STDERR_TAIL_LINES, clean_line

__all__ = [
    "FormatUnavailable",
    "MediaUnavailable",
    "YtdlpCrashed",
    "YtdlpFailed",
    "classify_failure",
]


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
    tail = [clean_line(line) for line in stderr_lines][-STDERR_TAIL_LINES:]
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
    by_hint = _by_hint(text, shown, info)
    if by_hint is not None:
        return by_hint
    return _by_exit(returncode, shown, screen_lines, info)


def _by_hint(text: str, shown: str, info: dict[str, Any]) -> DownloadError | None:
    """El error que delatan las palabras del mensaje, o None si ninguna encaja."""
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
    return None


def _by_exit(returncode: int | None, shown: str, screen_lines: Sequence[str],
             info: dict[str, Any]) -> DownloadError:
    """El error según cómo terminó el proceso, cuando el mensaje no dice nada reconocible."""
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


def _last_match(lines: Sequence[str]) -> str:
    for line in reversed(lines):
        if "max-filesize" in line:
            return clean_line(line).removeprefix("[download] ").strip()
    return ""


def _last_screen(lines: Sequence[str]) -> str:
    return clean_line(lines[-1]) if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
