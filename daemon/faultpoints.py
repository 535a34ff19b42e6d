"""Puntos de caída instrumentados, sólo para las pruebas de fiabilidad.

Con ``VIDEONOTE_DL_TEST_HOOKS=1`` y ``VIDEONOTE_DL_CRASH_AT=<punto>[:N]``, el proceso se mata a sí
mismo con SIGKILL la N-ésima vez (1 por defecto) que pasa por ``<punto>``. Sin esas variables,
``crash_point`` no hace nada (una comparación).
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "crash_point"]

CRASH_POINTS = (
    "after_claim",       # archivo movido a active/, aún sin analizar
    "mid_download",      # parte del cuerpo escrita en download.part
    "before_publish",    # descarga completa y verificada, sin publicar
    "after_publish",     # publicado con link(), sin registro terminal
    "mid_record_write",  # registro escrito en tmp/, sin enlazar en done/
    "mid_cleanup",       # registro escrito, directorio temporal aún sin borrar
)


def _configured() -> tuple[str | None, int]:
    if os.environ.get("VIDEONOTE_DL_TEST_HOOKS") != "1":
        return None, 0
    spec = os.environ.get("VIDEONOTE_DL_CRASH_AT", "")
    name, _, count = spec.partition(":")
    return (name or None), int(count or 1)


_POINT, _AT = _configured()
_hits = 0


def crash_point(name: str) -> None:
    """Mata el proceso aquí si las pruebas lo pidieron para ``name``."""
    global _hits
    if _POINT is None or name != _POINT:
        return
    _hits += 1
    if _hits >= _AT:
        os.kill(os.getpid(), signal.SIGKILL)
