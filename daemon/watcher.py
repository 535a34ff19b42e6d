"""Vigilancia de incoming/ y cancel/ con watchdog (inotify): los eventos sólo despiertan un escaneo.

Los eventos son pistas; el directorio es la verdad. El manejador nunca lanza (una excepción
mataría en silencio el hilo de despacho de watchdog) y la salud del observador se comprueba:
si murió, o si la carpeta vigilada fue reemplazada, se reinicia.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

__all__ = ["SpoolWatcher"]


class _WakeHandler(FileSystemEventHandler):
    def __init__(self, wake: Callable[[str], None], label: str) -> None:
        self._wake = wake
        self._label = label

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type not in ("opened", "closed_no_write"):
                self._wake(self._label)
        except Exception:  # nunca dejar que una excepción mate el hilo de despacho
            pass


class SpoolWatcher:
    """Observa carpetas y llama ``wake(label)`` (desde otro hilo) ante cualquier cambio."""

    def __init__(self, folders: dict[str, Path], wake: Callable[[str], None]) -> None:
        self.folders = folders
        self.wake = wake
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._identity: dict[str, tuple[int, int]] = {}
        self.restarts = 0

    def start(self) -> None:
        observer = Observer()
        for label, folder in self.folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            st = os.stat(folder)
            self._identity[label] = (st.st_dev, st.st_ino)
            observer.schedule(_WakeHandler(self.wake, label), str(folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def health_problem(self) -> str | None:
        """Por qué el observador no está sano (o None si lo está)."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return "observer thread is not running"
        for emitter in list(observer.emitters):
            if not emitter.is_alive():
                return f"emitter for {emitter.watch.path} died"
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
