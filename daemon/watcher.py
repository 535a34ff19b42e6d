"""Vigilancia de incoming/ y cancel/ con el lector inotify de watchdog: los eventos sólo despiertan un escaneo.

Los eventos son pistas; el directorio es la verdad. Se usa el ``InotifyFD`` de watchdog (su hilo
lector y sus callbacks) sin el ``Observer`` de alto nivel: éste agrupa los movimientos y retiene
0,5 s cada "salida" sin pareja (justo lo que hace el daemon al reclamar), y todo lo que llega
detrás espera con ella. Aquí sólo se piden las llegadas (IN_MOVED_TO, IN_CREATE,
IN_CLOSE_WRITE): los reclamos del propio daemon no generan eventos. Un desbordamiento de la cola
del kernel despierta un escaneo. Las llamadas a ``wake`` se agrupan: una ráfaga de 10.000
archivos no encola 10.000 despertares.

El callback nunca lanza (una excepción mataría en silencio el hilo lector) y la salud se
comprueba: si el hilo murió, si se perdió una vigilancia o si la carpeta fue reemplazada, se
reinicia.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask

__all__ = ["SpoolWatcher"]

_ARRIVALS = InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_CREATE | InotifyConstants.IN_CLOSE_WRITE
_MASK = _ARRIVALS | InotifyConstants.IN_DELETE_SELF | InotifyConstants.IN_MOVE_SELF | InotifyConstants.IN_ONLYDIR


class _Wake:
    """Callback de una carpeta para el hilo lector de watchdog."""

    def __init__(self, watcher: SpoolWatcher, label: str) -> None:
        self._watcher = watcher
        self._label = label

    def on_event(self, event: InotifyEvent) -> None:
        observe = self._watcher.observe.get(self._label)
        if observe is not None:  # antes de despertar: el escaneo ya ve la pista
            with contextlib.suppress(Exception):
                observe(os.fsdecode(event.name), event.is_moved_to, event.is_create, event.is_close_write)
        self._watcher._notify(self._label)

    def on_watch_deleted(self, _wd: object) -> None:
        self._watcher._lost.add(self._label)
        self._watcher._notify(self._label)

    def on_queue_overflow(self) -> None:
        self._watcher._notify(self._label)


class SpoolWatcher:
    """Observa carpetas y llama ``wake(label)`` (desde el hilo lector) cuando algo llega."""

    def __init__(self, folders: dict[str, Path], wake: Callable[[str], None],
                 observe: dict[str, Callable[[str, bool, bool, bool], None]] | None = None) -> None:
        self.folders = folders
        self.wake = wake
        # Por carpeta, quién recibe cada llegada (nombre, movido, creado, cerrado): la espera de
        # ``producers.settle`` (daemon/settle.py).
        self.observe = observe or {}
        self._reader: InotifyFD | None = None
        self._identity: dict[str, tuple[int, int]] = {}
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._lost: set[str] = set()
        self.restarts = 0

    def start(self) -> None:
        reader = InotifyFD()
        self._lost.clear()
        for number, (label, folder) in enumerate(self.folders.items()):
            folder.mkdir(parents=True, exist_ok=True)
            st = os.stat(folder)
            self._identity[label] = (st.st_dev, st.st_ino)
            reader.add_callback(os.fsencode(folder), Mask(_MASK), _Wake(self, label), CallbackId(number))
        reader.daemon = True
        reader.start()
        self._reader = reader

    def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop()
            reader.join(timeout=5)

    def acknowledge(self, label: str) -> None:
        """El bucle atendió el aviso de ``label``: el próximo evento vuelve a avisar."""
        with self._pending_lock:
            self._pending.discard(label)

    def _notify(self, label: str) -> None:
        """Avisa una vez hasta que el bucle lo atiende; nunca lanza (mataría el hilo lector)."""
        with self._pending_lock:
            if label in self._pending:
                return
            self._pending.add(label)
        try:
            self.wake(label)
        except Exception:
            with self._pending_lock:
                self._pending.discard(label)  # el aviso no llegó: que el próximo evento lo reintente

    def health_problem(self) -> str | None:
        """Por qué la vigilancia no está sana (o None si lo está)."""
        reader = self._reader
        if reader is None or not reader.is_alive():
            return "inotify reader thread is not running"
        if self._lost:
            return f"watch on {', '.join(sorted(self._lost))} was removed (folder deleted or moved)"
        for label, folder in self.folders.items():
            try:
                st = os.stat(folder)
            except FileNotFoundError:
                return f"{label} folder {folder} was deleted"
            if (st.st_dev, st.st_ino) != self._identity.get(label):
                return f"{label} folder {folder} was replaced"
        return None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1
