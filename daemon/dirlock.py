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

__all__ = ["DIR_FLAGS", "DirLock", "DirLockBusy", "is_dir_locked", "try_lock_fd"]

# Cómo abre el daemon un directorio que va a recorrer o bloquear: sólo lectura, debe ser un
# directorio y nunca se sigue un enlace simbólico en el último componente.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DirLockBusy(OSError):
    """Otro proceso (o tarea) tiene el directorio bloqueado."""


class DirLock:
    """Cerrojo exclusivo no bloqueante sobre un directorio; se libera con ``release`` o al cerrar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Toma el cerrojo o lanza ``DirLockBusy``; nunca espera."""
        if self._fd is not None:
            return
        fd = os.open(self.path, DIR_FLAGS)
        try:
            locked = try_lock_fd(fd)
        except OSError:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            raise DirLockBusy(errno.EWOULDBLOCK, f"{self.path} is locked by a live download")
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


def try_lock_fd(fd: int) -> bool:
    """Intenta un ``flock`` exclusivo sin esperar sobre ``fd``: True si se tomó, False si otro lo
    tiene. Otros errores se lanzan. El cerrojo dura lo que dure abierto ``fd``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def is_dir_locked(path: Path, dir_fd: int | None = None) -> bool:
    """True si alguien tiene un ``flock`` sobre ``path``. No sigue enlaces simbólicos.

    Es sólo una foto: quien vaya a actuar según la respuesta (borrar, por ejemplo) debe abrir el
    directorio y quedarse con el cerrojo (``try_lock_fd``) mientras actúa.
    """
    try:
        fd = os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        return not try_lock_fd(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
