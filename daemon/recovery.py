"""Recuperación tras una caída: los trabajos reclamados por un daemon muerto vuelven a la cola.

Al arrancar, las subcarpetas de ``active/`` cuyo cerrojo está libre son de daemons muertos. Cada
archivo vuelve a ``incoming/``, salvo el de un trabajo que ya tiene su registro terminal (murió
justo después de escribirlo): ése sólo se retira, y su directorio temporal con él.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from daemon.downloaders.download_lifecycle import cleanup_download
from daemon.events import get_logger
from daemon.jobs import JobLimits, JobRejected, JobSpec, parse_job, read_job_file
from daemon.outcomes import Outcomes

__all__ = ["recover_orphaned_claims"]

_log = get_logger()


def recover_orphaned_claims(outcomes: Outcomes, limits: JobLimits, temp_dir: Path) -> None:
    """Devuelve a incoming/ (o da por terminados) los reclamos de daemons muertos."""
    for source, names in outcomes.spool.orphaned_claims():
        for name in names:
            _recover_one(outcomes, limits, temp_dir, source, name)


def _recover_one(outcomes: Outcomes, limits: JobLimits, temp_dir: Path, source: Path, name: str) -> None:
    spool = outcomes.spool
    job_id = None
    new_name = None
    try:
        data, _st = _read_any(source / name)
        job = parse_job(data, name, limits)
        job_id = job.id
        record = spool.terminal_record(job.id)
        if record is not None and _record_matches(record, job):
            # Terminó justo antes de la caída: sólo faltaba retirar el archivo.
            os.unlink(source / name)
            cleanup_download(job.id, temp_dir)
            _log.info("job.recovered", correlation_id=job.id, file=name, record=str(record))
            return
        suffix = os.path.splitext(name)[1]
        new_name = f"{job.id}{suffix}" if job.id_source != "explicit" else None
    except (JobRejected, OSError):
        pass  # se volverá a examinar (y rechazar con motivo) al reclamarlo
    try:
        target = spool.requeue(source, name, new_name)
    except OSError as exc:
        _log.error("daemon.error", where="recover", file=name, error=exc.strerror or str(exc))
        return
    outcomes.counts["requeued"] += 1
    _log.info("job.requeued", correlation_id=job_id, file=target, reason="recovered after a crash")


def _read_any(path: Path) -> tuple[bytes, os.stat_result]:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return read_job_file(path.name, fd)
    finally:
        os.close(fd)


def _record_matches(record: Path, job: JobSpec) -> bool:
    try:
        return bool(orjson.loads(record.read_bytes()).get("job_file_sha256") == job.file_sha256)
    except (OSError, orjson.JSONDecodeError):
        return False
