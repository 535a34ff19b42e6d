"""Durabilidad: ``fsync`` de un directorio, lo que hace durable un nombre creado, renombrado o borrado.

Los datos de un archivo los hace durables su propio ``fsync``; un nombre (create, rename, link,
unlink, mkdir) sólo el ``fsync`` de la carpeta que lo contiene. El contrato paso a paso, con el
corte de luz que prueba cada uno, está en docs/reliability.md.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_dir_via"]


def fsync_dir(path: Path | str) -> None:
    """Hace durables las entradas de ``path`` (nombres creados, renombrados o borrados en ella)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir_via(path: Path | str, fd: int) -> None:
    """``fsync_dir(path)``; si no se puede abrir ``path`` (una carpeta no listable, como incoming/
    para un productor: modo 3730), ``syncfs`` del sistema de archivos de ``fd``, un descriptor de
    un archivo de esa misma carpeta. Más caro (todo ese sistema de archivos), pero igual de durable."""
    try:
        fsync_dir(path)
    except PermissionError:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(path)) from None
