"""Defensa contra SSRF: qué direcciones puede tocar una descarga.

Con ``allow_private_networks: false`` se rechaza toda dirección que no sea global: loopback,
privadas, enlace local (incluida la de metadatos 169.254.169.254), CGNAT, multicast,
reservadas, no especificadas y las IPv4 mapeadas en IPv6. La comprobación se hace sobre la
dirección resuelta en el momento de conectar, en cada salto de redirección. Con
``download.allowed_networks`` se admiten sólo esas redes privadas concretas (p. ej. un servidor
de la intranet) sin abrir todas.

En HTTPS, ``tls_context`` decide en qué certificados se confía: los del sistema y, si se da
``download.ca_bundle``, además las CAs de ese archivo PEM.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

__all__ = ["IPNetwork", "forbidden_reason", "parse_networks", "tls_context"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
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
