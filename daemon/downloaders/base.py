"""Tipos base de los descargadores: opciones, resultado, protocolo y jerarquía de errores.

Los errores separan lo transitorio (se reintenta con backoff) de lo permanente (falla al
instante). Cada error lleva un ``kind`` corto y estable que va a los eventos y registros; los
``kind`` posibles son los de ``daemon.error_kinds.ERROR_KINDS`` y ninguno más (se comprueba al
definir cada subclase).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from daemon.error_kinds import ABSTRACT_KINDS, ERROR_KINDS

__all__ = [
    "BadResponse",
    "ChecksumMismatch",
    "ConnectionFailed",
    "DownloadError",
    "DownloadOptions",
    "DownloadResult",
    "DownloadTimeout",
    "Downloader",
    "HTTPClientError",
    "IncompleteBody",
    "InternalDownloadError",
    "InvalidUrl",
    "PermanentDownloadError",
    "PrivateAddressRefused",
    "ProgressCallback",
    "RouteToYtdlp",
    "SchemeNotAllowed",
    "ServerError",
    "SizeLimitExceeded",
    "StorageError",
    "TlsError",
    "TooManyRedirects",
    "TransientDownloadError",
    "UnsupportedUrl",
    "error_record",
]

# progress(bytes_descargados, total_o_None)
ProgressCallback = Callable[[int, int | None], None]


@dataclass(slots=True)
class DownloadOptions:
    """Qué descargar y con qué límites. ``output_path`` es el directorio aislado del trabajo:
    lo fija ``DownloadLifecycle`` y el descargador escribe sólo ahí."""

    url: str
    output_path: Path | None = None
    filename: str | None = None
    sha256: str | None = None
    max_bytes: int = 10 * 1024**3
    timeout: float = 600.0
    headers: Mapping[str, str] = field(default_factory=dict)  # sólo se lee
    # Nombres (de ``headers``) que también viajan a otro origen tras una redirección; el resto
    # sólo va al origen de ``url``.
    forward_headers: tuple[str, ...] = ()
    format: str | None = None
    playlist: bool = False
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allow_private_networks: bool = False
    # Redes CIDR permitidas aunque no sean públicas (con ``allow_private_networks`` en False).
    allowed_networks: tuple[str, ...] = ()
    max_redirects: int = 10
    correlation_id: str | None = None
    # Perfil de post-proceso (``daemon.postprocess.Profile``) elegido por el trabajo, o None.
    postprocess: Any = None
    # ``downloader: auto`` resuelto a http sin sufijo revelador: si la respuesta es un manifiesto
    # (por su Content-Type), el descargador HTTP lo entrega a yt-dlp con ``RouteToYtdlp``.
    route_manifests: bool = False


@dataclass(slots=True)
class DownloadResult:
    """Un archivo completo dentro del directorio aislado (o ya publicado, si ``published``)."""

    path: Path
    filename: str
    size: int
    sha256: str
    final_url: str | None = None
    resumed: bool = False
    published: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Downloader(Protocol):
    """Un descargador: deja el archivo en ``options.output_path`` y devuelve su resultado."""

    name: str

    async def download(
        self, options: DownloadOptions, progress: ProgressCallback | None = None
    ) -> DownloadResult: ...


class RouteToYtdlp(Exception):
    """La respuesta HTTP es un manifiesto (HLS, DASH...): el trabajo pasa a yt-dlp sin gastar intento."""

    def __init__(self, content_type: str) -> None:
        super().__init__(content_type)
        self.content_type = content_type


class DownloadError(Exception):
    """Error de descarga. ``transient`` decide si se reintenta; ``kind`` lo clasifica."""

    kind = "error"
    transient = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Un tipo nuevo sin su fila en la lista cerrada es un error de programación: se ve al importar.
        if cls.kind not in ERROR_KINDS and cls.kind not in ABSTRACT_KINDS:
            raise TypeError(f"{cls.__name__}.kind {cls.kind!r} is not in daemon.error_kinds.ERROR_KINDS")

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.details = details

    def to_record(self) -> dict[str, Any]:
        """Forma serializable para eventos y registros terminales."""
        record: dict[str, Any] = {"kind": self.kind, "message": self.message, "transient": self.transient}
        if self.retry_after is not None:
            record["retry_after"] = self.retry_after
        record.update(self.details)
        return record


class TransientDownloadError(DownloadError):
    """Puede salir bien si se reintenta (red, timeout, 5xx, 408, 429, cuerpo truncado)."""

    kind = "transient"
    transient = True


class PermanentDownloadError(DownloadError):
    """Reintentar no ayuda (4xx, checksum, tamaño, esquema, red privada...)."""

    kind = "permanent"


class ConnectionFailed(TransientDownloadError):
    kind = "connection"


class DownloadTimeout(TransientDownloadError):
    kind = "timeout"


class ServerError(TransientDownloadError):
    """5xx, 408 o 429 (con ``retry_after`` si el servidor envió Retry-After)."""

    kind = "http_status"


class IncompleteBody(TransientDownloadError):
    kind = "incomplete_body"


class BadResponse(PermanentDownloadError):
    """El servidor rompe HTTP: cabeceras mal formadas o enormes, un Location que no es una URL..."""

    kind = "bad_response"


class TlsError(PermanentDownloadError):
    """Fallo del apretón de manos TLS: certificado autofirmado, de otra CA, caducado o de otro host."""

    kind = "tls"


class HTTPClientError(PermanentDownloadError):
    kind = "http_status"


class ChecksumMismatch(PermanentDownloadError):
    kind = "checksum_mismatch"


class SizeLimitExceeded(PermanentDownloadError):
    kind = "too_large"


class SchemeNotAllowed(PermanentDownloadError):
    kind = "scheme_not_allowed"


class PrivateAddressRefused(PermanentDownloadError):
    kind = "private_address"


class TooManyRedirects(PermanentDownloadError):
    kind = "too_many_redirects"


class StorageError(PermanentDownloadError):
    """Disco lleno, E/S fallida, límite de tamaño de archivo: el trabajo falla, el daemon sigue."""

    kind = "storage"


class UnsupportedUrl(PermanentDownloadError):
    kind = "unsupported_url"


class InvalidUrl(PermanentDownloadError):
    """La URL no se puede usar tal cual (el cliente HTTP la rechaza)."""

    kind = "invalid_url"


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES,
                             errno.EPERM})


def error_record(exc: BaseException) -> dict[str, Any]:
    """El error de un trabajo en su forma de evento y de registro (el mismo ``kind`` en ambos).

    Un ``DownloadError`` da su propio ``kind``; un ``OSError`` de almacenamiento (disco lleno, E/S,
    permisos) es ``storage``; cualquier otra cosa es ``internal``.
    """
    if isinstance(exc, DownloadError):
        return exc.to_record()
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return StorageError(f"storage error: {exc.strerror}{where}", errno=exc.errno).to_record()
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}", "transient": False}


class InternalDownloadError(PermanentDownloadError):
    """Un fallo inesperado dentro del descargador (un error de programación): ``kind`` internal."""

    kind = "internal"
