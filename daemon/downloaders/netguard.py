"""Defensa contra SSRF: qué direcciones puede tocar una descarga.

Con ``allow_private_networks: false`` se rechaza toda dirección que no sea global: loopback,
privadas, enlace local (incluida la de metadatos 169.254.169.254), CGNAT, multicast,
reservadas, no especificadas y las IPv4 mapeadas en IPv6. La comprobación se hace sobre la
dirección resuelta en el momento de conectar, en cada salto de redirección. Con
``download.allowed_networks`` se admiten sólo esas redes privadas concretas (p. ej. un servidor
de la intranet) sin abrir todas.

En HTTPS, ``tls_context`` decide en qué certificados se confía: los del sistema y, si se da
``download.ca_bundle``, además las CAs de ese archivo PEM.

Es la única guarda de direcciones del proyecto: la usan el descargador HTTP (al resolver, con
``forbidden_reason``), la comprobación previa de yt-dlp (``is_forbidden_address``) y el proceso
hijo de yt-dlp (``install_network_guard``, en cada ``connect()``). Sólo usa la biblioteca
estándar: el proceso auxiliar de yt-dlp lo carga por ruta, sin importar el paquete ``daemon``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FORBIDDEN_MESSAGE",
    "IPNetwork",
    "forbidden_reason",
    "install_network_guard",
    "is_forbidden_address",
    "parse_networks",
    "session_tls",
    "tls_context",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Texto que identifica una conexión rechazada por la guarda; el clasificador de errores de
# yt-dlp lo busca en stderr.
FORBIDDEN_MESSAGE = "videonote-dl refused a connection to a non-public address"

# Prefijo NAT64 (RFC 6052): lleva una IPv4 incrustada que hay que comprobar también.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def session_tls(ca_bundle: Path | None = None) -> ssl.SSLContext | bool:
    """El ``ssl=`` de una sesión aiohttp: ``True`` (el contexto verificado que aiohttp ya crea al
    importarse: CAs del sistema, verificación completa) sin ``ca_bundle``; si no, ``tls_context``.

    Cada contexto con las CAs del sistema cuesta ~0,8-2,5 MiB de RSS y ~5 ms de CPU en cargarlas:
    no se crea otro igual al de aiohttp (ni uno por sondeo de Content-Type)."""
    return True if ca_bundle is None else tls_context(ca_bundle)


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """Contexto TLS con verificación completa: CAs del sistema más las de ``ca_bundle`` (PEM).

    Lanza ``ssl.SSLError`` u ``OSError`` si el archivo no existe o no tiene certificados PEM.
    """
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Redes en notación CIDR (``10.1.2.0/24``, ``fd00::/8``); ValueError con la que no lo es."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except (ValueError, TypeError):
            raise ValueError(f"{value!r} is not a network in CIDR notation like 10.1.2.0/24") from None
    return tuple(networks)


def forbidden_reason(address: str, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Por qué ``address`` no se puede usar sin ``allow_private_networks``; None si es pública
    o está en una de las redes ``allowed`` (``download.allowed_networks``)."""
    try:
        return _address_problem(address, allowed)
    except ValueError:
        return f"{address!r} is not an IP address"


def is_forbidden_address(address: str) -> bool:
    """True si ``address`` (una IP literal) no es una dirección pública unicast.

    Rechaza loopback, privadas, enlace local (incluido 169.254.169.254, el servicio de
    metadatos de las nubes), CGNAT, sin especificar, multicast y reservadas; las IPv6 con una
    IPv4 incrustada (mapeadas, NAT64) se juzgan por esa IPv4. ``ValueError`` si no es una IP.
    """
    return _address_problem(address) is not None


def _address_problem(address: str, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """El motivo de ``forbidden_reason``; ``ValueError`` si ``address`` no es una IP."""
    written = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    ip = _embedded_ipv4(written)
    if any(candidate.version == net.version and candidate in net for candidate in {written, ip} for net in allowed):
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (cloud metadata lives here)"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """La IPv4 que lleva dentro una IPv6 mapeada (``::ffff:a.b.c.d``) o NAT64; si no, ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def install_network_guard() -> None:
    """Hace que todo ``connect()`` TCP/UDP de este proceso rechace direcciones no públicas.

    Se comprueba la dirección a la que de verdad se conecta (después de resolver), así que
    cubre redirecciones, peticiones internas de los extractores, fragmentos y DNS rebinding.
    Si se pasa un nombre en lugar de una IP, se resuelve aquí y se conecta a la IP comprobada.
    No cubre código C que abra sus propios sockets (curl_cffi), ni un proxy configurado por
    entorno cuya dirección sea privada (se rechazaría también). Es para el proceso hijo de
    yt-dlp; el daemon nunca lo instala en sí mismo.
    """
    cls = socket.socket
    if getattr(cls, "_videonote_guard", False):
        return
    original_connect = cls.connect
    original_connect_ex = cls.connect_ex

    def _checked(sock: socket.socket, address: Any) -> Any:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return address
        host = str(address[0])
        try:
            forbidden = is_forbidden_address(host)
        except ValueError:
            # Un nombre: resolver aquí y conectar a la dirección comprobada.
            infos = socket.getaddrinfo(host, address[1], sock.family, sock.type)
            if not infos:
                raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host}") from None
            resolved = infos[0][4]
            forbidden = is_forbidden_address(str(resolved[0]))
            host, address = str(resolved[0]), resolved
        if forbidden:
            raise PermissionError(errno.EACCES, f"{FORBIDDEN_MESSAGE} ({host})")
        return address

    def connect(self: socket.socket, address: Any) -> None:
        original_connect(self, _checked(self, address))

    def connect_ex(self: socket.socket, address: Any) -> int:
        return original_connect_ex(self, _checked(self, address))

    cls.connect = connect  # type: ignore[method-assign,assignment]
    cls.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    cls._videonote_guard = True  # type: ignore[attr-defined]
