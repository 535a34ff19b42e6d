"""Durabilidad: ``fsync`` de un directorio, lo que hace durable un nombre creado, renombrado o borrado.

Los datos de un archivo los hace durables su propio ``fsync``; un nombre (create, rename, link,
unlink, mkdir) sólo el ``fsync`` de la carpeta que lo contiene. El contrato paso a paso, con el
corte de luz que prueba cada uno, está en docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_dir_as_producer"]


def fsync_dir(path: Path | str) -> None:
    """Hace durables las entradas de ``path`` (nombres creados, renombrados o borrados en ella)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` del sistema de archivos de ``fd`` (libc); False si no está disponible."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    return bool(libc.syncfs(fd) == 0)


def fsync_dir_as_producer(path: Path) -> None:
    """Como ``fsync_dir``, para quien puede escribir en ``path`` pero no leerla (las carpetas del
    spool al estilo maildrop, 3730, no se pueden abrir para leer): se sincroniza entonces el sistema
    de archivos entero desde una carpeta antepasada legible (``syncfs``), o todo (``sync``)."""
    try:
        fsync_dir(path)
        return
    except PermissionError:
        pass
    for ancestor in path.parents:
        try:
            fd = os.open(ancestor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_dev == os.stat(path).st_dev and _syncfs(fd):
                return
        finally:
            os.close(fd)
        break
    os.sync()
