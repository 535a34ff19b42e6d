"""Seguir un trabajo hasta el final (``submit --wait``): barra de progreso en un TTY, líneas si no."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from daemon.event_reader import EventFilter, read_events
from daemon.units import format_duration, format_size

__all__ = ["ProgressBar", "find_outcome", "wait_for_job"]


class ProgressBar:
    """Barra de una línea con bytes, velocidad y ETA; sin TTY escribe líneas sueltas (como mucho 1/s)."""

    def __init__(self, stream: TextIO, tty: bool, width: int = 30) -> None:
        self.stream = stream
        self.tty = tty
        self.width = width
        self._last_plain = 0.0
        self._drawn = False

    def update(self, done: int, total: int | None, speed: float) -> None:
        eta = format_duration((total - done) / speed) if total and speed > 0 and total > done else "--"
        amount = f"{format_size(done)}/{format_size(total)}" if total else format_size(done)
        rate = f"{format_size(speed)}/s"
        if self.tty:
            fraction = min(done / total, 1.0) if total else 0.0
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            percent = f"{fraction * 100:5.1f}%" if total else "  ?  "
            self.stream.write(f"\r[{bar}] {percent} {amount}  {rate}  ETA {eta}\033[K")
            self.stream.flush()
            self._drawn = True
        elif time.monotonic() - self._last_plain >= 1.0:
            self._last_plain = time.monotonic()
            percent = f" ({done * 100 / total:.1f}%)" if total else ""
            self.stream.write(f"progress {amount}{percent} {rate} eta {eta}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False


def find_outcome(spool: Path, job_id: str) -> tuple[str, dict[str, Any]] | None:
    """(``done``|``failed``|``rejected``, datos) si el trabajo ya terminó."""
    for folder in ("done", "failed"):
        path = spool / folder / f"{job_id}.json"
        if path.exists():
            try:
                return folder, orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError:
                continue
    for suffix in (".yaml", ".yml", ".json"):
        reason = spool / "rejected" / f"{job_id}{suffix}.reason"
        if reason.exists():
            return "rejected", {"reason": reason.read_text(errors="replace").splitlines()[0]}
    return None


def wait_for_job(
    spool: Path, event_log: Path, job_id: str, timeout: float | None = None, out: TextIO | None = None,
    finder: Callable[[], tuple[str, dict[str, Any]] | None] | None = None,
) -> int:
    """Muestra el progreso de ``job_id`` hasta su registro terminal. Devuelve 0 si terminó bien.
    ``finder`` busca el desenlace (por defecto ``find_outcome``; ``submit`` busca el de su archivo)."""
    out = out or sys.stdout
    bar = ProgressBar(out, tty=out.isatty())
    deadline = time.monotonic() + timeout if timeout else None
    events = read_events(event_log, EventFilter(job=job_id), follow=True, poll=0.1, heartbeat=True)
    last_check = 0.0
    try:
        while True:
            now = time.monotonic()
            if now - last_check >= 0.25:
                last_check = now
                outcome = finder() if finder is not None else find_outcome(spool, job_id)
                if outcome is not None:
                    return _report(outcome, bar)
            if deadline is not None and now > deadline:
                bar.message(f"gave up waiting for {job_id} after {timeout:.0f}s; it is still queued or running "
                            "(see `videonote-dl status` or `videonote-dl show " + job_id + "`)")
                return 1
            event = _next_event(events)
            if not event:
                continue
            name = event.get("event")
            if name == "job.progress":
                bar.update(int(event.get("bytes") or 0), event.get("total"), float(event.get("speed") or 0))
            elif name == "job.retrying":
                error = event.get("error") or {}
                bar.message(f"retrying (attempt {event.get('next_attempt')}) in {event.get('delay_s')}s: "
                            f"{error.get('message', '')}")
            elif name == "job.started" and int(event.get("attempt") or 1) == 1:
                bar.message(f"started {job_id}")
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _next_event(events: Any) -> dict[str, Any] | None:
    # Con heartbeat, read_events entrega {} en cada espera: así cada vuelta comprueba el registro.
    # Un productor sin permiso para leer el registro de eventos sigue esperando sólo por los registros.
    try:
        _line, event = next(events)
    except (StopIteration, PermissionError):
        time.sleep(0.25)
        return None
    return dict(event)


def _report(outcome: tuple[str, dict[str, Any]], bar: ProgressBar) -> int:
    folder, data = outcome
    if folder == "done":
        bar.update(int(data.get("size") or 0), data.get("size"), 0.0)
        bar.message(f"done: {data.get('path')} ({format_size(data.get('size') or 0)}, sha256 {data.get('sha256')})")
        return 0
    if folder == "rejected":
        bar.message(f"rejected: {data.get('reason')}")
        return 1
    error = data.get("error") or {}
    bar.message(f"{data.get('outcome', 'failed')}: {error.get('message', 'no reason recorded')}")
    return 1
