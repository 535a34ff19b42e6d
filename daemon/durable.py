"""Durabilidad: ``fsync`` de un directorio, lo que hace durable un nombre creado, renombrado o borrado.

Los datos de un archivo los hace durables su propio ``fsync``; un nombre (create, rename, link,
unlink, mkdir) sólo el ``fsync`` de la carpeta que lo contiene. El contrato paso a paso, con el
corte de luz que prueba cada uno, está en docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(path: Path | str) -> None:
    """Hace durables las entradas de ``path`` (nombres creados, renombrados o borrados en ella)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
