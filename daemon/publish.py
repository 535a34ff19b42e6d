"""Publicación atómica de un archivo terminado en el directorio de salida.

- Nunca visible a medias: el archivo ya completo (y con fsync) recibe su nombre final con
  ``link()``, que es atómico y falla si el nombre existe: nada se sobrescribe jamás; si el
  nombre está tomado, se usa ``nombre-1.ext``, ``nombre-2.ext``...
- Entre sistemas de archivos (EXDEV) se copia primero a la carpeta de preparación
  ``<salida>/.videonote-dl-staging/`` (0700) con un nombre imposible de adivinar, creado con
  ``O_CREAT|O_EXCL|O_NOFOLLOW`` y bloqueado con ``flock`` mientras se copia; luego se enlaza igual.
  Un enlace plantado por otro usuario nunca se sigue ni se pisa.
- Cualquier fallo (disco lleno, E/S) deja la salida como estaba: la copia preparada se borra y
  un nombre público ya creado se retira antes de informar. Una copia que quedó atrás porque el
  proceso murió (kill -9, corte de luz) la retira ``sweep_staging`` (al arrancar y el recolector),
  sólo si nadie tiene su cerrojo.
- Las carpetas de ``output_dir`` se crean y abren componente a componente con O_NOFOLLOW:
  un enlace simbólico plantado no saca un archivo fuera de la raíz de salida.
- Recuperación tras una caída: en el mismo sistema de archivos el nombre público comparte el
  inodo con el archivo del directorio aislado (``find_linked_publication``); entre sistemas,
  el diario ``<id>.publish.json`` de la carpeta de preparación anota, antes de copiar, el inodo de
  la copia preparada, que el nombre público conserva (``recover_publication``). Lo ve cualquier
  daemon que publique en esa salida, también el que retoma el trabajo de un host muerto.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.dirlock import DIR_FLAGS
from daemon.downloaders.base import PermanentDownloadError, StorageError
from daemon.durable import fsync_dir
from daemon.naming import find_numbered, numbered_names
from daemon.publish_journal import JournalEntry, journal_job_id, read_journal, write_journal

__all__ = [
    "STAGING_DIR",
    "PublishedFile",
    "find_linked_publication",
    "open_output_dir",
    "open_staging",
    "publish_file",
    "recover_publication",
    "sweep_staging",
    "unpublish",
]

STAGING_DIR = ".videonote-dl-staging"
_STAGED_SUFFIX = ".partial"


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """Dónde quedó publicado el archivo y si se renombró por un choque de nombres."""

    path: Path
    renamed: bool
    journaled: bool = False  # se copió entre sistemas de archivos y se escribió su diario


def open_output_dir(output_root: Path, subdir: str | None) -> tuple[int, Path]:
    """Abre (creándola) la carpeta destino sin seguir enlaces; devuelve (fd, ruta)."""
    output_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_root, DIR_FLAGS)
    path = output_root
    try:
        for part in (subdir.split("/") if subdir else []):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                # Carpeta nueva: su nombre es durable con el fsync de la madre (un corte de luz no
                # deja un registro que apunte a un archivo en una carpeta que nunca existió).
                os.fsync(fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    # Es un problema del almacenamiento de salida (como EACCES o ENOSPC): kind storage.
                    raise StorageError(
                        f"output_dir component {part!r} under {path} is not a real folder (symlink or file); "
                        "remove it or choose another output_dir", errno=exc.errno,
                    ) from None
                raise
            os.close(fd)
            fd, path = child, path / part
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def _storage_error(exc: OSError, dir_path: Path) -> StorageError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot publish into {dir_path}: {exc.strerror}; make it writable", errno=exc.errno)
    return StorageError(f"cannot publish into {dir_path}: {exc.strerror}", errno=exc.errno)


def publish_file(
    src: Path,
    output_root: Path,
    subdir: str | None,
    filename: str,
    journal: Path | None = None,
    fsync: bool = True,
) -> PublishedFile:
    """Publica ``src`` como ``output_root/subdir/filename`` (o un nombre numerado libre).

    ``journal``: el diario del trabajo en la carpeta de preparación (``publish_journal``); sólo se
    escribe si hay que copiar (otro sistema de archivos). Lanza ``StorageError`` (con ``errno``) si
    no se pudo; entonces la salida queda como estaba.
    """
    try:
        dir_fd, dir_path = open_output_dir(output_root, subdir)
    except PermanentDownloadError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot create output folder under {output_root}: {exc.strerror}",
                           errno=exc.errno) from None
    try:
        try:
            # Mismo sistema de archivos: el nombre público comparte inodo con ``src``, que sigue en
            # el directorio aislado hasta después del registro terminal (así se reconoce tras una caída).
            return _link_and_sync(str(src), None, dir_fd, dir_path, filename, fsync)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        return _publish_copy(src, output_root, dir_fd, dir_path, filename, journal, fsync)
    except OSError as exc:
        raise _storage_error(exc, dir_path) from None
    finally:
        os.close(dir_fd)


def _link_and_sync(source: str, source_dir_fd: int | None, dir_fd: int, dir_path: Path, filename: str,
                   fsync: bool) -> PublishedFile:
    """Enlaza ``source`` con el primer nombre libre y hace fsync de la carpeta (o lo retira)."""
    for candidate in numbered_names(filename):
        try:
            os.link(source, candidate, src_dir_fd=source_dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            continue
        if fsync:
            try:
                os.fsync(dir_fd)
            except OSError:
                # Sin fsync no hay garantía: retirar el nombre público antes de informar del fallo.
                with contextlib.suppress(OSError):
                    os.unlink(candidate, dir_fd=dir_fd)
                raise
        return PublishedFile(dir_path / candidate, renamed=candidate != filename)
    raise StorageError(f"no free name for {filename!r} in {dir_path}; clean up the output folder",
                       errno=errno.EEXIST)


def open_staging(output_root: Path) -> int:
    """Abre (creándola, 0700) la carpeta de preparación de la raíz de salida, sin seguir enlaces.

    En una salida escribible por el grupo de productores, otro usuario pudo crear antes ese nombre
    (una carpeta suya, un enlace, un archivo): dentro de una carpeta ajena podría cambiar la copia
    entre el fsync y el ``link()``. Sólo vale una carpeta del daemon en la que nadie más escribe;
    lo demás se aparta con un nombre aleatorio (``.videonote-dl-staging.foreign-*``, que el
    operador revisa y borra) y se crea la propia. Si ni eso se puede, ``StorageError``."""
    root_fd = os.open(output_root, DIR_FLAGS)
    try:
        for _ in range(3):
            with contextlib.suppress(FileExistsError):
                os.mkdir(STAGING_DIR, 0o700, dir_fd=root_fd)
            try:
                fd = os.open(STAGING_DIR, DIR_FLAGS, dir_fd=root_fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            else:
                info = os.fstat(fd)
                if info.st_uid == os.geteuid() and not info.st_mode & 0o022:
                    return fd
                os.close(fd)
            aside = f"{STAGING_DIR}.foreign-{secrets.token_hex(8)}"
            try:
                os.rename(STAGING_DIR, aside, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            except OSError as exc:
                raise StorageError(
                    f"{output_root / STAGING_DIR} is not the daemon's own 0700 folder (another user made it?) and "
                    f"cannot be moved aside ({exc.strerror}); remove it", errno=exc.errno) from None
        raise StorageError(f"{output_root / STAGING_DIR} keeps being replaced by someone else; check the "
                           "output folder's permissions", errno=errno.EEXIST)
    finally:
        os.close(root_fd)


def _publish_copy(src: Path, output_root: Path, dir_fd: int, dir_path: Path, filename: str,
                  journal: Path | None, fsync: bool) -> PublishedFile:
    """Otro sistema de archivos: copia preparada (O_EXCL, nombre aleatorio, flock), fsync y link()."""
    staging_fd = open_staging(output_root)
    staged = f"{secrets.token_hex(12)}{_STAGED_SUFFIX}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                 dir_fd=staging_fd)
    linked: str | None = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # sweep_staging nunca borra una copia en curso
        size = os.stat(src).st_size
        if journal is not None:  # antes de copiar: el inodo que el nombre público conservará
            entry = JournalEntry(directory=dir_path, name=filename, staged=output_root / STAGING_DIR / staged,
                                 inode=os.fstat(fd).st_ino, size=size)
            write_journal(staging_fd, journal.name, entry, fsync)
        with open(src, "rb") as source, os.fdopen(fd, "wb", closefd=False) as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
        if fsync:
            os.fsync(fd)
        published = _link_and_sync(staged, staging_fd, dir_fd, dir_path, filename, fsync)
        linked = published.path.name
        return PublishedFile(published.path, published.renamed, journaled=journal is not None)
    except BaseException:
        if linked is not None:  # no se pudo hacer durable: no dejar un nombre público huérfano
            unpublish(dir_path / linked, fsync)
        if journal is not None:  # nada publicado: el diario no tiene nada que contar
            with contextlib.suppress(OSError):
                os.unlink(journal.name, dir_fd=staging_fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(staged, dir_fd=staging_fd)
        os.close(fd)
        os.close(staging_fd)


def unpublish(path: Path, fsync: bool = True) -> None:
    """Retira un nombre público (el registro terminal no se pudo escribir). Nunca lanza."""
    with contextlib.suppress(OSError):
        os.unlink(path)
        if fsync:
            fsync_dir(path.parent)


def sweep_staging(output_root: Path, max_age: float = 0.0, finished: Callable[[str], bool] | None = None) -> int:
    """Borra copias preparadas abandonadas (más viejas que ``max_age`` y sin cerrojo); devuelve cuántas.

    Un diario de publicación (``<id>.publish.json``) sólo se borra si su trabajo ya tiene registro
    terminal (``finished``): mientras no, es lo que dice a quien lo retome qué se publicó.
    """
    try:
        staging_fd = os.open(output_root / STAGING_DIR, DIR_FLAGS)
    except OSError:
        return 0
    info = os.fstat(staging_fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(staging_fd)  # no es la nuestra (open_staging la apartará): no se toca nada dentro
        return 0
    removed = 0
    now = time.time()
    try:
        for name in os.listdir(staging_fd):
            job_id = journal_job_id(name)
            if job_id is not None:
                if finished is not None and finished(job_id):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=staging_fd)
                        removed += 1
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=staging_fd)
            except OSError:
                # Un enlace simbólico u otra cosa que no se abre: se retira sin seguirla.
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=staging_fd)
                    removed += 1
                continue
            try:
                if now - os.fstat(fd).st_mtime < max_age:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # un publicador vivo la está copiando
                with contextlib.suppress(OSError):
                    if stat.S_ISDIR(os.fstat(fd).st_mode):  # una carpeta preparada (publish_folder)
                        shutil.rmtree(name, dir_fd=staging_fd)
                    else:
                        os.unlink(name, dir_fd=staging_fd)
                    removed += 1
            finally:
                os.close(fd)
    finally:
        os.close(staging_fd)
    return removed


def find_linked_publication(temp_dir: Path, output_dir: Path) -> Path | None:
    """Tras una caída: el nombre público de un archivo del directorio aislado ya enlazado (mismo inodo)."""
    try:
        entries = list(os.scandir(temp_dir))
    except OSError:
        return None
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        if st.st_nlink < 2:
            continue
        found = find_numbered(output_dir, entry.name, _same_inode(st), limit=100)
        if found is not None:
            return found
    return None


def _same_inode(st: os.stat_result) -> Callable[[os.stat_result], bool]:
    return lambda other: (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev)


def recover_publication(journal: Path) -> Path | None:
    """Tras una caída (copia entre sistemas): la ruta ya publicada según el diario, o None.

    El nombre público (el pedido o uno numerado) se reconoce por el inodo de la copia preparada,
    que ``link()`` conserva, aunque la copia ya no esté. La copia preparada, si sigue, se borra:
    publicada o no, ya no hace falta (sin publicar, se volverá a publicar desde el directorio aislado).
    """
    entry = read_journal(journal)
    if entry is None:
        return None
    found = entry.find_published(want_dir=False)
    if entry.staged.parent == journal.parent:  # sólo dentro de la carpeta de preparación
        with contextlib.suppress(OSError):
            entry.staged.unlink()
    return found
