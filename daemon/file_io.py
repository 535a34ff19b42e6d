"""Dónde corren las llamadas al sistema de archivos del final de un trabajo pequeño: hilo o bucle.

Publicar y registrar un trabajo de 16 KiB son unas cuarenta llamadas cortas (escribir la cola,
``fsync``, ``rename``, ``link``, el registro terminal). En un hilo de trabajo, cada una suelta y
vuelve a pedir el GIL mientras el bucle lo tiene: medido, unas 200 esperas en futex por trabajo y
~1 ms de CPU, más que todo lo demás del trabajo junto. En el propio bucle no hay ese vaivén.

El hilo sólo compensa si una llamada puede esperar a un disco (un ``fsync`` en ext4 tarda
milisegundos y pararía todo el daemon): ``file_io: auto`` corre en el bucle sólo cuando el spool,
los temporales y la salida están en sistemas de archivos de memoria (tmpfs, ramfs), donde
``fsync`` no espera a nada; ``thread`` e ``inline`` lo fijan a mano. Aun en el bucle, sólo van
ahí los archivos de hasta ``INLINE_MAX_BYTES`` (una copia entre sistemas de archivos de un archivo
grande sí tarda), y nunca con una pausa de prueba armada en uno de sus pasos (bloquearía el bucle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.fs_kind import fs_kind

__all__ = ["FILE_IO_MODES", "INLINE_MAX_BYTES", "MEMORY_FILESYSTEMS", "THREADED", "FileIo", "choose_file_io"]

FILE_IO_MODES = ("auto", "thread", "inline")
INLINE_MAX_BYTES = 1024 * 1024
# Números mágicos de ``statfs(2)`` (linux/magic.h) de los sistemas de archivos en memoria.
MEMORY_FILESYSTEMS: dict[int, str] = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}


@dataclass(frozen=True, slots=True)
class FileIo:
    """El modo efectivo (``inline``: en el bucle) y por qué."""

    inline: bool
    reason: str

    @property
    def mode(self) -> str:
        return "inline" if self.inline else "thread"

    def runs_inline(self, size: int) -> bool:
        """Si el final de un trabajo de ``size`` bytes corre en el bucle."""
        return self.inline and size <= INLINE_MAX_BYTES


# Fuera del daemon (la API del plan, las pruebas), sin elección: el hilo de siempre.
THREADED = FileIo(False, "the default outside the daemon")


def choose_file_io(configured: str, places: dict[str, Path]) -> FileIo:
    """El modo de ``file_io`` para estas carpetas (``{"spool_dir": ..., ...}``; deben existir)."""
    if configured == "thread":
        return FileIo(False, "set in the config")
    if configured == "inline":
        return FileIo(True, "set in the config")
    for key, path in places.items():
        kind = fs_kind(_existing(path))
        if kind.magic not in MEMORY_FILESYSTEMS:
            return FileIo(False, f"{key} {path} is on a {kind.label} file system, where an fsync can wait for "
                                 "a disk; the event loop must not")
    names = ", ".join(places)
    return FileIo(True, f"{names} are on memory file systems (tmpfs, ramfs): no call waits for a disk")


def _existing(path: Path) -> Path:
    """La carpeta misma o, si aún no existe, la primera de sus madres que existe (la que la alojará)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
