"""Lo que sabe el yt-dlp instalado: su versión y qué extractor reclama una URL.

``pick_downloader`` decide entre ``http`` e ``ytdlp`` para ``downloader: auto`` con los
``_VALID_URL`` de los extractores de yt-dlp, sin red. La tabla se hace una vez, de forma
perezosa, en un proceso hijo (``extractor_table``): el daemon nunca importa yt_dlp (~19 MiB que no
devolvería) y cada URL se prueba sólo contra los patrones que su índice de 4-gramas deja pasar
(~50 µs en vez de ~400). Si el hijo no sirve, se cargan los extractores en proceso, como antes.
"""

from __future__ import annotations

import collections
import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.downloaders.ytdlp.extractor_table import ExtractorTable, default_suitable, load_table_from_child
from daemon.events import get_logger

__all__ = ["claiming_extractor", "known_claim", "pick_downloader", "preload_extractors", "ytdlp_version"]

_version_cache: str | None = None


def ytdlp_version() -> str:
    """Versión de yt-dlp instalada, leída de los metadatos del paquete (sin importar yt_dlp)."""
    global _version_cache
    if _version_cache is None:
        try:
            from importlib.metadata import PackageNotFoundError, version

            _version_cache = version("yt-dlp")
        except PackageNotFoundError:
            _version_cache = "unknown"
    return _version_cache


_Matcher = Callable[[str], Any]


@dataclass(slots=True)
class _ExtractorIndex:
    """Índice de extractores.

    ``ordered``: (clave, coincidencia) en el orden de yt-dlp, para dar la respuesta exacta.
    ``patterns``: todos los ``_VALID_URL`` compilados (también los de las clases que redefinen
    ``suitable``), para descartar deprisa con ``any(map(re.Pattern.match, ...))``, un bucle en C.
    ``always``: los ``suitable`` propios de clases sin ``_VALID_URL``, que hay que llamar siempre.

    El descarte rápido es exacto porque un ``suitable`` propio sólo estrecha su ``_VALID_URL``
    en favor de otro extractor no genérico (así son las 75 clases que lo redefinen en yt-dlp
    2026.10.26): si ningún ``_VALID_URL`` coincide, ningún extractor reclama la URL.
    """

    ordered: list[tuple[str, _Matcher]]
    patterns: list[re.Pattern[str]]
    always: list[_Matcher]


_log = get_logger()
_index_lock = threading.Lock()
_index: _ExtractorIndex | ExtractorTable | None = None
_claims: collections.OrderedDict[str, str | None] = collections.OrderedDict()
_claims_lock = threading.Lock()
_CLAIMS_MAX = 1024


def _load_index(cache_dir: Path | None = None) -> _ExtractorIndex | ExtractorTable:
    """La tabla del proceso hijo; si no se puede, el índice en proceso (``_load_in_process``)."""
    global _index
    with _index_lock:
        if _index is None:
            try:
                _index = load_table_from_child(cache_dir)
            except Exception as exc:  # hijo fallido, tiempo agotado, JSON raro, extractores sin patrón
                _log.warning("daemon.error", where="ytdlp_index",
                             error=f"extractor table in a child failed, loading yt-dlp in process: {exc!r}")
                _index = _load_in_process()
        return _index


def _load_in_process() -> _ExtractorIndex:
    """Carga las clases de extractores de yt-dlp en este proceso y prepara el índice.

    Se omiten el genérico y las clases que yt-dlp no usa por defecto (``_ENABLED = False``).
    Se compilan los ``_VALID_URL`` (los mismos objetos que usa yt-dlp) y se hace una pasada de
    prueba para que los ``suitable`` propios compilen ya lo que compilan perezosamente.
    """
    from yt_dlp.extractor import gen_extractor_classes  # type: ignore[import-untyped]

    ordered: list[tuple[str, _Matcher]] = []
    patterns: list[re.Pattern[str]] = []
    always: list[_Matcher] = []
    for klass in gen_extractor_classes():
        key = klass.ie_key()
        if key == "Generic" or not getattr(klass, "_ENABLED", True):
            continue
        own: tuple[re.Pattern[str], ...] = ()
        if klass._VALID_URL:
            klass._match_valid_url("")  # compila y guarda _VALID_URL_RE en la clase
            own = tuple(klass.__dict__.get("_VALID_URL_RE") or ())
        patterns.extend(own)
        if default_suitable(klass):
            ordered.extend((key, pattern.match) for pattern in own)
        else:
            ordered.append((key, klass.suitable))
            if not own:
                always.append(klass.suitable)
    for _key, match in ordered:  # pasada de prueba: compilaciones perezosas
        _safe(match, "http://127.0.0.1/")
    return _ExtractorIndex(ordered, patterns, always)


def preload_extractors(cache_dir: Path | None = None) -> str:
    """Prepara ya el índice de ``pick_downloader``: la copia guardada en ``cache_dir`` si vale
    (``extractor_cache``), si no un proceso hijo que importa yt_dlp (~1 s de CPU una vez).

    Opcional; pensado para ``await asyncio.to_thread(preload_extractors)`` al arrancar, para
    que el primer trabajo ``auto`` no bloquee el bucle de eventos. Devuelve de dónde salió el
    índice: ``cache``, ``child`` o ``in_process`` (el hijo falló)."""
    index = _load_index(cache_dir)
    return index.source if isinstance(index, ExtractorTable) else "in_process"


def _safe(match: _Matcher, url: str) -> bool:
    try:
        return bool(match(url))
    except Exception:
        return False  # un suitable() propio que falle no decide nada


def _first_claim(url: str) -> str | None:
    index = _load_index()
    if isinstance(index, ExtractorTable):
        return index.first_claim(url)
    if not any(map(re.Pattern.match, index.patterns, itertools.repeat(url))) and not any(
        _safe(match, url) for match in index.always
    ):
        return None
    # Algún _VALID_URL coincide: el recorrido en orden da el extractor que elegiría yt-dlp.
    return next((key for key, match in index.ordered if _safe(match, url)), None)


def claiming_extractor(url: str) -> str | None:
    """Clave del primer extractor de yt-dlp (no genérico) que reclama ``url``, o None.

    La primera llamada importa yt_dlp y prepara el índice (~0,5-0,7 s, una vez por proceso);
    las siguientes cuestan décimas de milisegundo. No usa la red ni lanza procesos.
    """
    with _claims_lock:
        if url in _claims:
            _claims.move_to_end(url)
            return _claims[url]
    found = _first_claim(url)
    with _claims_lock:
        _claims[url] = found
        if len(_claims) > _CLAIMS_MAX:
            _claims.popitem(last=False)
    return found


def known_claim(url: str) -> str | None:
    """El extractor ya averiguado para ``url`` (por ``pick_downloader``), sin importar yt_dlp."""
    return _claims.get(url)


def pick_downloader(url: str, requested: str = "auto") -> str:
    """``"http"`` o ``"ytdlp"`` para ``url`` según ``requested`` (auto | http | ytdlp).

    ``auto`` elige yt-dlp cuando uno de sus extractores distinto del genérico reclama la URL
    (``suitable()``), y HTTP en otro caso. yt_dlp se importa sólo en la primera llamada con
    ``auto``, nunca al importar el daemon.
    """
    if requested == "ytdlp":
        return "ytdlp"
    if requested == "http":
        return "http"
    if requested != "auto":
        raise ValueError(f"unknown downloader {requested!r}; use auto, http or ytdlp")
    return "ytdlp" if claiming_extractor(url) is not None else "http"
