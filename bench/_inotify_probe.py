"""Sonda de referencia del escenario 3: un observador de watchdog pelado (el mismo que usa el
daemon) en su propio proceso. Por cada archivo que aparece en la carpeta vigilada escribe en
stdout ``nombre ts`` con ``time.time()``: es el suelo de la latencia de recogida.

Uso: ``python -m bench._inotify_probe CARPETA`` (termina al cerrarse stdin).
"""

from __future__ import annotations

import os
import sys
import time

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Handler(FileSystemEventHandler):
    def on_any_event(self, event: FileSystemEvent) -> None:
        now = time.time()
        path = getattr(event, "dest_path", "") or event.src_path
        if event.event_type in ("moved", "created"):
            os.write(1, f"{os.path.basename(str(path))} {now:.6f}\n".encode())


def main() -> int:
    folder = sys.argv[1]
    observer = Observer()
    observer.schedule(_Handler(), folder, recursive=False)
    observer.daemon = True
    observer.start()
    os.write(1, b"READY 0\n")
    sys.stdin.read()  # hasta que el banco cierre stdin
    observer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
