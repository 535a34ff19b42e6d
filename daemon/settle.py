"""Cuándo un archivo de incoming/ está completo: llegó por rename, o su escritor terminó y reposó.

El protocolo es escribir en tmp/ y renombrar; pero cp, un editor, ``curl -o`` o ``cat >``
escriben en el sitio. Las pistas de inotify (que el vigilante pasa a ``observe``) dicen cómo llegó
cada nombre:

- ``IN_MOVED_TO``: llegó por rename, está completo; se reclama ya.
- ``IN_CREATE``: se está escribiendo en el sitio; se espera a su ``IN_CLOSE_WRITE``.
- ``IN_CLOSE_WRITE``: el escritor lo cerró; se reclama cuando no cambió durante ``settle``
  (mtime y ctime), por si lo vuelve a abrir (``echo >>``).

Un nombre sin pistas (hallado por un reescaneo, en modo poll o al arrancar) se reclama cuando su
mtime y su ctime tienen más de ``settle``. Un nombre que se está escribiendo y no cambia en
``_WRITING_LIMIT`` segundos se trata como cerrado (un evento perdido no lo deja atascado).
"""

from __future__ import annotations

import threading
import time

__all__ = ["ArrivalTracker"]

_WRITING_LIMIT = 600.0


class ArrivalTracker:
    """Lo que inotify dijo de cada nombre de incoming/; seguro entre el hilo lector y el bucle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}  # nombre -> "renamed" | "writing" | "closed"
        self._fresh: set[str] = set()  # los anotados desde que empezó el último listado (``mark``)

    def observe(self, name: str, moved_to: bool, created: bool, closed: bool) -> None:
        """Anota un evento de inotify (lo llama el hilo lector: nunca lanza)."""
        kind = "renamed" if moved_to else "writing" if created else "closed" if closed else None
        if kind is None or not name:
            return
        with self._lock:
            self._state[name] = kind
            self._fresh.add(name)

    def mark(self) -> None:
        """Empieza un listado de incoming/: lo que se anote desde ahora no lo olvida el ``prune`` que
        le sigue (un nombre que llegó durante el listado no está en él, pero sí en incoming/)."""
        with self._lock:
            self._fresh = set()

    def forget(self, name: str) -> None:
        with self._lock:
            self._state.pop(name, None)
            self._fresh.discard(name)
            if not self._state:  # tras una ráfaga: un dict o un set vacío no devuelve su tabla, uno nuevo sí
                self._state, self._fresh = {}, set()

    def prune(self, present: set[str]) -> None:
        """Olvida los nombres que ya no están en incoming/ (``present``: el listado que empezó en el
        último ``mark``; lo anotado después se guarda)."""
        with self._lock:
            fresh = self._fresh
            for name in [n for n in self._state if n not in present and n not in fresh]:
                del self._state[name]

    def wait_for(self, name: str, mtime_ns: int, ctime_ns: int, settle: float, now: float | None = None) -> float:
        """Segundos que faltan para poder reclamar ``name`` (0: ya)."""
        if settle <= 0:
            return 0.0
        with self._lock:
            kind = self._state.get(name)
        if kind == "renamed":
            return 0.0
        now = time.time() if now is None else now
        age = now - max(mtime_ns, ctime_ns) / 1e9
        if kind == "writing":
            # Se espera al cierre (que trae su propio evento); el límite sólo cubre un evento perdido.
            return max(0.0, _WRITING_LIMIT - age) or 0.0
        return max(0.0, settle - age)
