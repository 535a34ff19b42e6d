"""La orden ``videonote-dl cancel ID``: deja ``cancel/<id>`` y espera la respuesta del daemon.

Respuestas: cancelado (0); tarde, porque ya publicaba o ya terminó (1); ningún trabajo vivo ni en
cola con ese id (3: el marcador se queda ``producers.cancel_ttl`` por si el trabajo llega); el
daemon lo rechazó porque el trabajo es de otro usuario (4).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.config import Settings
from daemon.exit_codes import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_PERMISSION
from daemon.submit import write_into_spool

__all__ = ["cmd_cancel", "record_outcome", "terminal_record"]

_FOREIGN_MARKER_WAIT = 5.0


def terminal_record(settings: Settings, job_id: str) -> Path | None:
    for folder in ("done", "failed"):
        path = settings.spool_dir / folder / f"{job_id}.json"
        if path.exists():
            return path
    return None


def record_outcome(path: Path) -> str:
    try:
        return str(orjson.loads(path.read_bytes()).get("outcome", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def _marker_owner(marker: Path) -> int | None:
    try:
        return os.stat(marker, follow_symlinks=False).st_uid
    except OSError:
        return None


def _marker_mtime(marker: Path) -> float:
    """El mtime del marcador recién puesto (ahora, si ya no está)."""
    try:
        return os.stat(marker, follow_symlinks=False).st_mtime
    except OSError:
        return time.time()


def _place_marker(settings: Settings, job_id: str) -> bool:
    """Deja ``cancel/<id>``; si hay uno de otro usuario, espera a que el daemon lo atienda.
    False si sigue ahí (el daemon no lo retira)."""
    marker = settings.spool_dir / "cancel" / job_id
    deadline = time.monotonic() + _FOREIGN_MARKER_WAIT
    while True:
        owner = _marker_owner(marker)
        if owner == os.geteuid():
            return True
        if owner is None:
            try:
                _create_marker(settings, marker)
                return True
            except FileExistsError:
                continue
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _create_marker(settings: Settings, marker: Path) -> None:
    """Un marcador vacío no tiene nada a medio escribir: se crea en su sitio, con O_EXCL|O_NOFOLLOW."""
    if not marker.parent.is_dir():
        write_into_spool(settings, "cancel", marker.name, b"")  # dice qué falta (spool sin crear)
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except PermissionError:
        write_into_spool(settings, "cancel", marker.name, b"")  # el mismo mensaje de permisos que submit
        return
    os.close(fd)


def cmd_cancel(settings: Settings, job_id: str, timeout: float, alive: Callable[[dict[str, Any]], bool]) -> int:
    from daemon.status import read_status

    finished = terminal_record(settings, job_id)
    if finished is not None:
        late = "too late: " if finished.parent.name == "done" else ""
        print(f"{late}job {job_id} already finished as {record_outcome(finished)} (see {finished})", file=sys.stderr)
        return EXIT_FAILED
    if not _place_marker(settings, job_id):
        print(f"another user's cancel request for {job_id} is still pending and the daemon has not answered it; "
              "try again in a moment (is the daemon running?)", file=sys.stderr)
        return EXIT_FAILED
    placed = time.time()
    # Un productor no suele poder leer el estado (grupo videonote-dl): entonces sólo se espera el
    # registro. El marcador ya está puesto: fallar aquí diría "denegado" de una petición hecha.
    status_readable = True
    try:
        first = read_status(settings.status_file) or {}
    except PermissionError:
        status_readable, first = False, {}
    if timeout <= 0 or (status_readable and not alive(first)):
        print(f"cancel requested for {job_id}")
        return EXIT_OK
    # El registro terminal dice qué pasó. Pasado el punto de no retorno (publicando) la
    # cancelación llega tarde y el trabajo termina succeeded.
    marker = settings.spool_dir / "cancel" / job_id
    # El daemon retira por caducidad el marcador de un id que nadie tiene cuando su edad (por su mtime)
    # pasa de ``cancel_ttl``; uno rechazado, en cuanto lo ve. Con el daemon lento o un ttl corto, el
    # estado puede no llegar a mostrar el id como desconocido: la caducidad también lo dice.
    expires_at = _marker_mtime(marker) + settings.producers.cancel_ttl
    deadline = time.monotonic() + timeout
    record: Path | None = None
    while time.monotonic() < deadline:
        record = terminal_record(settings, job_id)
        if record is not None:
            break
        status = (read_status(settings.status_file) or {}) if status_readable else {}
        ttl = settings.written.get("producers.cancel_ttl", "5m")
        if job_id in (status.get("cancel_unknown") or ()) and _updated_after(status, placed):
            print(f"no live or queued job {job_id}: nothing to cancel now. The request stays for "
                  f"producers.cancel_ttl ({ttl}) and cancels a job {job_id} of yours that arrives in that time; "
                  f"check the id (`videonote-dl show {job_id}`)", file=sys.stderr)
            return EXIT_NOT_FOUND
        if time.time() > expires_at and _marker_owner(marker) is None and terminal_record(settings, job_id) is None:
            print(f"no live or queued job {job_id} arrived within producers.cancel_ttl ({ttl}): the request "
                  f"expired; check the id (`videonote-dl show {job_id}`)", file=sys.stderr)
            return EXIT_NOT_FOUND
        time.sleep(0.05)
    if record is None:
        if _marker_owner(marker) is None:
            print(f"the daemon refused to cancel {job_id}: only the job's submitter, root or a member of the admin "
                  "group (producers.admin_group) may cancel it", file=sys.stderr)
            return EXIT_PERMISSION
        print(f"cancel requested for {job_id} (the daemon has not answered yet; see `videonote-dl show {job_id}`)")
        return EXIT_OK
    if record.parent.name == "done":
        print(f"too late: job {job_id} was already being published and finished as succeeded (see {record})",
              file=sys.stderr)
        return EXIT_FAILED
    outcome = record_outcome(record)
    if outcome == "cancelled":
        print(f"cancelled {job_id} (see {record})")
        return EXIT_OK
    print(f"job {job_id} ended as {outcome} before the cancel took effect (see {record})", file=sys.stderr)
    return EXIT_FAILED


def _updated_after(status: dict[str, Any], when: float) -> bool:
    from datetime import datetime

    try:
        updated = datetime.fromisoformat(str(status.get("updated_at")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return updated >= when
