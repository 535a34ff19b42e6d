"""Sesiones aiohttp del descargador HTTP, con la guarda de direcciones al resolver.

Sin ``allow_private_networks`` cada conexión pasa por ``GuardedConnector``, que rechaza las
direcciones no públicas (``netguard.forbidden_reason``) salvo las de ``download.allowed_networks``;
se comprueba la dirección resuelta en el momento de conectar, en cada salto de redirección.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp

from daemon.downloaders.base import PrivateAddressRefused
from daemon.downloaders.netguard import IPNetwork, forbidden_reason, parse_networks

__all__ = ["GuardedConnector", "new_session"]


class GuardedConnector(aiohttp.TCPConnector):
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


def new_session(user_agent: str, tls: ssl.SSLContext | bool, allow_private: bool,
                allowed_networks: tuple[str, ...] = ()) -> aiohttp.ClientSession:
    """Una sesión para muchas descargas: sin descompresión, sin cookies compartidas, con la guarda."""
    common: dict[str, Any] = {"limit": 0, "ttl_dns_cache": 60, "enable_cleanup_closed": False, "ssl": tls}
    connector = (aiohttp.TCPConnector(**common) if allow_private
                 else GuardedConnector(allowed=parse_networks(allowed_networks), **common))
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        read_bufsize=256 * 1024,
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        # Sin tarro de cookies: la sesión es compartida y un Set-Cookie de un trabajo no
        # debe viajar en las peticiones de otro.
        cookie_jar=aiohttp.DummyCookieJar(),
        max_line_size=16384,
        max_field_size=16384,
    )
