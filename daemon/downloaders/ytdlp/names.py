"""Nombres publicados de un trabajo yt-dlp: predecibles, nunca la plantilla cruda de yt-dlp.

yt-dlp escribe con un nombre fijo dentro del directorio aislado (``media.EXT``; en una lista,
``item-NNNNN.EXT``): el mismo en cada intento, así que una reanudación encuentra sus fragmentos.
El nombre público se decide aquí:

- con ``filename`` en el trabajo: ese nombre, añadiendo la extensión del resultado si no la
  lleva ya (``clip`` -> ``clip.mp4``; ``clip.mp4`` -> ``clip.mp4``; ``clip.webm`` con un resultado
  mp4 -> ``clip.webm.mp4``);
- si no: el título del vídeo saneado (``daemon.names.safe_name``) más la extensión; sin título,
  el id del medio; sin nada, ``video``.

El extractor genérico de yt-dlp saca el id (y a veces el título) del último tramo de la URL, con
su consulta: ``/download?token=SECRETO`` da el id ``download?token=SECRETO``. ``without_query``
corta esa cola antes de que llegue a un nombre, a un registro o a un evento.
"""

from __future__ import annotations

import re

from daemon.names import MAX_NAME_BYTES, safe_name

__all__ = ["ITEM_TEMPLATE", "SINGLE_TEMPLATE", "published_name", "without_query"]

# Una consulta de URL: "?" seguido de un parámetro ``nombre=`` (sin espacios) hasta el final.
_QUERY_TAIL = re.compile(r"\?[^\s?=&#]*=[^\s]*$")

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


def without_query(text: str) -> str:
    """``text`` sin una cola de consulta de URL (``download?token=x`` -> ``download``).

    Sólo se corta si lo que sigue a ``?`` parece ``nombre=valor`` sin espacios, así que un título
    como ``Why? A talk`` queda igual. Puede quedar vacío: quien llama usa entonces su respaldo."""
    return _QUERY_TAIL.sub("", text).rstrip()


def _fit(stem: str, suffix: str) -> str:
    """``stem + suffix`` saneado y dentro del límite de bytes (se recorta el tronco, no la extensión)."""
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    raw = stem.encode("utf-8")
    if len(raw) > room:
        stem = raw[:room].decode("utf-8", "ignore").rstrip()
    return safe_name(stem + suffix, fallback="video" + suffix)
