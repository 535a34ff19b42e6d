"""La tabla de extractores guardada en disco, para que un daemon que rearranca no vuelva a hacerla.

Hacer la tabla cuesta ~1 s de CPU en un proceso hijo que importa yt-dlp; el primer trabajo
``auto`` de cada arranque la esperaba. El hijo guarda su JSON en la raíz temporal del daemon
(``temp_dir``, la ``CacheDirectory=`` de systemd), como ``.ytdlp-extractor-table.json``: el
recolector sólo toca entradas ``videonote_*``. La primera línea es la clave: la carpeta de yt-dlp,
la identidad (tamaño, mtime) de su ``version.py``, de sus archivos de extractores y del código que
hace la tabla, y la versión de Python. Si algo cambia (una actualización de yt-dlp, del daemon o de
Python), la clave no coincide y la tabla se rehace. Es una caché: se escribe con rename atómico
pero sin fsync, y una copia rota o ilegible sólo hace que se rehaga.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

__all__ = ["CACHE_NAME", "cache_key", "read_cached_table", "write_cached_table"]

CACHE_NAME = ".ytdlp-extractor-table.json"
_FORMAT = 1  # súbase si cambia lo que el hijo vuelca
_HERE = Path(__file__).resolve().parent


def cache_key() -> str | None:
    """La clave de la tabla del yt-dlp instalado, sin importarlo ni leer sus metadatos (buscando su
    carpeta en ``sys.path``, como haría la importación); None si no se encuentra."""
    package = next((Path(entry or ".") / "yt_dlp" for entry in sys.path
                    if os.path.isfile(os.path.join(entry or ".", "yt_dlp", "__init__.py"))), None)
    if package is None:
        return None
    parts = [f"format={_FORMAT}", f"python={sys.version.split()[0]}", f"yt-dlp={package.resolve()}"]
    # version.py cambia con cada versión de yt-dlp; los extractores, con cualquier parche local.
    for path in (package / "version.py", package / "extractor" / "_extractors.py",
                 package / "extractor" / "lazy_extractors.py", _HERE / "extractor_table.py"):
        try:
            st = os.stat(path)
        except OSError:
            parts.append(f"{path.name}=missing")
            continue
        parts.append(f"{path.name}={st.st_size}:{st.st_mtime_ns}")
    return " ".join(parts)


def read_cached_table(folder: Path, key: str) -> bytes | None:
    """El JSON guardado si su clave es ``key``; None si no hay copia, es de otra clave o no se lee."""
    try:
        with open(folder / CACHE_NAME, "rb") as cached:
            first = cached.readline()
            if first.rstrip(b"\n").decode("utf-8", "replace") != key:
                return None
            return cached.read()
    except OSError:
        return None


def write_cached_table(folder: Path, key: str, table_json: bytes) -> bool:
    """Guarda ``table_json`` con su clave (temporal y rename: un lector nunca ve media copia).
    False si no se pudo (carpeta de sólo lectura, disco lleno): la tabla sigue valiendo en memoria."""
    temporary = folder / f"{CACHE_NAME}.{os.getpid()}.tmp"
    _remove_stale_temporaries(folder)
    try:
        with open(temporary, "wb") as out:
            out.write(key.encode() + b"\n" + table_json)
        os.replace(temporary, folder / CACHE_NAME)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return False


def _remove_stale_temporaries(folder: Path) -> None:
    """Borra los temporales de escrituras que un SIGKILL dejó a medias (de más de un minuto: los
    de otro daemon que escribe ahora mismo son más nuevos)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(CACHE_NAME + ".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime > 60:
                        os.unlink(entry.path)
