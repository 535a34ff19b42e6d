"""Comprobaciones antes de lanzar yt-dlp: la URL (``daemon.urls``) y el primer salto de red.

Sólo cubren lo que se sabe antes de empezar: las redirecciones y peticiones que yt-dlp haga
después las vigila la guarda de red del proceso hijo (``netguard.install_network_guard``).
"""

from __future__ import annotations

import asyncio
import socket

from daemon.downloaders.base import (
    ConnectionFailed,
    DownloadOptions,
    PrivateAddressRefused,
    SchemeNotAllowed,
    UnsupportedUrl,
)
from daemon.downloaders.netguard import is_forbidden_address
from daemon.events import redact
from daemon.urls import CheckedUrl, UrlRejected, check_url

__all__ = ["check_job_url", "refuse_private_host"]


def check_job_url(options: DownloadOptions) -> CheckedUrl:
    """La URL del trabajo comprobada; ``SchemeNotAllowed`` o ``UnsupportedUrl`` si no vale."""
    try:
        return check_url(options.url, options.allowed_schemes)
    except UrlRejected as exc:
        shown = redact(str(options.url))
        if exc.scheme_refused:
            raise SchemeNotAllowed(exc.reason, url=shown) from None
        raise UnsupportedUrl(exc.reason, url=shown) from None


async def refuse_private_host(host: str, port: int, url: str) -> None:
    """Resuelve ``host`` y rechaza el trabajo si alguna dirección no es pública."""
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
