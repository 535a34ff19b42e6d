"""Publicación atómica de una carpeta entera (``playlist: true``): completa o nada.

La carpeta del directorio aislado (un archivo por elemento, ya con su nombre público) se prepara
en ``<salida>/.videonote-dl-staging/<aleatorio>.partial/`` (0700 mientras se llena, bajo ``flock``):
cada archivo se enlaza (``link()``) o, entre sistemas de archivos, se copia, y se hace fsync de
cada uno y de la carpeta. Después un solo ``renameat2(RENAME_NOREPLACE)`` le da su nombre público
``<salida>/<output_dir>/<id>`` (``<id>-1``, ``<id>-2``... si está tomado): nunca se pisa nada y
nadie ve la carpeta a medias. El marcador ``.publish-folder.json`` del directorio aislado anota la
carpeta preparada y, tras el rename, la publicada: ``recover_folder`` lo lee tras una caída. Una
preparada que quedó atrás la borra ``sweep_staging``.
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

import orjson

from daemon.dirlock import DIR_FLAGS
from daemon.downloaders.base import StorageError
from daemon.durable import fsync_dir
from daemon.naming import numbered_names
from daemon.publish import STAGING_DIR, open_output_dir, open_staging
from daemon.sha import file_sha256

__all__ = ["FOLDER_MARKER", "folder_listing", "publish_folder", "recover_folder", "unpublish_folder"]

FOLDER_MARKER = ".publish-folder.json"
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


def _write_marker(marker: Path, data: dict[str, Any]) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, marker)


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


def publish_folder(src: Path, output_root: Path, subdir: str | None, name: str, marker: Path | None = None,
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
    try:
        staging_fd = open_staging(output_root)
        os.mkdir(staged, 0o700, dir_fd=staging_fd)
        staged_fd = os.open(staged, DIR_FLAGS, dir_fd=staging_fd)
        fcntl.flock(staged_fd, fcntl.LOCK_EX)  # sweep_staging nunca borra una preparación en curso
        if marker is not None:
            _write_marker(marker, {"staged": str(staging / staged), "dir": str(dir_path), "name": name})
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
            if marker is not None:
                _write_marker(marker, {"path": str(published), "dir": str(dir_path), "name": name})
            if fsync:
                os.fsync(dir_fd)
                os.fsync(staging_fd)
            return published, candidate != name
        raise StorageError(f"no free name for {name!r} in {dir_path}; clean up the output folder",
                           errno=errno.EEXIST)
    except OSError as exc:
        raise StorageError(f"cannot publish the folder into {dir_path}: {exc.strerror}", errno=exc.errno) from None
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


def recover_folder(marker: Path) -> Path | None:
    """Tras una caída: la carpeta ya publicada según el marcador, o None (y se borra lo preparado)."""
    try:
        data = orjson.loads(marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("path"), str):
        path = Path(data["path"])
        return path if path.is_dir() and not path.is_symlink() else None
    staged = data.get("staged")
    if isinstance(staged, str) and os.path.isdir(staged):
        shutil.rmtree(staged, ignore_errors=True)  # no llegó al rename: se volverá a publicar
        return None
    # La preparada ya no está: o se renombró (caída antes de anotarlo) o la barrió el recolector.
    directory, name = Path(str(data.get("dir", ""))), str(data.get("name", ""))
    if not name:
        return None
    candidates = [directory / n for n in numbered_names(name, limit=100) if (directory / n).is_dir()]
    return candidates[-1] if candidates else None
