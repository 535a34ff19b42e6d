"""Lo que se lee de una respuesta HTTP: estado, Retry-After, Location y el nombre del archivo.

Cada función traduce una parte de la respuesta a un dato seguro o a un ``DownloadError`` con su
``kind`` de la lista cerrada. Los nombres que propone el servidor pasan por
``daemon.names.safe_name`` (las reglas del ``filename`` de un trabajo): nunca se usan crudos.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from daemon.downloaders.base import (
    BadResponse,
    DownloadOptions,
    HTTPClientError,
    SchemeNotAllowed,
    ServerError,
)
from daemon.events import redact
from daemon.names import safe_name
from daemon.text import printable

__all__ = [
    "REDIRECTS",
    "filename_from_response",
    "raise_for_status",
    "redirect_target",
    "retry_after",
    "watch_parser",
]

REDIRECTS = (301, 302, 303, 307, 308)
_DISPOSITION_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;]+)", re.IGNORECASE)
_DISPOSITION = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]+))', re.IGNORECASE)


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


def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """Nada si el estado trae el archivo (200, 206); si no, el ``DownloadError`` que le toca."""
    status = response.status
    if status in (200, 206):
        return
    if status in (408, 429) or 500 <= status <= 599:
        raise ServerError(
            f"the server answered HTTP {status} {response.reason or ''}".rstrip(),
            retry_after=retry_after(response.headers.get("Retry-After")), status=status,
        )
    if status in REDIRECTS:
        raise HTTPClientError(f"HTTP {status} redirect without a Location header", status=status)
    if status in (204, 304) or status < 200:
        raise HTTPClientError(
            f"the server answered HTTP {status} {response.reason or ''} to a plain GET: it has no file to "
            "give at this URL".replace("  ", " "), status=status,
        )
    raise HTTPClientError(f"the server answered HTTP {status} {response.reason or ''}".rstrip(), status=status)


def redirect_target(url: URL, location: str, hop: int, options: DownloadOptions) -> URL:
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


async def watch_parser(response: aiohttp.ClientResponse, interval: float = 0.5) -> None:
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


def retry_after(value: str | None) -> float | None:
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


