"""El diario de publicación: qué iba a publicar un trabajo, donde cualquier daemon lo encuentra.

Entre el ``link()`` (o el rename de una carpeta) que publica y el registro terminal hay una
ventana: si el proceso muere en ella, el nombre público existe sin registro. Quien retome el
trabajo tiene que reconocer esa publicación y sólo registrarla, nunca publicar otra copia.

En el mismo sistema de archivos lo dice el inodo compartido con el archivo del directorio
aislado (``publish.find_linked_publication``). Entre sistemas de archivos (copia preparada), el
directorio aislado no basta: en una flota está en el disco local del host, y si el host muere
para siempre, otro daemon retoma el trabajo sin verlo. Por eso el diario vive en la carpeta de
preparación de la salida (``<salida>/.videonote-dl-staging/<id>.publish.json``), que es del daemon
(0700), está en el sistema de archivos de la salida y la ven todos los daemons que publican en ella.

Se escribe una sola vez, con fsync, antes de copiar: la carpeta destino, el nombre pedido, el
tamaño y el inodo de la copia preparada. ``link()`` y ``rename()`` conservan el inodo, así que tras
una caída el nombre público (el pedido o uno numerado) se reconoce por inodo y tamaño, aunque la
copia preparada ya no esté. Se borra tras el registro terminal; uno que quedó atrás (caída entre
el registro y el borrado) lo retira ``sweep_staging`` cuando su trabajo ya tiene registro.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import orjson

from daemon.naming import find_numbered

__all__ = [
    "FILE_JOURNAL_SUFFIX",
    "FOLDER_JOURNAL_SUFFIX",
    "JournalEntry",
    "journal_job_id",
    "journal_paths",
    "read_journal",
    "write_journal",
]

FILE_JOURNAL_SUFFIX = ".publish.json"
FOLDER_JOURNAL_SUFFIX = ".publish-folder.json"
# Cuántos nombres numerados se miran al buscar el publicado (los mismos que prueba la publicación
# casi siempre; más allá, una salida con diez mil choques del mismo nombre no es un caso real).
_SEARCH_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """Lo que anota el diario antes de publicar: dónde, con qué nombre, qué inodo y cuántos bytes."""

    directory: Path
    name: str
    staged: Path
    inode: int
    size: int | None  # None para una carpeta

    def find_published(self, want_dir: bool) -> Path | None:
        """El nombre público con ese inodo (el pedido o uno numerado), o None si no llegó a publicarse."""
        def same(st: os.stat_result) -> bool:
            # El inodo basta en un sistema de archivos; el tipo y el tamaño descartan un inodo reusado.
            return st.st_ino == self.inode and stat.S_ISDIR(st.st_mode) == want_dir and \
                (want_dir or st.st_size == self.size)

        return find_numbered(self.directory, self.name, same, limit=_SEARCH_LIMIT)


def journal_paths(output_root: Path, staging_dir: str, job_id: str) -> tuple[Path, Path]:
    """(diario de un archivo, diario de una carpeta) del trabajo ``job_id`` en la salida ``output_root``."""
    staging = output_root / staging_dir
    return staging / f"{job_id}{FILE_JOURNAL_SUFFIX}", staging / f"{job_id}{FOLDER_JOURNAL_SUFFIX}"


def journal_job_id(name: str) -> str | None:
    """El id de trabajo de un nombre de diario (``<id>.publish.json``), o None si no lo es."""
    for suffix in (FILE_JOURNAL_SUFFIX, FOLDER_JOURNAL_SUFFIX):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def write_journal(staging_fd: int, name: str, entry: JournalEntry, fsync: bool) -> None:
    """Escribe el diario ``name`` dentro de la carpeta de preparación (abierta en ``staging_fd``).

    Sin archivo temporal: se escribe antes de copiar y de publicar, así que uno roto por una caída
    sólo puede ser de una publicación que no llegó a hacerse (``read_journal`` lo da por vacío).
    Con fsync del archivo y de la carpeta: el diario es durable antes de que lo sea el nombre público.
    """
    data = {"dir": str(entry.directory), "name": entry.name, "staged": str(entry.staged), "inode": entry.inode,
            "size": entry.size}
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=staging_fd)
    try:
        os.write(fd, orjson.dumps(data))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if fsync:
        os.fsync(staging_fd)


def read_journal(path: Path) -> JournalEntry | None:
    """El diario en ``path``, o None si no está o no se puede leer (roto: la publicación no se hizo)."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        size = data["size"]
        return JournalEntry(directory=Path(str(data["dir"])), name=str(data["name"]), staged=Path(str(data["staged"])),
                            inode=int(data["inode"]), size=None if size is None else int(size))
    return None
