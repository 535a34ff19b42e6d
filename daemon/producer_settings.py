"""Ajustes de la sección ``producers``: lo que el daemon permite a quien deja trabajos en el spool.

Las filas de ``PRODUCER_SETTINGS`` (clave, tipo, defecto, recargable, ayuda, conversor) se añaden
a ``daemon.config.SCHEMA``; así docs/config.md las documenta como al resto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from daemon.config_values import int_between
from daemon.units import parse_duration

__all__ = ["DEFAULT_REDACT_QUERY", "PRODUCER_SETTINGS", "ProducerSettings"]

# Parámetros de consulta que suelen llevar un secreto (tokens, firmas, claves de API).
DEFAULT_REDACT_QUERY: tuple[str, ...] = (
    "token", "access_token", "refresh_token", "id_token", "auth", "authorization", "key", "api_key", "apikey",
    "password", "passwd", "secret", "client_secret", "sig", "signature", "session", "sessionid",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
)
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


@dataclass(frozen=True, slots=True)
class ProducerSettings:
    """Ajustes de la sección ``producers``."""

    settle: float = 1.0
    cancel_ttl: float = 300.0
    retention: float = 30 * 86400.0
    admin_group: str = ""
    priority_ceiling: int = 100
    redact_query: tuple[str, ...] = DEFAULT_REDACT_QUERY


def _duration_or_zero(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _group_name(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _GROUP_NAME.fullmatch(value):
        raise ValueError(f"{str(value)[:40]!r} is not a group name (like videonote-dl-admins)")
    return value


def _param_names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and _PARAM_NAME.fullmatch(v) for v in value):
        raise ValueError("give a list of query parameter names, like [token, sig]")
    return tuple(dict.fromkeys(v.lower() for v in value))


# (clave, tipo, defecto documentado, recargable, ayuda, conversor)
PRODUCER_SETTINGS: tuple[tuple[str, str, str, bool, str, Any], ...] = (
    ("producers.settle", "duration", "1s", True,
     "a job file written in place in incoming/ (not renamed in) is claimed once its writer closed it and it "
     "has not changed for this long; one found by a rescan, once it is this old (0: no wait)", _duration_or_zero),
    ("producers.cancel_ttl", "duration", "5m", True,
     "a cancel marker for an id that is neither live nor queued is removed after this long "
     "(`job.cancel_expired`)", _duration_or_zero),
    ("producers.retention", "duration", "30d", True,
     "entries in rejected/ and failed/ older than this are removed (`spool.expired`); 0 keeps them for ever",
     _duration_or_zero),
    ("producers.admin_group", "group name or empty", "\"\"", True,
     "members may cancel any job and submit above `priority_ceiling`; root and the daemon's own user always may",
     _group_name),
    ("producers.priority_ceiling", "integer -1000-1000", "100", True,
     "highest job priority a producer outside `admin_group` may ask for (higher is rejected)",
     int_between(-1000, 1000)),
    ("producers.redact_query", "list of parameter names", "[" + ", ".join(DEFAULT_REDACT_QUERY) + "]", True,
     "URL query parameters whose values are shown as *** in records and events (case-insensitive)", _param_names),
)
