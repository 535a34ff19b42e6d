"""Cerrojos ``flock`` exclusivos sobre directorios: la regla que también respeta systemd-tmpfiles.

Un directorio de descarga vivo está bloqueado por quien lo usa; nada que limpie por edad
borra un directorio bloqueado. ``flock`` es por descripción de archivo abierta, así que un
segundo ``open`` en el mismo proceso también choca con el cerrojo.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

__all__ = ["DirLock", "DirLockBusy", "is_dir_locked"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DirLockBusy(OSError):
    """Otro proceso (o tarea) tiene el directorio bloqueado."""


class DirLock:
    """Cerrojo exclusivo no bloqueante sobre un directorio; se libera con ``release`` o al cerrar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Toma el cerrojo o lanza ``DirLockBusy``; nunca espera."""
        if self._fd is not None:
            return
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DirLockBusy(errno.EWOULDBLOCK, f"{self.path} is locked by a live download") from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def is_dir_locked(path: Path, dir_fd: int | None = None) -> bool:
    """True si alguien tiene un ``flock`` sobre ``path``. No sigue enlaces simbólicos."""
    try:
        fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False
