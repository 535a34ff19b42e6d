"""DownloadManager y DownloadTask: cola con prioridad, concurrencia, reintentos, cancelación.

Cada descarga corre dentro de ``DownloadLifecycle.execute()``: un directorio aislado por
trabajo que sobrevive a los reintentos (para reanudar con Range) y se borra al terminar. A lo
sumo ``max_concurrent`` descargas a la vez; el resto espera por prioridad y orden de llegada.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.downloaders.base import (
    ChecksumMismatch,
    Downloader,
    DownloadError,
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    PermanentDownloadError,
    StorageError,
    TransientDownloadError,
)
from daemon.downloaders.download_lifecycle import DownloadLifecycle, LifecycleState, safe_filename_in
from daemon.events import bind_correlation_id, get_logger
from daemon.faultpoints import crash_point
from daemon.publish import PUBLISH_MARKER, find_linked_publication, publish_file, recover_publication

__all__ = ["DownloadManager", "DownloadTask", "RetryPolicy"]

_log = get_logger()
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EROFS}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Reintentos con backoff exponencial y jitter; Retry-After del servidor manda si es mayor."""

    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        jittered = base * random.uniform(0.5, 1.0)
        return max(jittered, retry_after or 0.0)


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
    context: Any = None  # lo que el llamador quiera asociar (p. ej. el JobSpec del spool)
    state: str = "queued"  # queued | running | retrying | succeeded | failed | cancelled | interrupted
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


Hook = Callable[[DownloadTask], None]


class DownloadManager:
    """Corre descargas aisladas con un límite de concurrencia.

    ``on_published(task)`` se llama tras publicar y antes de borrar el directorio aislado (el
    registro terminal se escribe ahí: una caída después no repite la descarga);
    ``on_finished(task)`` al terminar de cualquier forma.
    """

    def __init__(
        self,
        downloaders: dict[str, Downloader],
        output_root: Path,
        max_concurrent: int = 4,
        temp_root: Path | None = None,
        progress_interval: float = 1.0,
        on_published: Hook | None = None,
        on_finished: Hook | None = None,
        fsync: bool = True,
        resolve_auto: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        self.downloaders = downloaders
        self.output_root = output_root
        self.max_concurrent = max_concurrent
        self.temp_root = temp_root
        self.progress_interval = progress_interval
        self.on_published = on_published
        self.on_finished = on_finished
        self.fsync = fsync
        self.resolve_auto = resolve_auto
        self.tasks: dict[str, DownloadTask] = {}
        self._heap: list[tuple[int, int, DownloadTask]] = []
        self._running: set[DownloadTask] = set()
        self._seq = itertools.count()
        self._idle = asyncio.Event()
        self._idle.set()

    # --- API pública ----------------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._heap)

    def submit(
        self,
        correlation_id: str,
        options: DownloadOptions,
        *,
        downloader: str = "http",
        priority: int = 0,
        retry: RetryPolicy | None = None,
        output_subdir: str | None = None,
        context: Any = None,
    ) -> DownloadTask:
        """Encola una descarga; lanza ``ValueError`` si ya hay una viva con ese id."""
        if correlation_id in self.tasks:
            raise ValueError(f"a download with id {correlation_id!r} is already queued or running")
        if downloader not in self.downloaders and downloader != "auto":
            raise ValueError(f"unknown downloader {downloader!r}; known: {', '.join(self.downloaders)}")
        lifecycle = DownloadLifecycle(correlation_id, options, base_temp_dir=self.temp_root)
        task = DownloadTask(
            correlation_id, options, lifecycle, downloader=downloader, priority=priority, seq=next(self._seq),
            retry=retry or RetryPolicy(), output_subdir=output_subdir, context=context,
        )
        self.tasks[correlation_id] = task
        heapq.heappush(self._heap, (-priority, task.seq, task))
        self._idle.clear()
        _log.info("job.queued", correlation_id=correlation_id, priority=priority, downloader=downloader,
                  queued=len(self._heap), running=len(self._running))
        self._dispatch()
        return task

    async def cancel(self, correlation_id: str) -> bool:
        """Cancela una descarga en cola o en curso; su directorio temporal se borra."""
        task = self.tasks.get(correlation_id)
        if task is None:
            return False
        if task.task is None:  # aún en cola
            self._heap = [entry for entry in self._heap if entry[2] is not task]
            heapq.heapify(self._heap)
            task.state = "cancelled"
            task.finished_at = time.time()
            # El mismo error que una cancelación en curso: el registro terminal dice el motivo.
            task.error = {"kind": "cancelled", "message": "cancelled on request while queued"}
            _log.warning("job.cancelled", correlation_id=correlation_id, attempt=0, while_state="queued")
            self._forget(task)
            return True
        task.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task.task
        return True

    def get_temp_path(self, correlation_id: str, filename: str) -> str | None:
        """Ruta de ``filename`` en el directorio aislado de una descarga viva, o None."""
        task = self.tasks.get(correlation_id)
        if task is None or task.temp_dir is None:
            return None
        try:
            return str(safe_filename_in(task.temp_dir, filename))
        except ValueError:
            return None

    def set_max_concurrent(self, value: int) -> None:
        """Cambia el límite en caliente (SIGHUP)."""
        self.max_concurrent = value
        self._dispatch()

    async def wait_idle(self) -> None:
        """Espera a que no quede nada en cola ni en curso."""
        await self._idle.wait()

    async def shutdown(self, grace: float, abort: asyncio.Event | None = None) -> list[DownloadTask]:
        """Deja terminar lo que corre durante ``grace`` s (o hasta ``abort``); luego lo interrumpe
        conservando sus directorios (``on_finished`` lo ve como ``interrupted``). Devuelve las
        tareas que seguían en cola, sin empezar."""
        pending = [entry[2] for entry in sorted(self._heap, key=lambda e: (e[0], e[1]))]
        self._heap.clear()
        for task in pending:
            self.tasks.pop(task.correlation_id, None)
        running = [t.task for t in self._running if t.task is not None]
        if running and grace > 0:
            waiters: set[asyncio.Future[Any]] = set(running)
            abort_wait = asyncio.ensure_future(abort.wait()) if abort is not None else None
            if abort_wait is not None:
                waiters.add(abort_wait)
            deadline = time.monotonic() + grace
            while any(not t.done() for t in running) and not (abort is not None and abort.is_set()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                waiters = {w for w in waiters if not w.done()}
            if abort_wait is not None:
                abort_wait.cancel()
        interrupted = []
        for task in list(self._running):
            if task.task is not None and not task.task.done():
                task.interrupt = True
                task.lifecycle.keep_temp_dir_on_cancel()
                task.task.cancel()
                interrupted.append(task.task)
        for handle in interrupted:
            with contextlib.suppress(asyncio.CancelledError):
                await handle
        return pending

    def snapshot(self) -> list[dict[str, Any]]:
        return [t.snapshot() for t in self._running]

    # --- planificación --------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._heap and len(self._running) < self.max_concurrent:
            _, _, task = heapq.heappop(self._heap)
            self._running.add(task)
            task.state = "running"
            task.started_at = time.time()
            task.task = asyncio.get_running_loop().create_task(self._run(task), name=f"download-{task.correlation_id}")

    def _forget(self, task: DownloadTask) -> None:
        self._running.discard(task)
        self.tasks.pop(task.correlation_id, None)
        if self.on_finished is not None:
            try:
                self.on_finished(task)
            except Exception as exc:  # un fallo al registrar no debe tumbar al planificador
                _log.error("daemon.error", correlation_id=task.correlation_id, where="on_finished", error=repr(exc))
        if not self._heap and not self._running:
            self._idle.set()

    async def _run(self, task: DownloadTask) -> None:
        bind_correlation_id(task.correlation_id)
        try:
            task.result = await task.lifecycle.execute(self._download_func(task), self._progress_callback(task))
            task.state = "succeeded"
        except asyncio.CancelledError:
            task.state = "interrupted" if task.interrupt else "cancelled"
            task.error = {"kind": "interrupted" if task.interrupt else "cancelled",
                          "message": "stopped by the daemon's shutdown" if task.interrupt else "cancelled on request"}
        except DownloadError as exc:
            task.state, task.error = "failed", exc.to_record()
        except OSError as exc:
            # P. ej. el disco temporal lleno antes de poder crear el directorio aislado: es un
            # fallo de almacenamiento del trabajo, no un error interno del daemon.
            task.state = "failed"
            if exc.errno in _STORAGE_ERRNOS or exc.errno in (errno.EACCES, errno.EPERM):
                where = f" ({exc.filename})" if exc.filename else ""
                task.error = StorageError(f"storage error: {exc.strerror}{where}", errno=exc.errno).to_record()
            else:
                task.error = {"kind": "internal", "message": f"{type(exc).__name__}: {exc}", "transient": False}
                _log.exception("daemon.error", where="download", error=repr(exc))
            self._log_failed_outside_lifecycle(task)
        except Exception as exc:
            task.state = "failed"
            task.error = {"kind": "internal", "message": f"{type(exc).__name__}: {exc}", "transient": False}
            _log.exception("daemon.error", where="download", error=repr(exc))
            self._log_failed_outside_lifecycle(task)
        finally:
            task.finished_at = time.time()
            self._forget(task)
            self._dispatch()

    @staticmethod
    def _log_failed_outside_lifecycle(task: DownloadTask) -> None:
        """``job.failed`` si el fallo llegó antes de que el ciclo de vida lo registrara (al crear
        el directorio aislado): toda secuencia de eventos de un trabajo acaba en un evento terminal."""
        if task.lifecycle.state is not LifecycleState.FAILED:
            _log.error("job.failed", correlation_id=task.correlation_id, attempt=task.attempt, error=task.error)

    def _progress_callback(self, task: DownloadTask) -> Callable[[int, int | None], None]:
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
            if now - last_time < self.progress_interval and not (finished and task._progress_events):
                return
            task.speed = (done - last_bytes) / max(now - last_time, 1e-6)
            task._last_progress = (now, done)
            task._progress_events += 1
            percent = round(done * 100 / total, 1) if total else None
            _log.info("job.progress", correlation_id=task.correlation_id, bytes=done, total=total,
                      percent=percent, speed=round(task.speed))

        return report

    def _download_func(self, task: DownloadTask) -> Callable[..., Any]:
        async def run(options: DownloadOptions, progress: Callable[[int, int | None], None] | None) -> DownloadResult:
            temp_dir = options.output_path
            assert temp_dir is not None
            marker = temp_dir / PUBLISH_MARKER
            output_dir = self.output_root / task.output_subdir if task.output_subdir else self.output_root
            published = (recover_publication(marker, None) if marker.exists()
                         else find_linked_publication(temp_dir, output_dir))
            if published is not None:
                return self._finish_recovered(task, published)
            result = await self._attempts(task, options, progress)
            if options.sha256 and result.sha256 != options.sha256:
                result.path.unlink(missing_ok=True)
                raise ChecksumMismatch(
                    f"sha256 of the download is {result.sha256}, the job expected {options.sha256}",
                    expected=options.sha256, actual=result.sha256,
                )
            crash_point("before_publish")
            # Publicar y escribir el registro terminal (ambos con fsync) en un solo salto de hilo.
            await asyncio.get_running_loop().run_in_executor(None, self._publish_and_record, task, result, marker)
            return result

        return run

    def _publish_and_record(self, task: DownloadTask, result: DownloadResult, marker: Path) -> None:
        """En un hilo de trabajo: publicar por ``link()`` y escribir el registro terminal."""
        published = publish_file(result.path, self.output_root, task.output_subdir, result.filename, marker,
                                 self.fsync)
        task.published_path, task.renamed = published.path, published.renamed
        result.path, result.filename, result.published = published.path, published.path.name, True
        task.result = result
        _log.info("job.published", correlation_id=task.correlation_id, path=str(published.path),
                  renamed=published.renamed, size=result.size, sha256=result.sha256)
        crash_point("after_publish")
        if self.on_published is not None:
            self.on_published(task)

    def _finish_recovered(self, task: DownloadTask, published: Path) -> DownloadResult:
        from daemon.sha import file_sha256

        size = published.stat().st_size
        result = DownloadResult(path=published, filename=published.name, size=size, sha256=file_sha256(published),
                                published=True)
        task.published_path, task.result = published, result
        _log.info("job.published", correlation_id=task.correlation_id, path=str(published), recovered=True,
                  size=size, sha256=result.sha256)
        if self.on_published is not None:
            self.on_published(task)
        return result

    async def _attempts(
        self, task: DownloadTask, options: DownloadOptions, progress: Callable[[int, int | None], None] | None
    ) -> DownloadResult:
        if task.downloader == "auto":  # se decide al arrancar: la cola no paga la consulta
            task.downloader = await self.resolve_auto(options.url) if self.resolve_auto else "http"
        downloader = self.downloaders[task.downloader]
        while True:
            try:
                async with asyncio.timeout(options.timeout):
                    return await downloader.download(options, progress)
            except TimeoutError:
                error: DownloadError = DownloadTimeout(f"the attempt took longer than {options.timeout:.0f}s")
            except TransientDownloadError as exc:
                error = exc
            except PermanentDownloadError:
                raise
            except OSError as exc:
                if exc.errno in _STORAGE_ERRNOS:
                    raise StorageError(f"storage error: {exc.strerror}", errno=exc.errno) from None
                raise
            if task.attempt > task.retry.retries:
                raise error
            delay = task.retry.delay(task.attempt, error.retry_after)
            task.state = "retrying"
            _log.warning("job.retrying", correlation_id=task.correlation_id, attempt=task.attempt,
                         next_attempt=task.attempt + 1, delay_s=round(delay, 3), error=error.to_record())
            await asyncio.sleep(delay)
            task.state = "running"
            task.lifecycle.begin_attempt()
