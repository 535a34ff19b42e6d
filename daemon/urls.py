"""Validación de la URL de un trabajo: una sola copia para el trabajo (``daemon.jobs``) y para los
descargadores (yt-dlp la vuelve a comprobar antes de lanzar nada).

Una URL válida es un texto no vacío de como mucho 8192 caracteres, que no empieza por ``-``
(nunca puede leerse como una opción), sin espacios ni caracteres de control o bidi, con un
esquema de ``allowed_schemes``, un host y un puerto distinto de 0; un host IPv4 tiene que
escribirse en la forma canónica a.b.c.d. ``check_url`` devuelve sus partes o lanza
``UrlRejected`` con un motivo que dice cómo corregirla.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from daemon.text import UNSAFE_CHARS as CONTROL_CHARS

__all__ = ["CONTROL_CHARS", "MAX_URL_CHARS", "CheckedUrl", "UrlRejected", "check_url"]

MAX_URL_CHARS = 8192
# Caracteres que no deben llegar a nombres, URLs ni registros: control C0/C1, separadores de
# línea y párrafo Unicode, controles de dirección bidi (nombres que engañan a la vista) y
# sustitutos sueltos (no se pueden codificar en UTF-8).
_SPACE = re.compile(r"\s")
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


class UrlRejected(ValueError):
    """La URL no vale; ``reason`` dice qué corregir. ``scheme_refused`` si sólo falla el esquema
    (``scheme_not_allowed``); si no, la forma de la URL."""

    def __init__(self, reason: str, *, scheme_refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.scheme_refused = scheme_refused


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """Una URL comprobada y sus partes; ``port`` es el efectivo (80/443 si no lo lleva)."""

    url: str
    scheme: str
    host: str
    port: int


def check_url(value: object, allowed_schemes: Sequence[str]) -> CheckedUrl:
    """Comprueba ``value`` como URL de un trabajo; ``UrlRejected`` con el motivo si no vale."""
    if not isinstance(value, str) or not value:
        raise UrlRejected("'url' must be a non-empty string like https://example.org/file.mp4")
    if len(value) > MAX_URL_CHARS:
        raise UrlRejected(f"'url' is longer than {MAX_URL_CHARS} characters")
    if value.lstrip().startswith("-"):
        raise UrlRejected("'url' must start with a scheme like https://, not '-' (it is never passed as an option)")
    if CONTROL_CHARS.search(value) or _SPACE.search(value):
        raise UrlRejected("'url' contains spaces or control characters; percent-encode them (%20)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        # El mensaje de urllib puede citar el netloc, con credenciales: no se repite.
        detail = "characters not allowed in the host" if "netloc" in str(exc) else str(exc)
        raise UrlRejected(f"'url' is not a valid URL ({detail}); write it like https://example.org/file.mp4") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise UrlRejected("'url' has no scheme; write it in full like https://example.org/file.mp4")
    allowed = tuple(s.lower() for s in allowed_schemes)
    if scheme not in allowed:
        raise UrlRejected(f"URL scheme {scheme!r} is not allowed; allowed: {', '.join(allowed)}",
                          scheme_refused=True)
    host = parts.hostname
    if not host:
        raise UrlRejected("'url' has no host; write a full URL like https://example.org/file.mp4")
    _check_numeric_host(host)
    if port == 0:
        raise UrlRejected("'url' has port 0; give a real port or none")
    return CheckedUrl(value, scheme, host, port or (443 if scheme == "https" else 80))


def _check_numeric_host(host: str) -> None:
    """Rechaza IPv4 escritas de forma no canónica (0x7f000001, 2130706433, 0177.0.0.1, 127.1).

    Cada pila de red las entiende a su manera (getaddrinfo las acepta, yarl no): se exige la
    forma a.b.c.d para que el destino sea el mismo para todos los descargadores.
    """
    text = host.rstrip(".")
    if not all(_NUMERIC_LABEL.fullmatch(label) for label in text.split(".")):
        return  # un nombre DNS o una IPv6: la red decide con la dirección resuelta
    if len(text) > 15 or not _is_ipv4(text):  # a.b.c.d tiene a lo sumo 15 caracteres
        raise UrlRejected(
            f"'url' host {host[:80]!r} is an IPv4 address in a non-canonical form (hex, octal, integer or "
            "short); write it as four decimal numbers like 192.0.2.10"
        )


@functools.lru_cache(maxsize=256)  # los trabajos de un mismo origen no repiten el análisis (~4 µs)
def _is_ipv4(text: str) -> bool:
    """``text`` es una IPv4 escrita a.b.c.d (sólo se llama con textos cortos: la caché queda acotada)."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
