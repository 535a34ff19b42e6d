"""Publicación atómica de una carpeta entera (``playlist: true``): completa o nada.

La carpeta del directorio aislado (un archivo por elemento, ya con su nombre público) se prepara
en ``<salida>/.videonote-dl-staging/<aleatorio>.partial/`` (0700 mientras se llena, bajo ``flock``):
cada archivo se enlaza (``link()``) o, entre sistemas de archivos, se copia, y se hace fsync de
cada uno y de la carpeta. Después un solo ``renameat2(RENAME_NOREPLACE)`` le da su nombre público
``<salida>/<output_dir>/<id>`` (``<id>-1``, ``<id>-2``... si está tomado): nunca se pisa nada y
nadie ve la carpeta a medias. El diario ``<id>.publish-folder.json`` de la carpeta de preparación
(``publish_journal``) anota antes de llenarla el inodo de la preparada, que el rename conserva:
``recover_folder`` reconoce con él la publicada tras una caída, desde cualquier daemon que publique
en esa salida. Una preparada que quedó atrás la borra ``sweep_staging``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from daemon.dirlock import DIR_FLAGS
from daemon.downloaders.base import StorageError
from daemon.durable import fsync_dir
from daemon.naming import numbered_names
from daemon.publish import STAGING_DIR, open_output_dir, open_staging
from daemon.publish_journal import JournalEntry, read_journal, write_journal
from daemon.sha import file_sha256

__all__ = ["folder_listing", "publish_folder", "recover_folder", "unpublish_folder"]

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def folder_listing(folder: Path) -> list[dict[str, Any]]:
    """Cada archivo de ``folder`` con su tamaño y sha256 (orden por nombre), para el registro."""
    return [{"name": p.name, "size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.is_file()]


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``renameat2(..., RENAME_NOREPLACE)``: falla con EEXIST en vez de sustituir una carpeta vacía."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28: no hay forma atómica de no pisar; se comprueba antes
        with contextlib.suppress(FileNotFoundError):
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
            raise FileExistsError(errno.EEXIST, "exists", dst)
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    if renameat2(src_fd, src.encode(), dst_fd, dst.encode(), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def _fill(src: Path, staged_fd: int, fsync: bool) -> None:
    """Enlaza o copia cada archivo de ``src`` dentro de la carpeta preparada, con fsync."""
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.link(entry.path, entry.name, dst_dir_fd=staged_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            fd = os.open(entry.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=staged_fd)
            with open(entry.path, "rb") as source, os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
                target.flush()
                if fsync:
                    os.fsync(target.fileno())
        if fsync:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=staged_fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    os.fchmod(staged_fd, 0o755)
    if fsync:
        os.fsync(staged_fd)


def publish_folder(src: Path, output_root: Path, subdir: str | None, name: str, journal: Path | None = None,
                   fsync: bool = True) -> tuple[Path, bool]:
    """Publica la carpeta ``src`` como ``output_root/subdir/name`` (o ``name-N``); devuelve (ruta, renombrada).

    Lanza ``StorageError`` (con ``errno``) si no se pudo; entonces la salida queda como estaba.
    """
    try:
        dir_fd, dir_path = open_output_dir(output_root, subdir)
    except OSError as exc:
        raise StorageError(f"cannot create output folder under {output_root}: {exc.strerror}",
                           errno=exc.errno) from None
    staging = output_root / STAGING_DIR
    staged = f"{secrets.token_hex(12)}.partial"
    staging_fd = staged_fd = -1
    published: Path | None = None
    try:
        staging_fd = open_staging(output_root)
        os.mkdir(staged, 0o700, dir_fd=staging_fd)
        staged_fd = os.open(staged, DIR_FLAGS, dir_fd=staging_fd)
        fcntl.flock(staged_fd, fcntl.LOCK_EX)  # sweep_staging nunca borra una preparación en curso
        if journal is not None:  # antes de llenarla: el inodo que la carpeta publicada conservará
            entry = JournalEntry(directory=dir_path, name=name, staged=staging / staged,
                                 inode=os.fstat(staged_fd).st_ino, size=None)
            write_journal(staging_fd, journal.name, entry, fsync)
        _fill(src, staged_fd, fsync)
        for candidate in numbered_names(name):
            try:
                _rename_noreplace(staging_fd, staged, dir_fd, candidate)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            published = dir_path / candidate
            if fsync:
                os.fsync(dir_fd)
                os.fsync(staging_fd)
            return published, candidate != name
        raise StorageError(f"no free name for {name!r} in {dir_path}; clean up the output folder",
                           errno=errno.EEXIST)
    except BaseException as exc:
        if published is not None:  # renombrada pero sin fsync: no dejar una carpeta pública huérfana
            unpublish_folder(published, fsync)
        if journal is not None and staging_fd >= 0:  # nada publicado: el diario no tiene nada que contar
            with contextlib.suppress(OSError):
                os.unlink(journal.name, dir_fd=staging_fd)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot publish the folder into {dir_path}: {exc.strerror}",
                               errno=exc.errno) from None
        raise
    finally:
        if staging_fd >= 0:
            with contextlib.suppress(OSError):
                shutil.rmtree(staged, dir_fd=staging_fd)  # sólo si no llegó a publicarse
        for fd in (staged_fd, staging_fd, dir_fd):
            if fd >= 0:
                os.close(fd)


def unpublish_folder(path: Path, fsync: bool = True) -> None:
    """Retira una carpeta publicada (el registro terminal no se pudo escribir). Nunca lanza."""
    with contextlib.suppress(OSError):
        shutil.rmtree(path)
        if fsync:
            fsync_dir(path.parent)


def recover_folder(journal: Path) -> Path | None:
    """Tras una caída: la carpeta ya publicada según el diario (por su inodo), o None.

    Una preparada que no llegó al rename se borra: se volverá a publicar desde el directorio aislado.
    """
    entry = read_journal(journal)
    if entry is None:
        return None
    found = entry.find_published(want_dir=True)
    if found is None and entry.staged.parent == journal.parent:
        shutil.rmtree(entry.staged, ignore_errors=True)
    return found
