"""Aislamiento y ciclo de vida de una descarga: IsolatedDownload, DownloadLifecycle, cleanup_download.

Cada descarga vive en ``<raíz temporal>/videonote_dl_<correlation_id>`` (0700), bloqueado con
``flock`` mientras vive. Al terminar (éxito, fallo, excepción, cancelación, KeyboardInterrupt)
el directorio se borra, salvo que se pida conservarlo (reanudar tras una parada).

Ejecutar este archivo (``python daemon/downloaders/download_lifecycle.py``) corre la
autoprueba del plan: aislamiento y limpieza en éxito, fallo, excepción y por id.
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from daemon.dirlock import DirLock, DirLockBusy
from daemon.downloaders.base import (
    DownloadOptions,
    DownloadResult,
    ProgressCallback,
    StorageError,
    error_record,
)
from daemon.events import get_logger
from daemon.faultpoints import apause_point, crash_point
from daemon.ids import validate_correlation_id
from daemon.names import safe_filename_in
from daemon.temp_manager import TempManager

__all__ = [
    "DownloadFunc",
    "DownloadLifecycle",
    "IsolatedDownload",
    "LifecycleRecord",
    "LifecycleState",
    "cleanup_download",
    "safe_filename_in",
]

_log = get_logger()

DownloadFunc = Callable[[DownloadOptions, ProgressCallback | None], Awaitable[DownloadResult]]


class IsolatedDownload:
    """Directorio aislado de una descarga como gestor de contexto.

    ``__enter__`` crea ``videonote_dl_<id>`` (0700), toma su cerrojo y devuelve la ruta;
    ``__exit__`` lo borra, también si hubo una excepción (salvo ``keep()``).
    """

    __slots__ = ("_keep", "_lock", "base_temp_dir", "correlation_id", "path")  # uno por trabajo en cola

    def __init__(self, correlation_id: str, base_temp_dir: Path | str | None = None) -> None:
        self.correlation_id = validate_correlation_id(correlation_id)
        # La raíz llega ya como Path desde el gestor: no se copia (una por trabajo en cola).
        self.base_temp_dir = base_temp_dir if base_temp_dir is None or isinstance(base_temp_dir, Path) \
            else Path(base_temp_dir)
        self.path: Path | None = None
        self._lock: DirLock | None = None
        self._keep = False

    def __enter__(self) -> Path:
        path = TempManager.get_subdir(self.correlation_id, self.base_temp_dir)
        try:  # un directorio de verdad (no un enlace) que ya estaba: se reanuda en él
            reused = stat.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            reused = False
        path = TempManager.get_download_temp_dir(self.correlation_id, self.base_temp_dir)
        lock = DirLock(path)
        lock.acquire()  # DirLockBusy si otro proceso vivo lo usa
        self.path, self._lock, self._keep = path, lock, False
        _log.info("tempdir.created", correlation_id=self.correlation_id, temp_dir=str(path), reused=reused)
        return path

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._keep:
            self.release()
        else:
            self.cleanup()

    def keep(self) -> None:
        """Conservar el directorio al salir (la descarga se reanudará más tarde)."""
        self._keep = True

    def release(self) -> None:
        """Suelta el cerrojo sin borrar nada."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.path is not None and self._keep:
            _log.info("tempdir.kept", correlation_id=self.correlation_id, temp_dir=str(self.path))

    def cleanup(self) -> bool:
        """Borra el directorio y suelta el cerrojo. Un error se registra, nunca se lanza."""
        path = self.path or TempManager.get_subdir(self.correlation_id, self.base_temp_dir)
        removed = False
        try:
            shutil.rmtree(path)
            removed = True
        except FileNotFoundError:
            pass
        except OSError as exc:
            _log.error(
                "tempdir.cleanup_failed", correlation_id=self.correlation_id, temp_dir=str(path),
                error=exc.strerror or str(exc),
            )
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        if removed:
            _log.info("tempdir.removed", correlation_id=self.correlation_id, temp_dir=str(path))
        return removed

    def get_path(self, filename: str) -> Path:
        """Ruta de ``filename`` dentro del directorio aislado (sólo nombres simples)."""
        base = self.path or TempManager.get_subdir(self.correlation_id, self.base_temp_dir)
        return safe_filename_in(base, filename)


class LifecycleState(enum.StrEnum):
    """Estados del ciclo de vida de una descarga."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


@dataclass(slots=True)
class LifecycleRecord:
    """Registro del ciclo de vida: estado, marcas de tiempo, intento, directorio y error."""

    correlation_id: str
    state: LifecycleState = LifecycleState.PENDING
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 0
    temp_dir: str | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["state"] = str(self.state)
        return record


class DownloadLifecycle:
    """Ejecuta una descarga dentro de su directorio aislado y limpia según el resultado.

    ``execute`` crea el directorio, apunta ``options.output_path`` a él, corre la descarga,
    limpia según ``cleanup_on_success`` / ``cleanup_on_failure``, relanza los fallos y, si la
    tarea se cancela, limpia y relanza ``CancelledError``. Emite ``job.started``,
    ``job.succeeded``, ``job.failed``, ``job.cancelled`` / ``job.interrupted`` y los
    ``tempdir.*``.
    """

    __slots__ = ("_keep_on_cancel", "before_terminal_event", "cleanup_on_failure", "cleanup_on_success",
                 "correlation_id", "isolated", "options", "record")  # uno por trabajo en cola

    def __init__(
        self,
        correlation_id: str,
        options: DownloadOptions,
        cleanup_on_success: bool = True,
        cleanup_on_failure: bool = True,
        base_temp_dir: Path | str | None = None,
    ) -> None:
        self.correlation_id = validate_correlation_id(correlation_id)
        self.options = options
        self.options.correlation_id = self.correlation_id
        self.cleanup_on_success = cleanup_on_success
        self.cleanup_on_failure = cleanup_on_failure
        self.isolated = IsolatedDownload(self.correlation_id, base_temp_dir)
        self.record = LifecycleRecord(self.correlation_id, created_at=time.time())
        self._keep_on_cancel = False
        # Llamado con el registro ya final (failed/cancelled) ANTES de emitir su evento terminal: quien
        # guarda el desenlace (el gestor: el registro terminal, con fsync) lo hace durable primero, así
        # que un corte de luz nunca deja en el registro de eventos un desenlace que luego no ocurrió.
        self.before_terminal_event: Callable[[LifecycleRecord], None] | None = None

    @property
    def state(self) -> LifecycleState:
        return self.record.state

    @property
    def temp_dir(self) -> Path | None:
        return self.isolated.path

    def keep_temp_dir_on_cancel(self) -> None:
        """Una cancelación a partir de ahora es una interrupción: el directorio se conserva."""
        self._keep_on_cancel = True

    def begin_attempt(self) -> int:
        """Marca el inicio de un intento (el primero lo marca ``execute``) y emite ``job.started``."""
        self.record.attempt += 1
        self.record.state = LifecycleState.RUNNING
        _log.info("job.started", correlation_id=self.correlation_id, attempt=self.record.attempt,
                  temp_dir=self.record.temp_dir)
        return self.record.attempt

    async def execute(
        self, download_func: DownloadFunc, progress_callback: ProgressCallback | None = None
    ) -> DownloadResult:
        """Corre ``download_func(options, progress_callback)`` aislada; devuelve su resultado."""
        try:
            temp_dir = await self._enter_isolated()
        except OSError as exc:
            # Sin directorio aislado (disco lleno, sin inodos, sólo lectura): el trabajo falla con
            # una causa clara y la secuencia de eventos habitual (started -> failed).
            self.record.started_at = time.time()
            self.begin_attempt()
            error = StorageError(f"cannot create the temp dir: {exc.strerror or exc}; free space or fix "
                                 "temp_dir permissions", errno=exc.errno)
            self._finish_failed(error)
            raise error from None
        self.options.output_path = temp_dir
        self.record.temp_dir = str(temp_dir)
        self.record.started_at = time.time()
        self.begin_attempt()
        try:
            result = await download_func(self.options, progress_callback)
        except asyncio.CancelledError:
            self._finish_interrupted() if self._keep_on_cancel else self._finish_cancelled()
            raise
        except BaseException as exc:  # también KeyboardInterrupt: nunca deja el directorio atrás
            self._finish_failed(exc)
            raise
        await apause_point("cleaning", self.correlation_id)
        self._finish_succeeded(result)
        return result

    async def _enter_isolated(self, attempts: int = 100, pause: float = 0.05) -> Path:
        """Entra en el directorio aislado; si el recolector lo tiene un instante (cerrojo o borrado
        a medias), espera y reintenta en lugar de fallar."""
        for _ in range(attempts - 1):
            try:
                return self.isolated.__enter__()
            except (DirLockBusy, FileNotFoundError):
                await asyncio.sleep(pause)
        return self.isolated.__enter__()

    def get_temp_path(self, filename: str) -> Path:
        """Ruta de ``filename`` dentro del directorio aislado."""
        return self.isolated.get_path(filename)

    def cleanup(self) -> bool:
        """Borra el directorio aislado ahora mismo."""
        return self.isolated.cleanup()

    # --- transiciones --------------------------------------------------------------------
    def _close_isolated(self, remove: bool) -> None:
        """Borra el directorio aislado o, si se pidió conservarlo, lo suelta (``tempdir.kept``)."""
        if remove:
            self.isolated.cleanup()
        else:
            self.isolated.keep()
            self.isolated.release()

    def _finish_succeeded(self, result: DownloadResult) -> None:
        self.record.state = LifecycleState.SUCCEEDED
        self.record.finished_at = time.time()
        _log.info(
            "job.succeeded", correlation_id=self.correlation_id, attempt=self.record.attempt,
            path=str(result.path), size=result.size, sha256=result.sha256,
            duration_s=round(self.record.finished_at - (self.record.started_at or self.record.created_at), 3),
        )
        crash_point("mid_cleanup")
        self._close_isolated(self.cleanup_on_success)

    def _finish_failed(self, exc: BaseException) -> None:
        self.record.state = LifecycleState.FAILED
        self.record.finished_at = time.time()
        self.record.error = error_record(exc)
        self._before_terminal_event()
        _log.error("job.failed", correlation_id=self.correlation_id, attempt=self.record.attempt,
                   error=self.record.error)
        self._close_isolated(self.cleanup_on_failure)

    def _finish_cancelled(self) -> None:
        self.record.state = LifecycleState.CANCELLED
        self.record.finished_at = time.time()
        self._before_terminal_event()
        _log.warning("job.cancelled", correlation_id=self.correlation_id, attempt=self.record.attempt)
        self.isolated.cleanup()

    def _before_terminal_event(self) -> None:
        if self.before_terminal_event is not None:
            try:
                self.before_terminal_event(self.record)
            except Exception as exc:  # el desenlace se registra igual (más tarde) en quien lo guarda
                _log.error("daemon.error", correlation_id=self.correlation_id, where="before_terminal_event",
                           error=repr(exc))

    def _finish_interrupted(self) -> None:
        self.record.state = LifecycleState.INTERRUPTED
        self.record.finished_at = time.time()
        _log.info("job.interrupted", correlation_id=self.correlation_id, attempt=self.record.attempt)
        self.isolated.keep()
        self.isolated.release()


def cleanup_download(correlation_id: str, base_temp_dir: Path | str | None = None) -> bool:
    """Borra el directorio temporal de esa descarga (recuperación manual). True si existía."""
    return TempManager.cleanup_by_correlation_id(correlation_id, base_temp_dir)


if __name__ == "__main__":  # pragma: no cover
    # La autoprueba se carga por nombre: este módulo no importa selftest (que sí lo importa a él).
    import runpy

    runpy.run_module("daemon.downloaders.selftest", run_name="__main__", alter_sys=True)
