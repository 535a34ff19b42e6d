"""Reanudación de una descarga HTTP: qué se guarda en el directorio aislado y cuándo se puede seguir.

``download.part`` guarda los bytes recibidos y ``download.meta.json`` la URL, el tamaño total y
el validador (ETag fuerte o Last-Modified) de la primera respuesta. Un reintento pide ``Range``
con ``If-Range``; sólo se añade a la parte local un 206 que empieza donde se pidió, con el mismo
tamaño total y el mismo validador. Cualquier otra cosa descarta la parte y empieza de cero
(nunca se publica un archivo empalmado de dos versiones).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson

__all__ = ["META_NAME", "PART_NAME", "is_whole_file", "load_meta", "resume_headers", "resume_refused"]

PART_NAME = "download.part"
META_NAME = "download.meta.json"
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")


def load_meta(meta_path: Path, url: str) -> dict[str, Any] | None:
    """Los datos guardados de un intento anterior para ``url``; None si no hay o son de otra URL."""
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("url") == url else None


def resume_headers(offset: int, meta: dict[str, Any] | None) -> dict[str, str]:
    """``Range`` + ``If-Range`` para seguir desde ``offset``; vacío si no hay validador fiable."""
    if not (offset and meta):
        return {}
    validator = meta.get("etag") if not str(meta.get("etag", "W/")).startswith("W/") else None
    validator = validator or meta.get("last_modified")
    if not validator:
        return {}
    return {"Range": f"bytes={offset}-", "If-Range": validator}


def resume_refused(response: aiohttp.ClientResponse, offset: int, meta: dict[str, Any] | None) -> str | None:
    """Por qué la respuesta a una petición de reanudación no se puede añadir a la parte local
    (None si se puede, o si no es un 206 y por tanto no se añade nada)."""
    if response.status == 416:
        return "the server refused the range (416)"
    if response.status != 206:
        return None  # un 200 reescribe desde cero; un error se trata en _receive
    meta = meta or {}
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if not match:
        return f"206 with an unusable Content-Range {response.headers.get('Content-Range')!r}"
    start, end, complete = int(match.group(1)), int(match.group(2)), match.group(3)
    if start != offset:
        return f"206 starts at byte {start}, not at {offset} as asked"
    known_total = meta.get("total")
    if complete == "*" or end + 1 != int(complete) or (known_total is not None and int(complete) != known_total):
        return f"206 with Content-Range {response.headers.get('Content-Range')!r} for a file of {known_total} bytes"
    if response.content_length is not None and response.content_length != end + 1 - start:
        return "206 whose Content-Length disagrees with its Content-Range"
    etag, last_modified = meta.get("etag"), meta.get("last_modified")
    if etag and not str(etag).startswith("W/"):
        if response.headers.get("ETag") != etag:
            return f"the ETag changed ({etag} -> {response.headers.get('ETag')}): the file changed"
    elif last_modified and response.headers.get("Last-Modified") != last_modified:
        return "the Last-Modified date changed: the file changed"
    return None



def is_whole_file(response: aiohttp.ClientResponse) -> bool:
    """Si un 206 trae el archivo entero (``bytes 0-N/N+1``, con Content-Length que cuadre)."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if not match or match.group(3) == "*" or int(match.group(1)) != 0:
        return False
    size = int(match.group(2)) + 1
    return size == int(match.group(3)) and response.content_length in (None, size)

