"""Caducidad de lo que se acumula: entradas de rejected/ y registros de failed/ más viejos que
``producers.retention`` se borran (``spool.expired``), para que ningún productor haga crecer el
spool sin límite."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["expire_old_entries"]


def expire_old_entries(folders: tuple[Path, ...], max_age: float, now: float | None = None,
                       limit: int = 10000) -> list[Path]:
    """Borra los archivos regulares (o enlaces) de ``folders`` con mtime de hace más de ``max_age``;
    como mucho ``limit`` por pasada. Devuelve los borrados. Nunca lanza por una entrada."""
    if max_age <= 0:
        return []
    cutoff = (time.time() if now is None else now) - max_age
    removed: list[Path] = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if len(removed) >= limit:
                return removed
            try:
                st = entry.stat(follow_symlinks=False)
                if st.st_mtime >= cutoff or entry.is_dir(follow_symlinks=False):
                    continue
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed
