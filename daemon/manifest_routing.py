"""``downloader: auto`` para manifiestos de streaming (HLS, DASH, Smooth, HDS): van a yt-dlp.

Reglas, en orden (docs/ytdlp.md, "Routing"):

1. Por el sufijo de la ruta de la URL (sin consulta ni fragmento, sin distinguir mayúsculas):
   ``.m3u8``, ``.m3u``, ``.mpd``, ``.ism/Manifest``, ``.isml/Manifest``, ``.f4m`` -> ``ytdlp``.
2. Un sufijo de archivo conocido (``.mp4``, ``.zip``, ``.webm``...) -> se descarga tal cual,
   sin preguntar nada al servidor.
3. Sin sufijo revelador: una petición GET (sólo las cabeceras; el cuerpo no se lee) con la misma
   guarda de direcciones que el descargador HTTP; un ``Content-Type`` de manifiesto
   (``application/vnd.apple.mpegurl``, ``application/x-mpegURL``, ``audio/mpegurl``,
   ``application/dash+xml``, ``application/vnd.ms-sstr+xml``, ``application/f4m+xml``) -> ``ytdlp``.
   Cualquier otra respuesta o error -> ``http`` (el descargador HTTP dará su propio error).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from daemon.downloaders.http_session import new_session
from daemon.downloaders.netguard import session_tls

__all__ = ["MANIFEST_CONTENT_TYPES", "MANIFEST_SUFFIXES", "manifest_by_suffix", "probe_content_type",
           "telling_suffix"]

MANIFEST_SUFFIXES = (".m3u8", ".m3u", ".mpd", ".ism/manifest", ".isml/manifest", ".f4m")
MANIFEST_CONTENT_TYPES = frozenset({
    "application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl", "audio/x-mpegurl",
    "application/dash+xml", "video/vnd.mpeg.dash.mpd", "application/vnd.ms-sstr+xml", "application/f4m+xml",
    "application/f4m",
})
# Sufijos que dicen "esto es un archivo": no se consulta al servidor.
_FILE_SUFFIXES = frozenset({
    "mp4", "m4v", "m4a", "mkv", "webm", "mov", "avi", "flv", "ts", "mp3", "aac", "ogg", "opus", "wav",
    "flac", "jpg", "jpeg", "png", "gif", "webp", "pdf", "zip", "gz", "tgz", "xz", "bz2", "zst", "7z",
    "tar", "iso", "img", "bin", "txt", "json", "csv", "deb", "rpm", "exe", "msi", "dmg", "apk", "srt", "vtt",
})
_PROBE_TIMEOUT = 10.0


def _path(url: str) -> str:
    return urlsplit(url).path.lower()


def manifest_by_suffix(url: str) -> bool:
    """True si la ruta de ``url`` termina como un manifiesto (regla 1)."""
    return _path(url).endswith(MANIFEST_SUFFIXES)


def telling_suffix(url: str) -> bool:
    """True si el sufijo de la ruta ya decide (manifiesto o archivo conocido): no hace falta consultar."""
    path = _path(url)
    if manifest_by_suffix(url):
        return True
    last = path.rsplit("/", 1)[-1]
    return "." in last and last.rsplit(".", 1)[1] in _FILE_SUFFIXES


async def probe_content_type(url: str, allow_private: bool, allowed_networks: tuple[str, ...] = (),
                             timeout: float = _PROBE_TIMEOUT) -> str | None:
    """El ``Content-Type`` (sin parámetros, en minúsculas) de un GET a ``url``, o None si no se supo."""
    session = new_session("videonote-dl/0.1", session_tls(None), allow_private, allowed_networks)
    try:
        async with asyncio.timeout(timeout), session.get(url, allow_redirects=True, max_redirects=10) as response:
            if response.status >= 400:
                return None
            return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() or None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    except Exception:  # PrivateAddressRefused y similares: que decida el descargador HTTP
        return None
    finally:
        await session.close()
