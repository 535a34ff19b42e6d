"""Cabeceras HTTP de un trabajo: ``headers`` (qué se envía) y ``forward_headers`` (qué puede seguir
una redirección a otro origen).

Las cabeceras que pone el descargador (Host, Range...) no se pueden dar; las credenciales
(Authorization, Cookie, Proxy-Authorization) nunca siguen una redirección a otro origen.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.job_rejected import JobRejected
from daemon.text import UNSAFE_CHARS

__all__ = ["MAX_HEADERS", "validate_forward_headers", "validate_headers"]

MAX_HEADERS = 32
_MAX_HEADER_VALUE = 4096
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_RESERVED_HEADERS = ("host", "content-length", "transfer-encoding", "connection", "range", "if-range")
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


def validate_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """El campo ``headers``: un mapa de nombres HTTP válidos a valores de una línea."""
    if not isinstance(value, dict) or len(value) > MAX_HEADERS:
        raise JobRejected(f"'headers' must be a mapping of at most {MAX_HEADERS} header names to string values")
    headers = []
    seen: set[str] = set()
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise JobRejected(f"header name {str(name)[:40]!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            raise JobRejected(f"header {name!r} is set by the downloader and cannot be given in a job")
        if (not isinstance(header_value, str) or UNSAFE_CHARS.search(header_value)
                or len(header_value) > _MAX_HEADER_VALUE):
            raise JobRejected(
                f"header {name!r} must be a single-line string of at most {_MAX_HEADER_VALUE} characters"
            )
        if name.lower() in seen:
            raise JobRejected(f"header {name!r} is given twice (header names ignore case); keep one")
        seen.add(name.lower())
        headers.append((name, header_value))
    return tuple(headers)


def validate_forward_headers(value: Any, headers: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Cabeceras del trabajo que también pueden ir a otro origen tras una redirección: nombres de
    ``headers``, escritos en una lista (sin ellas, las cabeceras sólo van al origen de ``url``)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise JobRejected("'forward_headers' must be a list of header names from 'headers', like [X-Trace-Id]")
    given = {name.lower(): name for name, _ in headers}
    chosen: list[str] = []
    for name in value:
        if name.lower() not in given:
            raise JobRejected(
                f"'forward_headers' names {name[:40]!r}, which is not in 'headers'; list only headers the job sets"
            )
        if name.lower() in _CREDENTIAL_HEADERS:
            raise JobRejected(f"'forward_headers' cannot name {name!r}: credentials never follow a redirect to "
                              "another origin; give the final URL instead")
        if given[name.lower()] not in chosen:
            chosen.append(given[name.lower()])
    return tuple(chosen)
