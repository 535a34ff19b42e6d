"""Conversión de duraciones y tamaños con unidades (``500ms``, ``10m``, ``16KiB``, ``2GiB``), y la
marca de tiempo UTC de los eventos, los registros y el estado."""

from __future__ import annotations

import math
import re
import time

__all__ = ["format_duration", "format_size", "parse_duration", "parse_size", "utc_timestamp"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_MAX_SECONDS = 100 * 365 * 86400.0  # un siglo: más es un error, no una duración
_MAX_BYTES = 2**63 - 1
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_duration(value: object) -> float:
    """Devuelve segundos. Acepta números (segundos) o texto con unidad: ms, s, m, h, d."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 30s, 10m or 1h, got a boolean")
    if isinstance(value, int | float):
        if isinstance(value, int) and value > _MAX_SECONDS:
            raise ValueError(f"a duration of {str(value)[:20]}... seconds is too large")
        if not math.isfinite(value):  # YAML admite .nan y .inf: no son duraciones
            raise ValueError(f"a duration must be a finite number of seconds, got {value}")
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 500ms, 30s, 10m or 1h, got {type(value).__name__}")
    match = _NUMBER_UNIT.match(value)
    if not match or match.group(2).lower() not in _DURATION_UNITS | {"": 1.0}:
        raise ValueError(f"{value!r} is not a duration; use a number with ms, s, m, h or d (e.g. 30s)")
    unit = match.group(2).lower() or "s"
    seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if not math.isfinite(seconds) or seconds > _MAX_SECONDS:
        raise ValueError(f"{value[:40]!r} is too large a duration")
    return seconds


def parse_size(value: object) -> int:
    """Devuelve bytes. Acepta enteros o texto con unidad: B, KB/MB/GB (10^3), KiB/MiB/GiB (2^10)."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 16KiB, 500MB or 2GiB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 16KiB, 500MB or 2GiB, got {type(value).__name__}")
    match = _NUMBER_UNIT.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size; use a number with B, KB, MB, GB, KiB, MiB or GiB")
    size = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not math.isfinite(size) or size > _MAX_BYTES:
        raise ValueError(f"{value[:40]!r} is too large a size")
    return int(size)


def format_size(size: float) -> str:
    """Tamaño legible para personas (binario): ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_duration(seconds: float) -> str:
    """Duración legible para personas: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


_second_prefix: tuple[int | None, str] = (None, "")  # ningún segundo aún


def utc_timestamp(ts: float) -> str:
    """``ts`` (segundos Unix) en UTC ISO 8601 con microsegundos: ``2026-12-01T04:35:41.743219Z``.

    El prefijo de cada segundo se formatea una sola vez (``strftime`` es lo más caro): un evento o
    un registro del mismo segundo sólo añade los microsegundos. La tupla se reemplaza entera, así
    que otro hilo nunca ve media."""
    global _second_prefix
    second = int(ts // 1)
    cached = _second_prefix
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_prefix = cached
    return f"{cached[1]}.{int((ts - second) * 1_000_000):06d}Z"

