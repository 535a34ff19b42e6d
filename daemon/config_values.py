"""Los conversores de valores de config.yaml: cada uno valida un valor crudo y lo devuelve tipado.

Un valor que no sirve lanza ``ValueError`` con un mensaje que dice qué se esperaba; ``config``
le añade el archivo y la clave.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.units import parse_duration, parse_size

__all__ = [
    "KNOWN_SCHEMES",
    "LOG_LEVELS",
    "boolean",
    "choice",
    "int_between",
    "listen",
    "log_level",
    "networks",
    "optional_path",
    "path",
    "positive_duration",
    "positive_size",
    "schemes",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
KNOWN_SCHEMES = ("http", "https")


def int_between(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}, got {value}")
        return value

    return convert


def choice(*allowed: str) -> Callable[[Any], str]:
    """Una palabra de ``allowed`` (sin distinguir mayúsculas)."""

    def convert(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value.lower()

    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a path, got {value!r}")
    return Path(value)


def log_level(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.lower()


def schemes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise ValueError(f"expected a non-empty list drawn from {list(KNOWN_SCHEMES)}, got {value!r}")
    unknown = [s for s in value if s.lower() not in KNOWN_SCHEMES]
    if unknown:
        raise ValueError(f"unsupported scheme(s) {unknown}; allowed: {list(KNOWN_SCHEMES)}")
    return tuple(dict.fromkeys(s.lower() for s in value))


def optional_path(value: Any) -> Path | None:
    if value is None or value == "":
        return None
    return path(value)


def networks(value: Any) -> tuple[str, ...]:
    from daemon.downloaders.netguard import parse_networks

    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of networks like [10.1.2.0/24], got {value!r}")
    return tuple(str(net) for net in parse_networks(value))


def listen(value: Any) -> str | None:
    """``host:puerto`` (``127.0.0.1:9464``, ``[::1]:9464``) o la ruta de un socket unix; null: apagado."""
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9464) or a unix socket path, got {value!r}")
    if "/" in value:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9464), "
                         "nor a unix socket path (e.g. /run/videonote-dl/metrics.sock)")
    if not host.strip("[]"):
        raise ValueError(f"{value!r} has no host; write 127.0.0.1:{port} (or 0.0.0.0:{port} for every interface)")
    return value


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration above zero, got {value!r}")
    return seconds


def positive_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"expected a size above zero, got {value!r}")
    return size
