"""sha256 de archivos en bloques (memoria constante)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path: Path, block: int = 1024 * 1024) -> str:
    """Hex del sha256 del contenido de ``path``."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            hasher.update(chunk)
    return hasher.hexdigest()
