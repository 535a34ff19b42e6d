"""Publicación atómica de un archivo terminado en el directorio de salida.

- Nunca visible a medias: el archivo ya completo (y con fsync) recibe su nombre final con
  ``link()``, que es atómico y falla si el nombre existe: nada se sobrescribe jamás; si el
  nombre está tomado, se usa ``nombre-1.ext``, ``nombre-2.ext``...
- Entre sistemas de archivos (EXDEV) se copia a un nombre oculto en el destino, fsync, y se
  enlaza igual.
- Las carpetas de ``output_dir`` se crean y abren componente a componente con O_NOFOLLOW:
  un enlace simbólico plantado no saca un archivo fuera de la raíz de salida.
- Un marcador ``.publish.json`` en el directorio aislado hace idempotente la publicación
  si el daemon muere a mitad: al reanudar, ``recover_publication`` encuentra lo publicado.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from daemon.downloaders.base import PermanentDownloadError, StorageError

__all__ = [
    "PUBLISH_MARKER",
    "PublishedFile",
    "find_linked_publication",
    "open_output_dir",
    "publish_file",
    "recover_publication",
]

PUBLISH_MARKER = ".publish.json"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """Dónde quedó publicado el archivo y si se renombró por un choque de nombres."""

    path: Path
    renamed: bool


def open_output_dir(output_root: Path, subdir: str | None) -> tuple[int, Path]:
    """Abre (creándola) la carpeta destino sin seguir enlaces; devuelve (fd, ruta)."""
    output_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_root, _DIR_FLAGS)
    path = output_root
    try:
        for part in (subdir.split("/") if subdir else []):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
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


def _candidates(filename: str, limit: int = 10000) -> Iterator[str]:
    """``clip.mp4``, ``clip-1.mp4``, ``clip-2.mp4``... (perezoso: casi siempre basta el primero)."""
    yield filename
    stem, dot, ext = filename.rpartition(".")
    if not stem:  # sin extensión o nombre que empieza por punto
        stem, dot, ext = filename, "", ""
    for n in range(1, limit):
        yield f"{stem}-{n}{dot}{ext}"


def _write_marker(marker: Path, data: dict[str, object]) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data))
    os.replace(tmp, marker)


def publish_file(
    src: Path,
    output_root: Path,
    subdir: str | None,
    filename: str,
    marker: Path | None = None,
    fsync: bool = True,
) -> PublishedFile:
    """Publica ``src`` como ``output_root/subdir/filename`` (o un nombre numerado libre)."""
    try:
        dir_fd, dir_path = open_output_dir(output_root, subdir)
    except PermanentDownloadError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot create output folder under {output_root}: {exc.strerror}",
                           errno=exc.errno) from None
    staged: str | None = None
    try:
        source_name = str(src)
        source_dir_fd = None
        st = os.stat(src)
        # En el mismo sistema de archivos no hace falta marcador: el archivo publicado comparte el
        # inodo con ``src`` (st_nlink > 1), que sigue en el directorio aislado hasta después del
        # registro terminal; ``find_linked_publication`` lo encuentra tras una caída.
        for candidate in _candidates(filename):
            try:
                if staged is None:
                    os.link(source_name, candidate, src_dir_fd=source_dir_fd, dst_dir_fd=dir_fd)
                else:
                    os.link(staged, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.EXDEV and staged is None:
                    if marker is not None:  # otro sistema: la copia tendrá otro inodo, hay que anotarlo
                        _write_marker(marker, {"dir": str(dir_path), "filename": filename, "src": str(src),
                                               "ino": st.st_ino, "size": st.st_size})
                    staged = _stage_copy(src, dir_fd, st.st_ino, fsync)
                    try:
                        os.link(staged, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    except FileExistsError:
                        continue
                else:
                    raise
            published = dir_path / candidate
            if marker is not None and staged is not None:
                # Copia entre sistemas de archivos: otro inodo, así que el marcador anota la ruta.
                # En el mismo sistema basta el inodo compartido con ``src``, que sigue en el
                # directorio aislado hasta que éste se borra (después del registro terminal).
                _write_marker(marker, {"dir": str(dir_path), "filename": filename, "src": str(src),
                                       "path": str(published), "size": st.st_size})
            if fsync:
                try:
                    os.fsync(dir_fd)
                except OSError:
                    # Sin fsync no hay garantía: retirar el nombre público antes de informar del fallo.
                    with contextlib.suppress(OSError):
                        os.unlink(candidate, dir_fd=dir_fd)
                    raise
            if staged is not None:
                os.unlink(staged, dir_fd=dir_fd)
                staged = None
            return PublishedFile(published, renamed=candidate != filename)
        raise PermanentDownloadError(f"no free name for {filename!r} in {dir_path}; clean up the output folder")
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StorageError(f"cannot publish into {dir_path}: {exc.strerror}; make it writable",
                               errno=exc.errno) from None
        raise StorageError(f"cannot publish into {dir_path}: {exc.strerror}", errno=exc.errno) from None
    finally:
        if staged is not None:
            with contextlib.suppress(OSError):
                os.unlink(staged, dir_fd=dir_fd)
        os.close(dir_fd)


def _stage_copy(src: Path, dir_fd: int, ino: int, fsync: bool) -> str:
    """Copia a un nombre oculto dentro del destino (otro sistema de archivos) y hace fsync."""
    staged = f".videonote-dl-{ino}.partial"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        with open(src, "rb") as source, os.fdopen(fd, "wb", closefd=False) as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
            target.flush()
            if fsync:
                os.fsync(fd)
    finally:
        os.close(fd)
    return staged


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
        for candidate in _candidates(entry.name, limit=100):
            try:
                other = os.stat(output_dir / candidate, follow_symlinks=False)
            except OSError:
                continue
            if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
                return output_dir / candidate
    return None


def recover_publication(marker: Path, src: Path | None) -> Path | None:
    """Tras una caída: la ruta ya publicada según el marcador, o None si no llegó a publicarse.

    Sin ``src``, se usa el origen que anotó el marcador: así una caída entre ``link()`` y la
    actualización del marcador no acaba publicando dos veces el mismo archivo.
    """
    try:
        data = orjson.loads(marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    if src is None and isinstance(data.get("src"), str):
        src = Path(data["src"])
    published = data.get("path")
    if published:
        path = Path(published)
        try:
            if path.stat().st_size == data.get("size"):
                if src is not None and src.exists():
                    src.unlink()
                return path
        except OSError:
            return None
        return None
    # El enlace pudo hacerse sin que el marcador lo dijera: buscar el mismo inodo.
    if src is None or not src.exists():
        return None
    ino = src.stat().st_ino
    directory = Path(data.get("dir", ""))
    for candidate in _candidates(str(data.get("filename", "")), limit=100):
        try:
            if (directory / candidate).stat().st_ino == ino:
                src.unlink()
                return directory / candidate
        except OSError:
            continue
    return None
