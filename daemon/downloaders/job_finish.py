"""El final del camino de un trabajo: publicar y registrar, pasado el punto de no retorno.

Cada intento pasa el punto (``DownloadTask.committed``) y corre entero en un hilo de trabajo,
protegido de la cancelación, o de una vez en el bucle (``file_io``: un archivo pequeño en
sistemas de archivos de memoria, donde nada espera a un disco; sin un ``await`` en medio, nada
lo interrumpe): publicar (``link()`` o copia preparada) y escribir el registro
terminal (``on_outcome``). Sin registro no hay éxito: si no se puede escribir, el nombre público
se retira. Un fallo de almacenamiento pasajero (ENOSPC, EDQUOT, EIO) no deja nada en la salida y
devuelve el trabajo a antes del punto; la espera hasta el siguiente intento sí se puede cancelar.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

from daemon.downloaders.base import DownloadResult, StorageError
from daemon.downloaders.download_task import DownloadTask, TaskState
from daemon.events import get_logger
from daemon.faultpoints import crash_point, pause_armed, pause_point
from daemon.file_io import THREADED, FileIo
from daemon.publish import STAGING_DIR, publish_file, unpublish
from daemon.publish_folder import publish_folder, unpublish_folder
from daemon.publish_journal import journal_paths

__all__ = ["Finisher"]

_log = get_logger()
# Fallos de almacenamiento al publicar que pueden pasar solos (se libera espacio, vuelve el disco).
_TRANSIENT_PUBLISH_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}
_STEPS = ("publishing", "published", "recorded")  # sus puntos de pausa (bloqueantes)


class Finisher:
    """Publica y registra el resultado de una tarea (``commit``); ``on_outcome`` escribe el registro."""

    def __init__(self, output_root: Path, fsync: bool, on_outcome: Callable[[DownloadTask], None] | None,
                 file_io: FileIo | None = None) -> None:
        self.output_root = output_root
        self.fsync = fsync
        self.on_outcome = on_outcome
        self.file_io = file_io or THREADED

    def journals(self, job_id: str) -> tuple[Path, Path]:
        """Los diarios de publicación del trabajo (archivo, carpeta): ``publish_journal``."""
        return journal_paths(self.output_root, STAGING_DIR, job_id)

    def existing_journals(self, job_id: str) -> tuple[Path | None, Path | None]:
        """Los diarios (archivo, carpeta) que existen, de una vida anterior: lo común es que ninguno.
        Con ``access``, que no crea una excepción por cada uno que falta (``Path.exists`` sí)."""
        file_journal, folder_journal = self.journals(job_id)
        return (file_journal if os.access(file_journal, os.F_OK) else None,
                folder_journal if os.access(folder_journal, os.F_OK) else None)

    async def commit(self, task: DownloadTask, result: DownloadResult, recovered: bool) -> DownloadResult:
        """Publicar y registrar: el punto de no retorno.

        Cada intento pasa el punto (``committed``) y corre entero en un hilo, protegido de la
        cancelación, o en el bucle sin soltarlo (``file_io``). Un fallo de almacenamiento pasajero
        no deja nada en la salida y devuelve el trabajo a antes del punto: la espera hasta el
        siguiente intento sí se puede cancelar o interrumpir.
        """
        loop = asyncio.get_running_loop()
        while True:
            task.committed, task.state = True, TaskState.PUBLISHING
            task.publish_attempts += 1
            try:
                # Una pausa de prueba armada en uno de sus pasos bloquearía el bucle: entonces, el hilo.
                if self.file_io.runs_inline(result.size) and not pause_armed(*_STEPS):
                    self._publish_and_record(task, result, recovered)
                else:
                    await self._shielded(loop.run_in_executor(None, self._publish_and_record, task, result,
                                                              recovered))
                return result
            except StorageError as exc:
                if exc.details.get("errno") not in _TRANSIENT_PUBLISH_ERRNOS or \
                        task.publish_attempts > task.retry.retries:
                    raise
                error = exc
            task.committed, task.state = False, TaskState.RETRYING
            delay = task.retry.delay(task.publish_attempts)
            _log.warning("job.publish_retrying", correlation_id=task.correlation_id,
                         publish_attempt=task.publish_attempts, delay_s=round(delay, 3), error=error.to_record())
            await asyncio.sleep(delay)

    @staticmethod
    async def _shielded(work: asyncio.Future[None]) -> None:
        """Espera ``work`` hasta el final aunque cancelen a quien espera (y no deja la cancelación
        pendiente si el trabajo ya quedó registrado)."""
        cancelled = False
        while True:
            try:
                await asyncio.shield(work)
                break
            except asyncio.CancelledError:
                if work.done():
                    break
                cancelled = True
        if cancelled:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        work.result()

    def _publish_and_record(self, task: DownloadTask, result: DownloadResult, recovered: bool) -> None:
        """En un hilo de trabajo (o en el bucle): publicar por ``link()`` (o copia) y escribir el
        registro terminal."""
        job_id = task.correlation_id
        pause_point("publishing", job_id)
        if recovered:  # publicado en una vida anterior: su diario, si lo hubo, se retira tras el registro
            journals: tuple[Path, ...] = self.journals(job_id)
            published_path, renamed = result.path, False
            _log.info("job.published", correlation_id=job_id, path=str(published_path), recovered=True,
                      size=result.size, sha256=result.sha256)
        else:
            published_path, renamed, journals = self._publish(task, result)
            _log.info("job.published", correlation_id=job_id, path=str(published_path), renamed=renamed,
                      size=result.size, sha256=result.sha256)
        task.published_path, task.renamed, task.result = published_path, renamed, result
        pause_point("published", job_id)
        crash_point("after_publish")
        task.state, task.finished_at = TaskState.SUCCEEDED, time.time()
        try:
            self._conclude_or_raise(task)
        except OSError as exc:
            # Sin registro no hay éxito: el nombre público se retira y el intento falla como
            # almacenamiento (se reintenta si es pasajero). El archivo sigue en el directorio aislado.
            task.state, task.published_path, task.concluded = TaskState.PUBLISHING, None, False
            (unpublish_folder if published_path.is_dir() else unpublish)(published_path, self.fsync)
            _drop_journals(journals)
            _log.warning("job.unpublished", correlation_id=job_id, path=str(published_path),
                         reason=f"the terminal record could not be written: {exc.strerror or exc}")
            raise StorageError(f"cannot write the terminal record: {exc.strerror or exc}", errno=exc.errno) from None
        # Con el registro escrito, el diario ya no tiene nada que contar (uno que quede por una caída
        # aquí lo retira sweep_staging: su trabajo tiene registro).
        _drop_journals(journals)
        result.path, result.filename, result.published = published_path, published_path.name, True
        task.result = result
        pause_point("recorded", job_id)

    def _publish(self, task: DownloadTask, result: DownloadResult) -> tuple[Path, bool, tuple[Path, ...]]:
        """Un archivo con ``publish_file``; la carpeta de una lista (``playlist``) con ``publish_folder``.

        Devuelve (ruta publicada, renombrada, el diario que se escribió, si alguno)."""
        file_journal, folder_journal = self.journals(task.correlation_id)
        if result.path.is_dir():
            path, renamed = publish_folder(result.path, self.output_root, task.output_subdir, result.filename,
                                           folder_journal, self.fsync)
            return path, renamed, (folder_journal,)
        published = publish_file(result.path, self.output_root, task.output_subdir, result.filename, file_journal,
                                 self.fsync)
        # En el camino del enlace (mismo sistema de archivos) no hay diario que retirar.
        return published.path, published.renamed, (file_journal,) if published.journaled else ()

    def _conclude_or_raise(self, task: DownloadTask) -> None:
        task.concluded = True
        if self.on_outcome is not None:
            self.on_outcome(task)


def _drop_journals(journals: tuple[Path, ...]) -> None:
    for journal in journals:
        journal.unlink(missing_ok=True)
