"""Memoria libre de vuelta al sistema: ``malloc_trim(0)`` de glibc.

Un proceso de larga vida no devuelve solo la memoria que liberó: lo que dejaron una ráfaga de
miles de trabajos (listados, lecturas, eventos) o la carga de la tabla de extractores se queda en
el montículo. ``release_freed_memory`` la devuelve; sin glibc no hace nada.
"""

from __future__ import annotations

__all__ = ["release_freed_memory"]


def release_freed_memory() -> None:
    """Devuelve al sistema las páginas libres del montículo de malloc (glibc); si no hay, nada."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
