"""Reglas de un nombre de archivo publicado: las mismas para el ``filename`` de un trabajo y
para el nombre que propone un servidor (Content-Disposition o la URL).

Un nombre válido es un solo componente de ruta (sin ``/`` ni ``\\``), no empieza por punto
(ni es ``.`` o ``..``), no tiene caracteres invisibles o que cambian cómo se ve el resto
(controles C0/C1, formato Unicode como los de dirección bidi U+202E o los de anchura cero,
separadores de línea, sustitutos sueltos) y ocupa como mucho 200 bytes en UTF-8.

``bare_name_problem`` dice por qué un nombre no vale (el trabajo se rechaza); ``safe_name``
convierte cualquier texto de un servidor en un nombre válido (nunca se publica crudo).

Dentro de un directorio propio del daemon (el aislado de una descarga) basta una regla más
floja, ``path_component_problem``: un solo componente, sin ``/``, ``\\`` ni NUL, que no sea
``.`` ni ``..`` (un nombre oculto como ``.clip.part`` vale). ``safe_filename_in`` la aplica.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "bare_name_problem", "path_component_problem", "safe_filename_in", "safe_name"]

MAX_NAME_BYTES = 200
# Cc: controles; Cf: formato (bidi, anchura cero, BOM, guion suave); Cs: sustitutos;
# Zl/Zp: separadores de línea y párrafo.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_MAX_EXTENSION = 16


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _shape_problem(value: str) -> str | None:
    """Lo común a toda regla de nombre: no vacío, no ``.``/``..``, sin separadores de ruta."""
    if not value or value in (".", ".."):
        return "it is empty or only dots"
    if "/" in value or "\\" in value:
        return "it contains '/' or '\\'"
    return None


def path_component_problem(value: str) -> str | None:
    """Qué le falta a ``value`` para ser un solo componente de ruta seguro, o None si lo es."""
    problem = _shape_problem(value)
    if problem is None and "\x00" in value:
        problem = "it contains a NUL character"
    return problem


def safe_filename_in(directory: Path, filename: str) -> Path:
    """``directory/filename`` si ``filename`` es un solo componente (``path_component_problem``);
    si no, ``ValueError`` con qué dar en su lugar."""
    if not isinstance(filename, str) or path_component_problem(filename) is not None:
        raise ValueError(f"{filename!r} is not a bare file name; give a name without any path, like clip.mp4")
    return directory / filename


def bare_name_problem(value: str) -> str | None:
    """Qué le falta a ``value`` para ser un nombre de archivo simple, o None si ya lo es."""
    problem = _shape_problem(value)
    if problem is not None:
        return problem
    if value.startswith("."):
        return "it starts with '.'"
    # ASCII imprimible (lo común) no tiene nada de _UNSAFE_CATEGORIES: sin mirar carácter a carácter.
    if not (value.isascii() and value.isprintable()) and any(_unsafe(ch) for ch in value):
        return "it contains control, invisible or bidi characters"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is over {MAX_NAME_BYTES} bytes"
    return None


def safe_name(raw: str | None, fallback: str = "download") -> str:
    """Convierte un nombre ajeno en uno que cumple ``bare_name_problem``: nunca se usa crudo.

    Se queda con el último componente de la ruta, normaliza a NFC, cambia cada carácter
    peligroso por ``_``, quita espacios de los bordes y puntos iniciales, y recorta a 200
    bytes conservando la extensión. Si no queda nada, ``fallback`` (saneado igual).
    """
    name = _clean(raw or "")
    if not name:
        name = _clean(fallback) or "download"
    assert bare_name_problem(name) is None, name
    return name


def _clean(raw: str) -> str:
    name = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join("_" if _unsafe(ch) else ch for ch in name)
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        name = _shorten(name)
    return name


def _shorten(name: str) -> str:
    """Recorta a ``MAX_NAME_BYTES`` sin partir un carácter y conservando una extensión corta."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXTENSION:
        stem, dot, ext = name, "", ""
    budget = MAX_NAME_BYTES - len((dot + ext).encode("utf-8"))
    encoded = stem.encode("utf-8")[:budget]
    stem = encoded.decode("utf-8", "ignore").rstrip()
    return stem + dot + ext
