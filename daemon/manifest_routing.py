"""``downloader: auto`` para manifiestos de streaming (HLS, DASH, Smooth, HDS): van a yt-dlp.

Reglas, en orden (docs/ytdlp.md, "Routing"):

1. Por el sufijo de la ruta de la URL (sin consulta ni fragmento, sin distinguir mayúsculas):
   ``.m3u8``, ``.m3u``, ``.mpd``, ``.ism/Manifest``, ``.isml/Manifest``, ``.f4m`` -> ``ytdlp``.
2. Un sufijo de archivo conocido (``.mp4``, ``.zip``, ``.webm``...) -> se descarga tal cual,
   sin preguntar nada al servidor.
3. Sin sufijo revelador: lo decide la propia respuesta, sin una petición de más. El trabajo va al
   descargador HTTP con ``route_manifests``; si la respuesta final (tras las redirecciones) trae un
   ``Content-Type`` de manifiesto (``application/vnd.apple.mpegurl``, ``application/x-mpegURL``,
   ``audio/mpegurl``, ``application/dash+xml``, ``application/vnd.ms-sstr+xml``,
   ``application/f4m+xml``), la suelta sin leer el cuerpo y el trabajo pasa a yt-dlp
   (``job.routed``) sin gastar un intento. Cualquier otra respuesta se descarga tal cual.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["MANIFEST_CONTENT_TYPES", "MANIFEST_SUFFIXES", "manifest_by_suffix", "telling_suffix"]

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
