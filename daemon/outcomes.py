"""Desenlaces: el único sitio que escribe registros terminales, devuelve trabajos a la cola y cuenta.

Cada trabajo aceptado termina de una sola forma: un registro en ``done/`` (succeeded) o en
``failed/`` (failed, cancelled), o de vuelta en ``incoming/`` (interrumpido por una parada, para
reanudar). El gestor de descargas entrega el desenlace de cada tarea una vez (``conclude``) y
avisa al final (``finished``); los trabajos que terminan sin llegar a correr (cancelados antes de
empezar, rechazados) pasan por aquí también.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.claimed_job import ClaimedJob, LiveJobs
from daemon.downloaders.download_manager import DownloadTask, TaskState
from daemon.events import get_logger
from daemon.spool import Spool
from daemon.text import printable
from daemon.units import utc_timestamp

__all__ = ["Outcomes", "iso_time"]

_log = get_logger()


def iso_time(ts: float | None) -> str | None:
    """Marca de tiempo UTC ISO 8601 con microsegundos (la de los registros y el estado), o None."""
    return None if ts is None else utc_timestamp(ts)


class Outcomes:
    """Registros terminales, devoluciones a la cola y la cuenta de cada desenlace."""

    def __init__(self, spool: Spool, live: LiveJobs, on_change: Callable[[], None]) -> None:
        self.spool = spool
        self.live = live
        self.on_change = on_change  # p. ej. estado sucio y mirar incoming/ otra vez
        self.counts = {"done": 0, "failed": 0, "rejected": 0, "cancelled": 0, "requeued": 0}

    # --- tareas del gestor ----------------------------------------------------------------
    def conclude(self, task: DownloadTask) -> None:
        """El desenlace de una tarea, hecho durable (un éxito llega desde el hilo de publicación,
        antes de la limpieza). Un ``OSError`` al escribir el registro de un éxito se propaga: el
        gestor retira lo publicado y reintenta."""
        claimed = self.live.get(task.correlation_id)
        if claimed is None or task.state is TaskState.INTERRUPTED:
            return  # una interrupción no es un desenlace: ``finished`` lo devuelve a la cola
        self.write_terminal(claimed, str(task.state), task)

    def finished(self, task: DownloadTask, stopping: bool) -> None:
        """Al final de una tarea: devolverla a la cola (parada) o retirar su archivo y contarla."""
        claimed = self.live.pop(task.correlation_id, None)
        if claimed is None:
            return
        if task.state is TaskState.INTERRUPTED or (task.state is TaskState.QUEUED and stopping):
            self.requeue(claimed, "daemon stopping")
        else:
            self.spool.release(claimed.name)
            key = {TaskState.SUCCEEDED: "done", TaskState.CANCELLED: "cancelled"}.get(task.state, "failed")
            self.counts[key] += 1
            if task.state is TaskState.CANCELLED:
                self.spool.consume_cancel(claimed.id)
        self.on_change()

    # --- trabajos que no llegan a correr --------------------------------------------------
    def cancelled_before_start(self, claimed: ClaimedJob) -> None:
        # El registro, durable antes del evento terminal (un corte de luz no deja un desenlace falso).
        self.write_terminal(claimed, "cancelled", None,
                            {"kind": "cancelled", "message": "cancelled before it started"})
        _log.warning("job.cancelled", correlation_id=claimed.id, attempt=0, while_state="incoming",
                     cancelled_by=claimed.cancelled_by)
        self.spool.release(claimed.name)
        self.spool.consume_cancel(claimed.id)
        self.counts["cancelled"] += 1

    def rejected(self, name: str, reason: str, job_id: str | None, source: Path | None = None,
                 content: bytes | None = None) -> None:
        """Rechaza ``name`` (de mis reclamos o de ``source``); ``content``: lo leído, para guardar una
        copia sin valores de cabeceras. Un ``OSError`` al moverlo se propaga (el llamador lo salta)."""
        path = self.spool.reject(name, reason, source, content)
        self.counts["rejected"] += 1
        self.on_change()
        # JSON escapa los controles; un nombre que no es UTF-8 lo escapa el registro de eventos.
        _log.warning("job.rejected", correlation_id=job_id, file=name, reason=reason, moved_to=str(path))

    # --- vuelta a la cola -----------------------------------------------------------------
    def requeue(self, claimed: ClaimedJob, reason: str) -> None:
        job = claimed.job
        suffix = os.path.splitext(claimed.name)[1]
        new_name = f"{job.id}{suffix}" if job.id_source != "explicit" else None
        try:
            target = self.spool.requeue(self.spool.claimed, claimed.name, new_name)
        except OSError as exc:
            _log.error("daemon.error", correlation_id=job.id, where="requeue", error=exc.strerror or str(exc))
            return
        self.counts["requeued"] += 1
        _log.info("job.requeued", correlation_id=job.id, file=target, reason=reason)

    def requeue_leftover_claims(self) -> None:
        """Al parar: lo reclamado que no llegó al gestor (la parada cortó el escaneo entre el
        reclamo y la cola) vuelve a incoming/; nunca queda nada en active/<instancia>/."""
        try:
            names = sorted(os.listdir(self.spool.claimed))
        except OSError:
            return
        for name in names:
            if name.startswith("."):
                continue
            try:
                target = self.spool.requeue(self.spool.claimed, name)
            except OSError as exc:
                _log.error("daemon.error", where="requeue", file=printable(name), error=exc.strerror or str(exc))
                continue
            self.counts["requeued"] += 1
            _log.info("job.requeued", correlation_id=None, file=target, reason="daemon stopping")

    # --- el registro ----------------------------------------------------------------------
    def write_terminal(self, claimed: ClaimedJob, outcome: str, task: DownloadTask | None,
                       error: dict[str, Any] | None = None) -> Path:
        """Escribe el registro terminal (done/ si succeeded, si no failed/) y emite ``job.recorded``."""
        record = self.record(claimed, outcome, task)
        if error is not None:
            record["error"] = error
        path = self.spool.write_record("done" if outcome == "succeeded" else "failed", claimed.id, record)
        _log.info("job.recorded", correlation_id=claimed.id, record=str(path), outcome=outcome)
        return path

    def record(self, claimed: ClaimedJob, outcome: str, task: DownloadTask | None) -> dict[str, Any]:
        job = claimed.job
        record: dict[str, Any] = {
            "id": job.id, "outcome": outcome, "job": job.to_record(), "source_file": claimed.name,
            "job_file_sha256": job.file_sha256, "daemon": {"instance": self.spool.instance, "version": __version__},
            "submitter": claimed.submitter,
        }
        if claimed.cancelled_by is not None and outcome == "cancelled":
            record["cancelled_by"] = claimed.cancelled_by
        timings: dict[str, Any] = {"received_at": iso_time(claimed.received)}
        if task is not None:
            record["downloader"] = task.downloader
            record["attempts"] = task.attempt
            timings["started_at"] = iso_time(task.started_at)
            finished = task.finished_at or time.time()
            timings["finished_at"] = iso_time(finished)
            timings["duration_s"] = round(finished - (task.started_at or claimed.received), 3)
            if task.result is not None and task.published_path is not None:
                record.update(path=str(task.published_path), filename=task.published_path.name,
                              renamed=task.renamed, size=task.result.size, sha256=task.result.sha256)
                if task.result.final_url:
                    record["final_url"] = task.result.final_url
                if task.result.extra:
                    record["extra"] = task.result.extra
            if task.error is not None:
                record["error"] = task.error
        record["timings"] = timings
        return record
