"""El archivo de estado: una foto JSON del daemon, reescrita de forma atómica mientras corre."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["read_status", "status_age", "write_status"]


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Escribe ``status`` en ``path`` con tmp + rename: un lector nunca ve un archivo a medias."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(status, option=orjson.OPT_INDENT_2, default=str))
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """El último estado escrito, o None si no hay. Sin permiso de lectura, ``PermissionError``."""
    try:
        data = orjson.loads(path.read_bytes())
    except PermissionError:
        raise
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def status_age(status: dict[str, Any]) -> float | None:
    """Segundos desde ``updated_at`` (None si falta o no se entiende)."""
    try:
        updated = datetime.fromisoformat(str(status.get("updated_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, time.time() - updated.timestamp())
