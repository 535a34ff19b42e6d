"""Nombres libres ante una colisión: ``clip.mp4``, ``clip-1.mp4``, ``clip-2.mp4``...

Un solo esquema para todo el daemon: lo usan la publicación (archivos en el directorio de
salida) y el spool (trabajos devueltos a incoming/, archivos rechazados). El número va antes de
la última extensión, así que el archivo sigue abriéndose con el mismo programa.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["MAX_COLLISION_NUMBER", "find_numbered", "numbered_names"]

# Tope de candidatos: con 10 000 nombres ocupados algo va mal; mejor un error que un bucle largo.
MAX_COLLISION_NUMBER = 10000


def numbered_names(filename: str, limit: int = MAX_COLLISION_NUMBER) -> Iterator[str]:
    """``filename`` y después ``stem-1.ext``, ``stem-2.ext``... hasta ``stem-(limit-1).ext``.

    Perezoso: casi siempre basta el primero. Un nombre sin extensión (o que sólo tiene un punto
    inicial, como ``.hidden``) se numera entero: ``README-1``, ``.hidden-1``.
    """
    yield filename
    stem, dot, ext = filename.rpartition(".")
    if not stem:  # sin extensión o nombre que empieza por punto
        stem, dot, ext = filename, "", ""
    for n in range(1, limit):
        yield f"{stem}-{n}{dot}{ext}"


def find_numbered(directory: Path, filename: str, matches: Callable[[os.stat_result], bool],
                  limit: int = MAX_COLLISION_NUMBER) -> Path | None:
    """El primero de los nombres numerados de ``filename`` en ``directory`` cuyo ``lstat`` cumple
    ``matches`` (tras una caída: el nombre que llegó a publicarse, reconocido por su inodo)."""
    for candidate in numbered_names(filename, limit):
        try:
            st = os.stat(directory / candidate, follow_symlinks=False)
        except OSError:
            continue
        if matches(st):
            return directory / candidate
    return None
