"""Escritura del cuerpo de una descarga HTTP: lotes de trozos al archivo y su sha256 a la vez.

``Sink`` se usa desde un hilo de escritura: el bucle de eventos le pasa lotes de ~512 KiB sin
copiarlos y sigue leyendo del socket mientras se escriben (``writev``) y se resumen.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from daemon.durable import fsync_dir

__all__ = ["WRITE_BATCH", "Sink"]

WRITE_BATCH = 512 * 1024


class Sink:
    """Escribe y resume (sha256) un archivo; se usa desde un hilo de trabajo.

    Con ``offset`` se reanuda: se resumen los primeros ``offset`` bytes ya escritos y se sigue
    desde ahí (lo que hubiera detrás se trunca)."""
    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        if not offset:  # desde cero: lo que hubiera de un intento anterior se trunca al abrir
            self.fd = os.open(path, flags | os.O_TRUNC, 0o600)
            return
        self.fd = os.open(path, flags, 0o600)
        with open(path, "rb") as existing:
            while self.size < offset:
                block = existing.read(min(WRITE_BATCH * 4, offset - self.size))
                if not block:
                    break
                self.hasher.update(block)
                self.size += len(block)
        os.ftruncate(self.fd, self.size)
        os.lseek(self.fd, self.size, os.SEEK_SET)

    def write(self, chunks: list[bytes]) -> None:
        """Escribe los trozos tal como llegaron (writev: sin juntarlos antes) y los resume."""
        for start in range(0, len(chunks), 512):  # IOV_MAX es 1024
            group = chunks[start:start + 512]
            expected = sum(map(len, group))
            written = os.writev(self.fd, group)
            if written != expected:  # escritura corta (disco casi lleno): completar o fallar
                self._write_rest(b"".join(group), written)
            for chunk in group:
                self.hasher.update(chunk)
            self.size += expected

    def _write_rest(self, data: bytes, offset: int) -> None:
        view = memoryview(data)[offset:]
        while view:
            view = view[os.write(self.fd, view):]

    def write_and_finish(self, chunks: list[bytes], fsync: bool) -> None:
        if chunks:
            self.write(chunks)
        self.finish(fsync)

    def complete_as(self, tail: list[bytes], final: Path, total: int | None, fsync: bool) -> bool:
        """La cola del cuerpo y su fsync; si está completo (``total`` bytes), el nombre final y el
        fsync de la carpeta (durable antes de publicar: la recuperación lo busca por inodo).
        False si el cuerpo quedó corto (no se renombra)."""
        self.write_and_finish(tail, fsync)
        if total is not None and self.size != total:
            return False
        os.replace(self.path, final)
        if fsync:
            fsync_dir(final.parent)
        return True

    def finish(self, fsync: bool) -> None:
        if fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
