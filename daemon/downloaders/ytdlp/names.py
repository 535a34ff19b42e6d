"""Nombres publicados de un trabajo yt-dlp: predecibles, nunca la plantilla cruda de yt-dlp.

yt-dlp escribe con un nombre fijo dentro del directorio aislado (``media.EXT``; en una lista,
``item-NNNNN.EXT``): el mismo en cada intento, así que una reanudación encuentra sus fragmentos.
El nombre público se decide aquí:

- con ``filename`` en el trabajo: ese nombre, añadiendo la extensión del resultado si no la
  lleva ya (``clip`` -> ``clip.mp4``; ``clip.mp4`` -> ``clip.mp4``; ``clip.webm`` con un resultado
  mp4 -> ``clip.webm.mp4``);
- si no: el título del vídeo saneado (``daemon.names.safe_name``) más la extensión; sin título,
  el id del medio; sin nada, ``video``.
"""

from __future__ import annotations

from daemon.names import MAX_NAME_BYTES, safe_name

__all__ = ["ITEM_TEMPLATE", "SINGLE_TEMPLATE", "published_name"]

SINGLE_TEMPLATE = "media.%(ext)s"
ITEM_TEMPLATE = "item-%(autonumber)05d.%(ext)s"


def published_name(filename: str | None, title: str | None, media_id: str | None, ext: str) -> str:
    """El nombre público de un resultado con extensión ``ext`` (sin punto; vacía si no tiene)."""
    suffix = f".{ext}" if ext else ""
    if filename:
        if not suffix or filename.lower().endswith(suffix.lower()):
            return filename
        return _fit(filename, suffix)
    base = safe_name(title or media_id or "video", fallback="video")
    return _fit(base, suffix)


def _fit(stem: str, suffix: str) -> str:
    """``stem + suffix`` saneado y dentro del límite de bytes (se recorta el tronco, no la extensión)."""
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    raw = stem.encode("utf-8")
    if len(raw) > room:
        stem = raw[:room].decode("utf-8", "ignore").rstrip()
    return safe_name(stem + suffix, fallback="video" + suffix)
