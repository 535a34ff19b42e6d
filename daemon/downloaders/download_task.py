"""DownloadTask y sus tipos: estado, resultado de una cancelación, política de reintentos."""

from __future__ import annotations

import asyncio
import enum
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.downloaders.base import DownloadOptions, DownloadResult
from daemon.downloaders.download_lifecycle import DownloadLifecycle

__all__ = ["CancelResult", "DownloadTask", "RetryPolicy", "TaskState"]


class TaskState(enum.StrEnum):
    """Estado de una tarea del gestor; los terminales son los cuatro últimos."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    PUBLISHING = "publishing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class CancelResult(enum.StrEnum):
    """Qué hizo ``DownloadManager.cancel``."""

    CANCELLED = "cancelled"
    TOO_LATE = "too_late"  # ya pasó el punto de no retorno: terminará como succeeded
    UNKNOWN = "unknown"    # ni en cola ni en curso


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Reintentos con backoff exponencial y jitter; Retry-After del servidor manda si es mayor."""

    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        jittered = base * random.uniform(0.5, 1.0)
        return float(max(jittered, retry_after or 0.0))


@dataclass(slots=True, eq=False)
class DownloadTask:
    """Una descarga gestionada: su ciclo de vida, su directorio y su progreso."""

    correlation_id: str
    options: DownloadOptions
    lifecycle: DownloadLifecycle
    downloader: str = "http"
    priority: int = 0
    seq: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    output_subdir: str | None = None
    owner: int | None = None  # el remitente (uid dueño del archivo del trabajo): turnos y tope por remitente
    state: TaskState = TaskState.QUEUED
    task: asyncio.Task[None] | None = None
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    speed: float = 0.0
    result: DownloadResult | None = None
    published_path: Path | None = None
    renamed: bool = False
    error: dict[str, Any] | None = None
    interrupt: bool = False
    committed: bool = False  # pasó el punto de no retorno: termina como succeeded pase lo que pase
    concluded: bool = False  # ``on_outcome`` ya recibió su desenlace (una sola vez)
    publish_attempts: int = 0
    _last_progress: tuple[float, int] = (0.0, 0)
    _progress_events: int = 0

    @property
    def temp_dir(self) -> Path | None:
        return self.lifecycle.temp_dir

    @property
    def attempt(self) -> int:
        return self.lifecycle.record.attempt

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.correlation_id, "state": self.state, "downloader": self.downloader,
            "attempt": self.attempt, "bytes": self.bytes_done, "total": self.bytes_total,
            "speed": round(self.speed), "queued_at": self.queued_at, "started_at": self.started_at,
        }
