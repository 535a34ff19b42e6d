"""El recolector: borra directorios temporales rancios que un fallo o un kill dejó atrás.

Una pasada recorre la raíz temporal y, para cada ``videonote_dl_*`` (y ``videonote_*``):

- lo deja si es de un trabajo vivo (``skip_ids``), si es joven (``max_age``) o si alguien
  tiene su ``flock`` (la misma regla que systemd-tmpfiles);
- un enlace simbólico se desenlaza, nunca se sigue; todo se opera relativo al descriptor de
  la raíz, así que nada fuera de ella se toca;
- una entrada que desaparece a mitad de pasada no es un error; un error de permisos es un
  evento, no una caída.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.dirlock import DIR_FLAGS, try_lock_fd
from daemon.events import get_logger
from daemon.temp_names import correlation_id_of, is_temp_name

__all__ = ["ReapReport", "ReapedEntry", "reap_staging", "reap_temp_root"]

_log = get_logger()


@dataclass(slots=True)
class ReapedEntry:
    """Una entrada borrada (o que se borraría, en ``dry_run``)."""

    name: str
    correlation_id: str | None
    age: float
    bytes_freed: int
    kind: str


@dataclass(slots=True)
class ReapReport:
    """Resumen de una pasada."""

    removed: list[ReapedEntry] = field(default_factory=list)
    locked: int = 0
    live: int = 0
    young: int = 0
    vanished: int = 0
    errors: int = 0
    duration: float = 0.0
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        return sum(entry.bytes_freed for entry in self.removed)


def _tree_size(name: str, root_fd: int) -> int:
    """Bytes ocupados por los archivos bajo ``name`` (sin seguir enlaces)."""
    total = 0
    try:
        for _dirpath, _dirs, files, dir_fd in os.fwalk(name, dir_fd=root_fd):
            for file_name in files:
                try:
                    total += os.stat(file_name, dir_fd=dir_fd, follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        pass
    return total


def reap_temp_root(
    root: Path,
    max_age: float,
    skip_ids: frozenset[str] | set[str] = frozenset(),
    dry_run: bool = False,
    now: float | None = None,
) -> ReapReport:
    """Hace una pasada sobre ``root`` y devuelve lo que borró (o borraría)."""
    started = time.monotonic()
    now = time.time() if now is None else now
    report = ReapReport(dry_run=dry_run)
    try:
        root_fd = os.open(root, DIR_FLAGS)
    except FileNotFoundError:
        return report
    try:
        with os.scandir(root_fd) as entries:
            names = [e.name for e in entries if is_temp_name(e.name)]
        for name in names:
            _reap_entry(name, root, root_fd, max_age, skip_ids, dry_run, now, report)
    finally:
        os.close(root_fd)
    report.duration = time.monotonic() - started
    _log.info(
        "reaper.pass",
        temp_root=str(root),
        removed=len(report.removed),
        bytes_freed=report.bytes_freed,
        locked=report.locked,
        live=report.live,
        young=report.young,
        vanished=report.vanished,
        errors=report.errors,
        dry_run=dry_run,
        duration_ms=round(report.duration * 1000, 1),
    )
    return report


def _reap_entry(
    name: str,
    root: Path,
    root_fd: int,
    max_age: float,
    skip_ids: frozenset[str] | set[str],
    dry_run: bool,
    now: float,
    report: ReapReport,
) -> None:
    correlation_id = correlation_id_of(name)
    if correlation_id is not None and correlation_id in skip_ids:
        report.live += 1
        return
    try:
        st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        age = now - st.st_mtime
        if age < max_age:
            report.young += 1
            return
        if not stat.S_ISDIR(st.st_mode):
            # Enlace simbólico o archivo suelto: se desenlaza, jamás se sigue.
            if not dry_run:
                os.unlink(name, dir_fd=root_fd)
            _record(report, name, root, correlation_id, age, 0, "symlink" if stat.S_ISLNK(st.st_mode) else "file")
            return
        dir_fd = os.open(name, DIR_FLAGS, dir_fd=root_fd)
        try:
            # El cerrojo se toma sobre el mismo descriptor y se mantiene durante el borrado (una
            # foto con is_dir_locked dejaría una ventana en la que una descarga viva entra).
            if not try_lock_fd(dir_fd):
                report.locked += 1
                return
            size = _tree_size(name, root_fd)
            if not dry_run:
                # rmtree con dir_fd es resistente a ataques de enlaces y rechaza un enlace en la cima.
                try:
                    shutil.rmtree(name, dir_fd=root_fd)
                except OSError as exc:
                    # Sin errno sólo lo lanza la guarda de rmtree: en ese instante el nombre era un enlace.
                    if exc.errno is not None and _same_entry(name, root_fd, dir_fd):
                        raise
                    # El nombre ya no es (o no era) el directorio bloqueado: se verá en la próxima pasada.
                    report.vanished += 1
                    return
            _record(report, name, root, correlation_id, age, size, "dir")
        finally:
            os.close(dir_fd)
    except FileNotFoundError:
        report.vanished += 1
    except OSError as exc:
        # Cambiado entre stat y open/unlink (un enlace donde había un directorio da ENOTDIR con
        # O_DIRECTORY|O_NOFOLLOW; un directorio donde había un enlace, EISDIR): la próxima pasada lo verá.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            report.vanished += 1
            return
        report.errors += 1
        _log.warning(
            "reaper.error", correlation_id=correlation_id, path=str(root / name), error=exc.strerror or str(exc)
        )


def _same_entry(name: str, root_fd: int, dir_fd: int) -> bool:
    """True si ``name`` (sin seguir enlaces) sigue siendo el directorio abierto en ``dir_fd``."""
    try:
        return os.path.samestat(os.stat(name, dir_fd=root_fd, follow_symlinks=False), os.fstat(dir_fd))
    except OSError:
        return False


def _record(
    report: ReapReport, name: str, root: Path, correlation_id: str | None, age: float, size: int, kind: str
) -> None:
    report.removed.append(ReapedEntry(name, correlation_id, age, size, kind))
    _log.info(
        "reaper.removed",
        correlation_id=correlation_id,
        path=str(root / name),
        kind=kind,
        age_s=round(age, 1),
        bytes_freed=size,
        dry_run=report.dry_run,
    )


def reap_staging(output_dir: Path, max_age: float, finished: Callable[[str], bool] | None = None) -> int:
    """Retira copias a medio publicar que dejó un publicador muerto en la carpeta de preparación de
    la salida (sin cerrojo y más viejas que ``max_age``; al arrancar, ``max_age=0``: todas las libres),
    y los diarios de publicación de trabajos que ya tienen registro (``finished``)."""
    from daemon.publish import sweep_staging

    try:
        removed = sweep_staging(output_dir, max_age, finished)
    except OSError as exc:
        _log.warning("daemon.error", where="staging", error=exc.strerror or str(exc))
        return 0
    if removed:
        _log.info("reaper.staging_removed", removed=removed, output_dir=str(output_dir))
    return removed
