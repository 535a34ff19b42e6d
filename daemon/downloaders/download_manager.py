"""DownloadManager y DownloadTask: cola con prioridad, concurrencia, reintentos, cancelación.

Cada descarga corre dentro de ``DownloadLifecycle.execute()``: un directorio aislado por
trabajo que sobrevive a los reintentos (para reanudar con Range) y se borra al terminar. A lo
sumo ``max_concurrent`` descargas a la vez; el resto espera por prioridad y orden de llegada.

El camino de un trabajo se lee de arriba abajo en ``_job_path``: directorio aislado, descarga,
verificación, publicación, registro, limpieza. Al empezar a publicar pasa el **punto de no
retorno** (``DownloadTask.committed``): desde ahí ni una cancelación ni una parada cambian el
desenlace; la cancelación se informa como tardía y la parada espera (lo acotado: un ``link`` y
un fsync, o una copia entre sistemas de archivos). Antes de ese punto, cancelar lo borra todo y
parar devuelve el trabajo a la cola conservando el directorio para reanudar. Un fallo de
almacenamiento al publicar (ENOSPC, EDQUOT, EIO) no deja nada en la salida y vuelve a antes del
punto de no retorno: se reintenta con espera. El desenlace de cada tarea se entrega una sola vez
a ``on_outcome`` (quien escribe el registro terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import time
from collections.abc import Awaitable, Callable
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
    RouteToYtdlp,
    StorageError,
    TransientDownloadError,
    UnsupportedUrl,
    error_record,
)
from daemon.downloaders.download_lifecycle import DownloadLifecycle, LifecycleRecord, LifecycleState, safe_filename_in
from daemon.downloaders.download_task import CancelResult, DownloadTask, RetryPolicy, TaskState
from daemon.downloaders.fair_queue import FairQueue
from daemon.downloaders.job_finish import Finisher
from daemon.downloaders.progress import progress_reporter
from daemon.downloaders.ytdlp.result import folder_result
from daemon.events import bind_correlation_id, get_logger
from daemon.faultpoints import apause_point, crash_point
from daemon.file_io import FileIo
from daemon.postprocess import postprocess_step
from daemon.publish import find_linked_publication, recover_publication
from daemon.publish_folder import recover_folder
from daemon.sha import file_sha256

__all__ = ["CancelResult", "DownloadManager", "DownloadTask", "RetryPolicy", "TaskState"]

_log = get_logger()
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EROFS}
Hook = Callable[[DownloadTask], None]


class DownloadManager:
    """Corre descargas aisladas con un límite de concurrencia.

    ``on_outcome(task)`` recibe una sola vez el desenlace de cada tarea (``task.state``:
    succeeded, failed, cancelled o interrupted) y lo hace durable: es el único sitio que escribe
    registros terminales. Para un éxito se llama tras publicar y antes de borrar el directorio
    aislado (en un hilo, o en el bucle según ``file_io``): una caída después no la repite. Si lanza
    ``OSError`` en un éxito, la publicación se retira y se reintenta como un fallo de
    almacenamiento. ``on_finished(task)`` se llama al final de todo, para la contabilidad.
    """

    def __init__(
        self,
        downloaders: dict[str, Downloader],
        output_root: Path,
        max_concurrent: int = 4,
        temp_root: Path | None = None,
        progress_interval: float = 1.0,
        on_outcome: Hook | None = None,
        on_finished: Hook | None = None,
        fsync: bool = True,
        resolve_auto: Callable[[DownloadOptions], Awaitable[str]] | None = None,
        max_running_per_owner: int = 0,
        file_io: FileIo | None = None,
    ) -> None:
        self.downloaders = downloaders
        self.output_root = output_root
        self.max_concurrent = max_concurrent
        self.temp_root = temp_root
        self.progress_interval = progress_interval
        self.on_outcome, self.on_finished = on_outcome, on_finished
        self.fsync = fsync
        self.finisher = Finisher(output_root, fsync, on_outcome, file_io)
        self.resolve_auto = resolve_auto
        self.tasks: dict[str, DownloadTask] = {}
        self._heap: FairQueue[DownloadTask] = FairQueue(max_running_per_owner)  # turnos por remitente
        self._running: set[DownloadTask] = set()
        self._seq = itertools.count()
        self._before_terminal_event = self._conclude_from_lifecycle  # uno para todos, no un cierre por trabajo
        self._idle, self._stopping = asyncio.Event(), False
        self._idle.set()

    # --- API pública ----------------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._heap)

    @property
    def queued_ready(self) -> int:
        """En cola y listas para un hueco libre (su remitente no está en ``max_running_per_owner``)."""
        return self._heap.ready_count()

    def submit(
        self,
        correlation_id: str,
        options: DownloadOptions,
        *,
        downloader: str = "http",
        priority: int = 0,
        retry: RetryPolicy | None = None,
        output_subdir: str | None = None,
        owner: int | None = None,
    ) -> DownloadTask:
        """Encola una descarga; lanza ``ValueError`` si ya hay una viva con ese id."""
        if correlation_id in self.tasks:
            raise ValueError(f"a download with id {correlation_id!r} is already queued or running")
        if downloader not in self.downloaders and downloader != "auto":
            raise ValueError(f"unknown downloader {downloader!r}; known: {', '.join(self.downloaders)}")
        lifecycle = DownloadLifecycle(correlation_id, options, base_temp_dir=self.temp_root)
        task = DownloadTask(
            correlation_id, options, lifecycle, downloader=downloader, priority=priority, seq=next(self._seq),
            retry=retry or RetryPolicy(), output_subdir=output_subdir, owner=owner,
        )
        # El registro terminal de un fallo o una cancelación, durable antes de su evento terminal.
        lifecycle.before_terminal_event = self._before_terminal_event
        self.tasks[correlation_id] = task
        self._heap.push(task)
        self._idle.clear()
        _log.info("job.queued", correlation_id=correlation_id, priority=priority, downloader=downloader,
                  queued=len(self._heap), running=len(self._running))
        self._dispatch()
        return task

    async def cancel(self, correlation_id: str) -> CancelResult:
        """Cancela una descarga en cola o en curso (su directorio temporal se borra).

        Pasado el punto de no retorno no cancela nada: devuelve ``TOO_LATE`` y emite
        ``job.cancel_too_late``; el trabajo termina como succeeded.
        """
        task = self.tasks.get(correlation_id)
        if task is None:
            return CancelResult.UNKNOWN
        if task.committed:
            _log.warning("job.cancel_too_late", correlation_id=correlation_id, state=str(task.state),
                         reason="the download is complete and is being published; it will end as succeeded")
            return CancelResult.TOO_LATE
        if task.task is None:  # aún en cola
            self._heap.remove(task)
            task.state = TaskState.CANCELLED
            task.finished_at = time.time()
            # El mismo error que una cancelación en curso: el registro terminal dice el motivo.
            task.error = {"kind": "cancelled", "message": "cancelled on request while queued"}
            self._conclude(task)  # el registro, durable antes del evento terminal
            _log.warning("job.cancelled", correlation_id=correlation_id, attempt=0, while_state="queued")
            self._settle(task)
            return CancelResult.CANCELLED
        task.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task.task
        return CancelResult.CANCELLED if task.state is TaskState.CANCELLED else CancelResult.TOO_LATE

    def get_temp_path(self, correlation_id: str, filename: str) -> str | None:
        """Ruta de ``filename`` en el directorio aislado de una descarga viva, o None."""
        task = self.tasks.get(correlation_id)
        if task is None or task.temp_dir is None:
            return None
        try:
            return str(safe_filename_in(task.temp_dir, filename))
        except ValueError:
            return None

    def set_max_concurrent(self, value: int, max_running_per_owner: int | None = None) -> None:
        """Cambia los límites en caliente (SIGHUP)."""
        self.max_concurrent = value
        if max_running_per_owner is not None:
            self._heap.max_running_per_owner = max_running_per_owner
        self._dispatch()

    async def wait_idle(self) -> None:
        """Espera a que no quede nada en cola ni en curso."""
        await self._idle.wait()

    def committed_count(self) -> int:
        """Cuántas tareas están pasado el punto de no retorno (una parada las espera)."""
        return sum(1 for t in self._running if t.committed)

    async def shutdown(self, grace: float, abort: asyncio.Event | None = None) -> list[DownloadTask]:
        """Deja terminar lo que corre durante ``grace`` s (o hasta ``abort``); luego interrumpe lo
        que no pasó el punto de no retorno, conservando sus directorios (``on_outcome`` lo ve como
        ``interrupted``), y espera a que terminen los que sí lo pasaron. Devuelve las tareas que
        seguían en cola, sin empezar."""
        self._stopping = True
        pending = self._heap.drain()
        for task in pending:
            self.tasks.pop(task.correlation_id, None)
        deadline = time.monotonic() + grace
        while True:
            live = [t for t in self._running if t.task is not None and not t.task.done()]
            if not live:
                break
            aborted = abort is not None and abort.is_set()
            if aborted or time.monotonic() >= deadline:
                for task in live:
                    if not task.committed and not task.interrupt:
                        task.interrupt = True
                        task.lifecycle.keep_temp_dir_on_cancel()
                        assert task.task is not None
                        task.task.cancel()
                wait_for = 0.1  # las que están publicando terminan solas; una que vuelva atrás se interrumpe
            else:
                wait_for = min(deadline - time.monotonic(), 0.25)
            handles = {t.task for t in live if t.task is not None}
            await asyncio.wait(handles, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
        return pending

    def snapshot(self) -> list[dict[str, Any]]:
        return [t.snapshot() for t in self._running]

    # --- planificación --------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self._heap and len(self._running) < self.max_concurrent and not self._stopping:
            task = self._heap.pop_ready()
            if task is None:
                return  # lo que espera es de remitentes en su tope
            self._running.add(task)
            task.state = TaskState.RUNNING
            task.started_at = time.time()
            task.task = asyncio.get_running_loop().create_task(self._run(task), name=f"download-{task.correlation_id}")

    def _settle(self, task: DownloadTask) -> None:
        """Fin de una tarea: su desenlace a ``on_outcome`` (si aún no lo tuvo) y la contabilidad."""
        if task in self._running:
            self._running.discard(task)
            self._heap.finished(task)
        self.tasks.pop(task.correlation_id, None)
        if not task.concluded:
            self._conclude(task)
        if self.on_finished is not None:
            try:
                self.on_finished(task)
            except Exception as exc:  # un fallo al contabilizar no debe tumbar al planificador
                _log.error("daemon.error", correlation_id=task.correlation_id, where="on_finished", error=repr(exc))
        if not self._heap and not self._running:
            self._idle.set()

    def _conclude(self, task: DownloadTask) -> None:
        """Entrega el desenlace a ``on_outcome`` exactamente una vez."""
        task.concluded = True
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(task)
        except Exception as exc:
            _log.error("daemon.error", correlation_id=task.correlation_id, where="on_outcome", error=repr(exc))

    def _conclude_from_lifecycle(self, record: LifecycleRecord) -> None:
        """El ciclo de vida terminó en failed o cancelled: el desenlace se registra ya, antes de su evento."""
        task = self.tasks.get(record.correlation_id)  # la del registro: una tarea viva por id
        if task is None or task.lifecycle.record is not record or task.concluded or task.interrupt:
            return
        if record.state is LifecycleState.CANCELLED:
            task.state, task.error = TaskState.CANCELLED, {"kind": "cancelled", "message": "cancelled on request"}
        else:
            task.state, task.error = TaskState.FAILED, record.error
        task.finished_at = time.time()
        self._conclude(task)

    async def _run(self, task: DownloadTask) -> None:
        bind_correlation_id(task.correlation_id)
        try:
            progress = progress_reporter(task, lambda: self.progress_interval)
            task.result = await task.lifecycle.execute(self._job_path(task), progress)
            task.state = TaskState.SUCCEEDED
        except asyncio.CancelledError:
            if task.concluded:  # ya registrado (publicado, o cancelado antes de su evento): no cambia
                pass
            else:
                task.state = TaskState.INTERRUPTED if task.interrupt else TaskState.CANCELLED
                task.error = ({"kind": "interrupted", "message": "stopped by the daemon's shutdown"} if task.interrupt
                              else {"kind": "cancelled", "message": "cancelled on request"})
        except Exception as exc:
            if not task.concluded:
                task.state, task.error = TaskState.FAILED, error_record(exc)
            if task.error is not None and task.error["kind"] == "internal":
                _log.exception("daemon.error", where="download", error=repr(exc))
            self._log_failed_outside_lifecycle(task)
        finally:
            task.finished_at = task.finished_at or time.time()
            self._settle(task)
            self._dispatch()

    @staticmethod
    def _log_failed_outside_lifecycle(task: DownloadTask) -> None:
        """``job.failed`` si el ciclo de vida no lo emitió (fallo al crear el directorio aislado)."""
        if task.lifecycle.state is not LifecycleState.FAILED:
            _log.error("job.failed", correlation_id=task.correlation_id, attempt=task.attempt, error=task.error)

    # --- el camino de un trabajo, paso a paso ---------------------------------------------------
    def _job_path(self, task: DownloadTask) -> Callable[..., Any]:
        """Lo que corre dentro del directorio aislado: descarga, verificación, publicación, registro."""
        job_id = task.correlation_id

        async def run(options: DownloadOptions, progress: Callable[[int, int | None], None] | None) -> DownloadResult:
            temp_dir = options.output_path
            assert temp_dir is not None
            await apause_point("temp_dir_created", job_id)
            previous = self._previous_publication(task, temp_dir)
            if previous is not None:  # una caída entre publicar y registrar: sólo falta el registro
                return await self.finisher.commit(task, previous, recovered=True)
            result = await self._attempts(task, options, progress)
            await apause_point("download_complete", job_id)
            self._verify(options, result)
            await apause_point("verifying", job_id)
            result = await postprocess_step(options, result, task.lifecycle.record.started_at)
            crash_point("before_publish")
            return await self.finisher.commit(task, result, recovered=False)

        return run

    @staticmethod
    def _verify(options: DownloadOptions, result: DownloadResult) -> None:
        if options.sha256 and result.sha256 != options.sha256:
            result.path.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"sha256 of the download is {result.sha256}, the job expected {options.sha256}",
                expected=options.sha256, actual=result.sha256,
            )

    def _output_dir(self, task: DownloadTask) -> Path:
        return self.output_root / task.output_subdir if task.output_subdir else self.output_root

    def _previous_publication(self, task: DownloadTask, temp_dir: Path) -> DownloadResult | None:
        """Lo que una vida anterior (de este daemon o de otro, muerto) ya publicó de este trabajo."""
        file_journal, folder_journal = self.finisher.existing_journals(task.correlation_id)
        if folder_journal is not None:  # una lista (playlist): la carpeta entera
            folder = recover_folder(folder_journal)
            return folder_result(folder, folder.name, 1 << 62, {}) if folder is not None else None
        published = (recover_publication(file_journal) if file_journal is not None
                     else find_linked_publication(temp_dir, self._output_dir(task)))
        if published is None:
            return None
        return DownloadResult(path=published, filename=published.name, size=published.stat().st_size,
                              sha256=file_sha256(published), published=True)

    async def _attempts(
        self, task: DownloadTask, options: DownloadOptions, progress: Callable[[int, int | None], None] | None
    ) -> DownloadResult:
        if task.downloader == "auto":  # se decide al arrancar: la cola no paga la consulta
            task.downloader = await self.resolve_auto(options) if self.resolve_auto else "http"
        downloader = self.downloaders[task.downloader]
        while True:
            try:
                async with asyncio.timeout(options.timeout):
                    return await downloader.download(options, progress)
            except RouteToYtdlp as route:
                if "ytdlp" not in self.downloaders:
                    raise UnsupportedUrl(f"the server sent a streaming manifest ({route.content_type}) and the "
                                         "yt-dlp downloader is not available in this daemon") from None
                # Un manifiesto sin sufijo revelador: lo dijo su Content-Type. Pasa a yt-dlp sin gastar intento.
                options.route_manifests = False
                task.downloader, downloader = "ytdlp", self.downloaders["ytdlp"]
                _log.info("job.routed", correlation_id=task.correlation_id, downloader="ytdlp",
                          rule=f"content-type {route.content_type}")
                continue
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
            task.state = TaskState.RETRYING
            _log.warning("job.retrying", correlation_id=task.correlation_id, attempt=task.attempt,
                         next_attempt=task.attempt + 1, delay_s=round(delay, 3), error=error.to_record())
            await asyncio.sleep(delay)
            task.state = TaskState.RUNNING
            task.lifecycle.begin_attempt()
