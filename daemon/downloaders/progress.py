"""Progreso de una descarga: bytes, velocidad y el evento ``job.progress`` (limitado por intervalo)."""

from __future__ import annotations

import time
from collections.abc import Callable

from daemon.downloaders.download_task import DownloadTask
from daemon.events import get_logger

__all__ = ["progress_reporter"]

_log = get_logger()


def progress_reporter(task: DownloadTask, interval: Callable[[], float]) -> Callable[[int, int | None], None]:
    """El callback de progreso de una tarea: como mucho un ``job.progress`` por intervalo."""

    def report(done: int, total: int | None) -> None:
        task.bytes_done, task.bytes_total = done, total
        now = time.monotonic()
        last_time, last_bytes = task._last_progress
        if not last_time:  # primera noticia: empieza a contar el intervalo
            task._last_progress = (now, done)
            return
        finished = total is not None and done >= total
        # Como mucho un evento por intervalo; el del final sólo si hubo alguno antes: una
        # descarga que dura menos de un intervalo no necesita informe de progreso.
        if now - last_time < interval() and not (finished and task._progress_events):
            return
        task.speed = (done - last_bytes) / max(now - last_time, 1e-6)
        task._last_progress = (now, done)
        task._progress_events += 1
        percent = round(done * 100 / total, 1) if total else None
        _log.info("job.progress", correlation_id=task.correlation_id, bytes=done, total=total,
                  percent=percent, speed=round(task.speed))

    return report
