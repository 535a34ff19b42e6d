"""Montajes para las pruebas: un tmpfs pequeño de verdad (ENOSPC del núcleo) y cómo llenarlo."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill_until_enospc", "mounted_tmpfs", "require_root"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs (CI runs as root)")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount are not installed")


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """Monta un tmpfs con ``options`` en ``path`` y lo desmonta al salir (aunque la prueba falle)."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); "
                    "needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:  # algo lo mantiene ocupado: desmontaje diferido, nunca dejarlo montado
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_until_enospc(path: Path) -> int:
    """Escribe ceros en ``path`` hasta que el sistema de archivos diga ENOSPC; devuelve los bytes."""
    written = 0
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, block[: 65536 if written % 65536 == 0 else 65536 - written % 65536])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # Quedan menos bytes que un bloque: se completan de uno en uno hasta el final.
                try:
                    while os.write(fd, b"\0"):
                        written += 1
                except OSError as last:
                    if last.errno != errno.ENOSPC:
                        raise
                return written
            written += n
    finally:
        os.close(fd)
