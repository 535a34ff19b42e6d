"""Puntos de caída y puntos de pausa instrumentados, sólo para las pruebas de fiabilidad.

Todo está apagado salvo con ``VIDEONOTE_DL_TEST_HOOKS=1``; apagado, cada punto cuesta una
comparación.

- Caídas: con ``VIDEONOTE_DL_CRASH_AT=<punto>[:N]``, el proceso se mata a sí mismo con SIGKILL
  la N-ésima vez (1 por defecto) que pasa por ``<punto>``.
- Pausas: con ``VIDEONOTE_DL_PAUSE_DIR=<carpeta>``, una prueba "arma" el paso S creando el archivo
  ``<carpeta>/S``. El primer trabajo que llega a S lo renombra a ``S.reached`` (escribe dentro
  su id) y espera, sin dormir a ciegas, hasta que aparece ``S.go``; entonces borra ambos y
  sigue. Así una prueba entrega cualquier interrupción en cualquier paso, de forma
  determinista: arma, espera ``S.reached``, interrumpe, crea ``S.go``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

__all__ = ["CRASH_POINTS", "PAUSE_POINTS", "apause_point", "crash_point", "pause_armed", "pause_point"]

CRASH_POINTS = (
    "after_claim",       # archivo movido a active/, aún sin analizar
    "mid_download",      # parte del cuerpo escrita en download.part
    "before_publish",    # descarga completa y verificada, sin publicar
    "after_publish",     # publicado con link(), sin registro terminal
    "mid_record_write",  # registro escrito en tmp/, sin enlazar en done/
    "mid_cleanup",       # registro escrito, directorio temporal aún sin borrar
)

# Los pasos del camino de un trabajo, en orden (docs/design.md, "One job, one outcome").
PAUSE_POINTS = (
    "claimed",            # movido a active/<instancia>/, sin leer
    "parsed",             # leído y validado, aún sin encolar
    "temp_dir_created",   # directorio aislado creado y bloqueado, descarga sin empezar
    "download_complete",  # cuerpo completo en el directorio aislado, sin verificar
    "verifying",          # sha256 comprobado, antes del punto de no retorno
    "publishing",         # pasado el punto de no retorno, antes del link() o la copia
    "published",          # nombre público creado, sin registro terminal
    "recorded",           # registro terminal escrito, directorio aislado sin borrar
    "cleaning",           # a punto de borrar el directorio aislado
)

_HOOKS = os.environ.get("VIDEONOTE_DL_TEST_HOOKS") == "1"
_PAUSE_DIR = os.environ.get("VIDEONOTE_DL_PAUSE_DIR") if _HOOKS else None
_PAUSE_POLL = 0.005
_PAUSE_LIMIT = 120.0  # tope: una prueba rota nunca cuelga el daemon para siempre


def _configured() -> tuple[str | None, int]:
    if not _HOOKS:
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


def _arrive(step: str, job_id: str | None) -> str | None:
    """Si el paso está armado, lo toma (rename atómico) y devuelve la ruta de ``S.go``."""
    assert _PAUSE_DIR is not None
    armed = os.path.join(_PAUSE_DIR, step)
    reached = armed + ".reached"
    try:
        os.rename(armed, reached)
    except FileNotFoundError:
        return None
    with contextlib.suppress(OSError), open(reached, "w") as handle:
        handle.write(job_id or "")
    return armed + ".go"


def _leave(go: str) -> None:
    for path in (go, go[: -len(".go")] + ".reached"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def pause_armed(*steps: str) -> bool:
    """Si una prueba armó alguno de estos pasos (un paso bloqueante armado no puede correr en el bucle)."""
    return _PAUSE_DIR is not None and any(os.path.exists(os.path.join(_PAUSE_DIR, step)) for step in steps)


def pause_point(step: str, job_id: str | None = None) -> None:
    """Versión bloqueante, para pasos que corren en un hilo de trabajo."""
    if _PAUSE_DIR is None:
        return
    go = _arrive(step, job_id)
    if go is None:
        return
    deadline = time.monotonic() + _PAUSE_LIMIT
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(_PAUSE_POLL)
    _leave(go)


async def apause_point(step: str, job_id: str | None = None) -> None:
    """Versión asíncrona, para pasos del bucle: las señales y los demás trabajos siguen."""
    if _PAUSE_DIR is None:
        return
    go = _arrive(step, job_id)
    if go is None:
        return
    deadline = time.monotonic() + _PAUSE_LIMIT
    try:
        while not os.path.exists(go) and time.monotonic() < deadline:
            await asyncio.sleep(_PAUSE_POLL)
    finally:
        _leave(go)
