"""Recuperación tras una caída: los trabajos reclamados por un daemon muerto vuelven a la cola.

Las subcarpetas de ``active/`` cuyo cerrojo está libre son de daemons muertos. Cada archivo vuelve
a ``incoming/``, salvo el de un trabajo que ya tiene su registro terminal (murió justo después de
escribirlo): ése sólo se retira, y su directorio temporal con él. Se hace al arrancar y, con varios
daemons sobre un spool, cada ``rescan_interval`` (``sweep_dead_peers``): lo que un daemon muerto
para siempre había reclamado vuelve a la cola mientras los demás siguen vivos, sin esperar a que
alguno arranque. Cada carpeta recuperada deja un ``spool.peer_recovered``.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from daemon.downloaders.download_lifecycle import cleanup_download
from daemon.events import get_logger
from daemon.jobs import JobLimits, JobRejected, JobSpec, parse_job, read_job_file
from daemon.outcomes import Outcomes

__all__ = ["recover_orphaned_claims", "sweep_dead_peers"]

_log = get_logger()


def recover_orphaned_claims(outcomes: Outcomes, limits: JobLimits, temp_dir: Path) -> int:
    """Devuelve a incoming/ (o da por terminados) los reclamos de daemons muertos; cuántos archivos."""
    total = 0
    for source, names in outcomes.spool.orphaned_claims():
        if names:  # antes que los job.requeued: ``verify`` da por caídos los trabajos de esa instancia
            peer = source.name if source != outcomes.spool.active else "(loose files in active/)"
            _log.warning("spool.peer_recovered", instance=peer, files=len(names))
        for name in names:
            _recover_one(outcomes, limits, temp_dir, source, name)
        total += len(names)
    return total


def sweep_dead_peers(outcomes: Outcomes, limits: JobLimits, temp_dir: Path) -> int:
    """Una pasada periódica: lo mismo que al arrancar (la misma prueba del cerrojo)."""
    return recover_orphaned_claims(outcomes, limits, temp_dir)


def _recover_one(outcomes: Outcomes, limits: JobLimits, temp_dir: Path, source: Path, name: str) -> bool:
    """True si el archivo volvió a incoming/; False si ya estaba terminado (o no se pudo mover)."""
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
            return False
        suffix = os.path.splitext(name)[1]
        new_name = f"{job.id}{suffix}" if job.id_source != "explicit" else None
    except (JobRejected, OSError):
        pass  # se volverá a examinar (y rechazar con motivo) al reclamarlo
    try:
        target = spool.requeue(source, name, new_name)
    except OSError as exc:
        _log.error("daemon.error", where="recover", file=name, error=exc.strerror or str(exc))
        return False
    outcomes.counts["requeued"] += 1
    _log.info("job.requeued", correlation_id=job_id, file=target, reason="recovered after a crash")
    return True


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
