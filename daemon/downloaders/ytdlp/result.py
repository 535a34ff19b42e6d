"""El resultado de un yt-dlp terminado: comprobar sus archivos y darles nombre público.

Un trabajo normal da un archivo (``media.EXT``) cuyo nombre público decide ``names``. Una lista
(``playlist: true``) da una carpeta ``.playlist/`` dentro del directorio aislado con un enlace
por elemento, ya con su nombre público (título saneado; ``-1``, ``-2``... si se repite): lo que
``publish_folder`` publicará entera. El registro lista cada archivo con su tamaño y sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from daemon.downloaders.base import DownloadOptions, DownloadResult, SizeLimitExceeded, StorageError
from daemon.downloaders.ytdlp.names import published_name
from daemon.events import redact
from daemon.naming import numbered_names
from daemon.sha import file_sha256

__all__ = ["PLAYLIST_DIR", "build_result", "checked_paths", "folder_result"]

PLAYLIST_DIR = ".playlist"


def checked_paths(out_dir: Path, reported: list[str]) -> list[Path]:
    """Las rutas que yt-dlp dijo haber terminado, si todas son archivos normales del directorio aislado."""
    root = out_dir.resolve()
    paths: list[Path] = []
    for item in reported:
        path = Path(item)
        try:
            inside = path.resolve(strict=True).parent == root and not path.is_symlink()
        except OSError:
            inside = False
        if not inside or not path.is_file():
            raise StorageError("yt-dlp reported a file that is not a regular file in the job's temp dir",
                               path=redact(str(path)))
        if path not in paths:
            paths.append(path)
    return paths


def _ext(path: Path) -> str:
    return path.suffix[1:] if path.suffix else ""


def build_result(out_dir: Path, paths: list[Path], infos: list[dict[str, Any]], options: DownloadOptions,
                 extra: dict[str, Any]) -> DownloadResult:
    """``DownloadResult`` de un archivo (con su nombre público) o de la carpeta de una lista."""
    if not options.playlist:
        path, info = paths[0], infos[0] if infos else {}
        size = path.stat().st_size
        if size > options.max_bytes:
            raise SizeLimitExceeded(f"the file has {size} bytes, over the limit of {options.max_bytes}",
                                    max_bytes=options.max_bytes, size=size)
        name = published_name(options.filename, _str(info.get("title")), _str(info.get("id")), _ext(path))
        return DownloadResult(path=path, filename=name, size=size, sha256=file_sha256(path), extra=extra)
    folder = out_dir / PLAYLIST_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    by_path = {str(i.get("filepath")): i for i in infos}
    taken = {p.name for p in folder.iterdir()}
    linked = {p.stat().st_ino for p in folder.iterdir()}
    for path in paths:
        if path.stat().st_ino in linked:  # un reintento: ya enlazado
            continue
        info = by_path.get(str(path), {})
        base = published_name(None, _str(info.get("title")), _str(info.get("id")), _ext(path))
        name = next(n for n in numbered_names(base) if n not in taken)
        taken.add(name)
        (folder / name).hardlink_to(path)
    return folder_result(folder, options.correlation_id or "playlist", options.max_bytes, extra)


def folder_result(folder: Path, name: str, max_bytes: int, extra: dict[str, Any]) -> DownloadResult:
    """``DownloadResult`` de una carpeta: tamaño total, sha256 de su listado y el listado en ``extra``."""
    from daemon.publish_folder import folder_listing

    files = folder_listing(folder)
    size = sum(int(f["size"]) for f in files)
    if size > max_bytes:
        raise SizeLimitExceeded(f"the playlist has {size} bytes, over the limit of {max_bytes}",
                                max_bytes=max_bytes, size=size)
    digest = hashlib.sha256(orjson.dumps(files)).hexdigest()
    return DownloadResult(path=folder, filename=name, size=size, sha256=digest,
                          extra={**extra, "files": files, "playlist": True})


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
