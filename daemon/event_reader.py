"""Lectura del registro de eventos: filtrar, formatear para personas y seguir a través de logrotate."""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["EventFilter", "format_event", "read_events"]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Qué eventos interesan: por id de trabajo, por patrón de nombre (``job.*``) y desde cuándo."""

    job: str | None = None
    pattern: str | None = None
    since: datetime | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if self.job is not None and event.get("correlation_id") != self.job:
            return False
        if self.pattern is not None and not fnmatch.fnmatchcase(str(event.get("event", "")), self.pattern):
            return False
        if self.since is not None:
            try:
                ts = datetime.strptime(str(event.get("ts")), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            except ValueError:
                return False
            if ts < self.since:
                return False
        return True


def _parse_lines(chunk: bytes) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    for line in chunk.splitlines():
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield line, None
            continue
        yield line, event if isinstance(event, dict) else None


def read_events(
    path: Path,
    flt: EventFilter,
    follow: bool = False,
    poll: float = 0.2,
    stop_after: float | None = None,
    heartbeat: bool = False,
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Eventos (línea cruda, dict) que cumplen ``flt``; con ``follow``, sigue esperando más.

    Con ``heartbeat``, cada espera sin datos produce ``(b"", {})`` para que el llamador pueda
    hacer otras comprobaciones.

    Al seguir, detecta la rotación (otro inodo o un archivo más corto) y reabre desde el inicio
    del nuevo archivo, como ``tail -F``.
    """
    handle = None
    identity: tuple[int, int] | None = None
    buffer = b""
    deadline = time.monotonic() + stop_after if stop_after is not None else None
    try:
        while True:
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - se mantiene abierto mientras se sigue
                    st = os.fstat(handle.fileno())
                    identity = (st.st_dev, st.st_ino)
                except FileNotFoundError:
                    if not follow:
                        return
            if handle is not None:
                chunk = handle.read()
                if chunk:
                    buffer += chunk
                    complete, _, buffer = buffer.rpartition(b"\n")
                    for line, event in _parse_lines(complete):
                        if event is not None and flt.matches(event):
                            yield line, event
                    continue
            if not follow:
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            if heartbeat:
                yield b"", {}
            time.sleep(poll)
            if handle is not None and _rotated(path, identity, handle):
                handle.close()
                handle, buffer = None, b""
    finally:
        if handle is not None:
            handle.close()


def _rotated(path: Path, identity: tuple[int, int] | None, handle: Any) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False  # aún no hay archivo nuevo: seguir leyendo el viejo
    if (st.st_dev, st.st_ino) != identity:
        return True
    return bool(st.st_size < handle.tell())  # truncado (copytruncate)


_LEVEL_COLORS = {"debug": "\033[2m", "info": "", "warning": "\033[33m", "error": "\033[31m"}


def format_event(event: dict[str, Any], color: bool = False) -> str:
    """Una línea legible: ``15:57:55.590 INFO  job.received [clip-42] file=clip-42.yaml ...``."""
    ts = str(event.get("ts", ""))
    shown_ts = ts.replace("T", " ").rstrip("Z")[:23]
    level = str(event.get("level", "info"))
    name = str(event.get("event", "?"))
    cid = event.get("correlation_id")
    extras = " ".join(
        f"{key}={_short(value)}" for key, value in event.items()
        if key not in ("ts", "level", "event", "correlation_id")
    )
    text = f"{shown_ts} {level.upper():<7} {name}{f' [{cid}]' if cid else ''} {extras}".rstrip()
    if color and _LEVEL_COLORS.get(level):
        return f"{_LEVEL_COLORS[level]}{text}\033[0m"
    return text


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
