"""Lectura segura de un archivo de trabajo reclamado: sin seguir enlaces, sin bloquearse, con tope.

Un archivo de trabajo se examina con ``lstat`` antes de abrirlo (un FIFO, un dispositivo, un
socket o un enlace se rechazan sin abrirlos), se abre con O_NOFOLLOW|O_NONBLOCK (un FIFO nunca
bloquea al daemon) y debe ser un archivo regular, con un solo enlace y de como mucho 64 KiB.
Cualquier otra cosa es ``JobRejected`` con un motivo que dice qué corregir.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from daemon.job_rejected import JobRejected

__all__ = ["JOB_FILE_MAX_BYTES", "is_candidate_name", "kind_of", "read_job_file"]

JOB_FILE_MAX_BYTES = 64 * 1024


# Temporales y copias de editores y herramientas: vim (``4913``, ``x~``), emacs (``#x#``), nano
# (``x.save``), JetBrains (``x___jb_tmp___``), navegadores (``x.part``, ``x.crdownload``).
_EDITOR_DROPPINGS = re.compile(
    r"(?:\d+|.*~|#.*#|.*\.(?:tmp|swp|swx|swo|save(?:\.\d+)?|part|partial|crdownload|bak|orig|kate-swp)"
    r"|.*___jb_(?:tmp|old|bak)___)", re.IGNORECASE)


def is_candidate_name(name: str) -> bool:
    """Si un nombre en incoming/ ya es una entrega: no un oculto, ni un temporal de un productor,
    ni un resto de editor (que se ignoran, no se rechazan)."""
    return not name.startswith(".") and not _EDITOR_DROPPINGS.fullmatch(name)


def kind_of(mode: int) -> str | None:
    """Qué es un archivo que no es regular, dicho para una persona; None si es regular."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _require_regular(st: os.stat_result) -> None:
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise JobRejected(f"the job file is {kind}; write a regular file in spool/tmp/ and rename it into incoming/")


def _open_job_file(name: str, dir_fd: int) -> int:
    """Abre sin seguir enlaces ni bloquearse; traduce los errores a motivos."""
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JobRejected("the job file is a symbolic link (links are never followed); "
                              "write a regular file in spool/tmp/ and rename it into incoming/") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):
            raise JobRejected(
                "the job file is a socket or a device, not a regular file; write a regular file"
            ) from None
        raise JobRejected(
            f"cannot open the job file: {exc.strerror}; make it readable by the daemon's user"
        ) from None


def _read_capped(fd: int) -> bytes:
    """Lee hasta ``JOB_FILE_MAX_BYTES + 1`` bytes: uno de más basta para saber que creció."""
    chunks = []
    remaining = JOB_FILE_MAX_BYTES + 1
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_job_file(name: str, dir_fd: int) -> tuple[bytes, os.stat_result]:
    """Lee un archivo reclamado sin seguir enlaces ni bloquearse; valida tipo, enlaces y tamaño.

    Primero ``lstat``: un FIFO, un dispositivo, un socket o un enlace simbólico se rechazan sin
    abrirlos (abrir un dispositivo puede tener efectos). Después se abre con O_NOFOLLOW|O_NONBLOCK
    y ``fstat`` confirma que es el mismo inodo y sigue siendo un archivo regular.
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise JobRejected("the job file disappeared before it could be read; write it again") from None
    except OSError as exc:
        raise JobRejected(f"cannot examine the job file: {exc.strerror}; check its permissions") from None
    _require_regular(before)
    fd = _open_job_file(name, dir_fd)
    try:
        st = os.fstat(fd)
        _require_regular(st)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise JobRejected("the job file was replaced while it was being read; write it again")
        if st.st_nlink > 1:
            raise JobRejected(
                "the job file has other hard links; write a new file in spool/tmp/ and rename it into incoming/"
            )
        if st.st_size > JOB_FILE_MAX_BYTES:
            raise JobRejected(
                f"the job file is {st.st_size} bytes; the limit is {JOB_FILE_MAX_BYTES} bytes (64 KiB): "
                "a job file only names a URL and a few options"
            )
        data = _read_capped(fd)
        if len(data) > JOB_FILE_MAX_BYTES:
            raise JobRejected(f"the job file grew past the limit of {JOB_FILE_MAX_BYTES} bytes (64 KiB)")
        return data, st
    except OSError as exc:
        raise JobRejected(f"cannot read the job file: {exc.strerror}; write it again") from None
    finally:
        os.close(fd)
