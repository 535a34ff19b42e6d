"""Secretos fuera de los eventos: credenciales en URLs, parámetros de consulta secretos, claves.

``redact`` limpia un texto; ``scrub_secrets`` es el procesador de structlog que lo aplica a cada
campo de cada evento (y a los dicts, listas y excepciones que lleven dentro), y enmascara entero
el valor de las claves secretas (``authorization``, ``cookie``, ``headers``...).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from daemon.producer_settings import DEFAULT_REDACT_QUERY

__all__ = ["redact", "scrub_secrets", "set_redacted_query_params"]

# La parte de usuario llega hasta la ÚLTIMA @ antes de la ruta (como la leen urllib y los navegadores),
# así una contraseña con una @ sin codificar tampoco se filtra.
_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_KEYS = frozenset({"authorization", "cookie", "proxy-authorization", "password", "headers"})


def _query_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?i)(?P<lead>[?&;](?:{alternatives})=)[^&#;\s\"']*")


_redacted_query: re.Pattern[str] | None = _query_pattern(DEFAULT_REDACT_QUERY)


def set_redacted_query_params(names: tuple[str, ...]) -> None:
    """Qué parámetros de consulta se enmascaran (``producers.redact_query``; cambia con SIGHUP)."""
    global _redacted_query
    _redacted_query = _query_pattern(tuple(names))


def redact(text: str) -> str:
    """Quita credenciales de URLs contenidas en ``text`` (``https://user:pw@host`` -> ``https://***@host``)
    y los valores de los parámetros de consulta secretos (``?token=abc`` -> ``?token=***``)."""
    if "@" in text:
        text = _CREDENTIALS_IN_URL.sub(r"\g<scheme>***@", text)
    pattern = _redacted_query
    if pattern is not None and "=" in text:
        text = pattern.sub(r"\g<lead>***", text)
    return text


def _scrub_value(value: Any) -> Any:
    # Recorre también dicts, listas y excepciones: un ``error={"message": "GET https://u:pw@h ..."}``
    # no debe filtrar la contraseña.
    if isinstance(value, str):
        return redact(value) if "@" in value or "=" in value else value
    if isinstance(value, dict):
        return {
            k: "***" if isinstance(k, str) and k.lower() in _SECRET_KEYS else _scrub_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_value(item) for item in value]
    if isinstance(value, BaseException):
        return redact(str(value))
    return value


# Valores que nunca llevan un secreto: se saltan por su tipo exacto (más barato que isinstance con
# una unión, y esto corre para cada clave de cada evento).
_SCALARS = frozenset({int, float, bool, type(None)})

# Claves ya vistas que no son secretas: las de los eventos son pocas y fijas (las escribe el código),
# así que casi nunca hace falta ``lower()``. Con tope, por si alguna vez llegaran claves arbitrarias.
_plain_keys: set[str] = set()
_PLAIN_KEYS_MAX = 4096


def scrub_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Procesador de structlog: cada campo del evento, sin secretos."""
    plain = _plain_keys
    for key, value in event_dict.items():
        if key not in plain:
            if key.lower() in _SECRET_KEYS:
                event_dict[key] = "***"
                continue
            if len(plain) < _PLAIN_KEYS_MAX:
                plain.add(key)
        if value.__class__ is str:
            if "@" in value or "=" in value:
                event_dict[key] = redact(value)
        elif value.__class__ not in _SCALARS:
            event_dict[key] = _scrub_value(value)
    return event_dict
