"""Lectura de la salida de yt-dlp: progreso en JSON, archivos terminados, extractor y colas.

yt-dlp escribe por stdout líneas marcadas (``argv.PROGRESS_MARK``, ``INFO_MARK``, ``FILE_MARK``)
con JSON; ``RunState`` las interpreta, aplica ``max_bytes`` al progreso y guarda las últimas
líneas de pantalla y de stderr (sin credenciales) para clasificar un fallo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from daemon.downloaders.base import ProgressCallback
from daemon.downloaders.ytdlp.argv import FILE_MARK, INFO_MARK, PROGRESS_MARK
from daemon.downloaders.ytdlp.names import without_query
from daemon.events import redact

__all__ = ["STDERR_TAIL_LINES", "RunState", "SizeLimitHit", "clean_line", "consume", "lines"]

STDERR_TAIL_LINES = 20
_MAX_LINE_CHARS = 1000


class SizeLimitHit(Exception):
    """El progreso superó ``max_bytes``; hay que matar el proceso."""

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.seen = seen


def clean_line(line: str) -> str:
    """Una línea de yt-dlp lista para un registro: sin ``\\r``, sin credenciales, recortada."""
    line = redact(line.replace("\r", "").rstrip())
    return line if len(line) <= _MAX_LINE_CHARS else line[:_MAX_LINE_CHARS] + "..."


class RunState:
    """Lo que se sabe de una ejecución: progreso, archivos, extractor y colas de mensajes."""

    def __init__(self, max_bytes: int, progress: ProgressCallback | None) -> None:
        self.max_bytes = max_bytes
        self.progress = progress
        self.completed = 0  # bytes de archivos ya terminados (vídeo + audio por separado, etc.)
        self.files: list[str] = []
        self.file_info: list[dict[str, Any]] = []  # lo que yt-dlp dijo de cada archivo (título, ext...)
        self.extractor: str | None = None
        self.media_id: str | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.screen_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def on_stdout(self, line: str) -> None:
        """Interpreta una línea de stdout; ``SizeLimitHit`` si el progreso pasa de ``max_bytes``."""
        if line.startswith(PROGRESS_MARK):
            self._on_progress(_json_or_empty(line[len(PROGRESS_MARK):]))
        elif line.startswith(FILE_MARK):
            data = _json_or_empty(line[len(FILE_MARK):])
            _drop_queries(data)
            if isinstance(data.get("filepath"), str):
                self.files.append(data["filepath"])
                self.file_info.append(data)
            self._on_info(data)
        elif line.startswith(INFO_MARK):
            self._on_info(_drop_queries(_json_or_empty(line[len(INFO_MARK):])))
        elif line.strip():
            self.screen_tail.append(clean_line(line))

    def _on_info(self, data: dict[str, Any]) -> None:
        extractor = data.get("extractor_key") or data.get("extractor")
        if isinstance(extractor, str):
            self.extractor = extractor
        if isinstance(data.get("id"), str):
            self.media_id = data["id"]

    def _on_progress(self, data: dict[str, Any]) -> None:
        downloaded = _as_int(data.get("downloaded_bytes")) or 0
        total = _as_int(data.get("total_bytes"))
        estimate = total or _as_int(data.get("total_bytes_estimate"))
        base = self.completed
        seen = base + downloaded
        if data.get("status") == "finished":
            self.completed = base + (total or downloaded)
        if seen > self.max_bytes or (total is not None and base + total > self.max_bytes):
            raise SizeLimitHit(max(seen, base + (total or 0)))
        if self.progress is not None:
            self.progress(seen, base + estimate if estimate else None)


def _drop_queries(data: dict[str, Any]) -> dict[str, Any]:
    """Quita la consulta de URL que el extractor genérico deja en ``id`` y ``title`` (``names``)."""
    for key in ("id", "title"):
        value = data.get(key)
        if isinstance(value, str):
            data[key] = without_query(value)
    return data


async def consume(stdout: asyncio.StreamReader, stderr: asyncio.StreamReader, state: RunState) -> None:
    """Lee stdout (progreso, archivos) y stderr a la vez hasta que ambos se cierran."""

    async def read_stderr() -> None:
        async for line in lines(stderr):
            if line.strip():
                state.stderr_tail.append(line)

    stderr_task = asyncio.create_task(read_stderr())
    try:
        async for line in lines(stdout):
            state.on_stdout(line)
        await stderr_task
    finally:
        if not stderr_task.done():
            stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr_task


async def lines(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """Itera las líneas de ``reader`` como texto; corta las demasiado largas sin atascarse."""
    while True:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                yield exc.partial.decode("utf-8", "replace")
            return
        except asyncio.LimitOverrunError as exc:
            raw = await reader.read(exc.consumed)
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
