"""El aviso de una parada pedida: qué se espera, cuánto, y que una segunda señal para al instante."""

from __future__ import annotations

import contextlib
import os

from daemon.config import Settings, shown_value
from daemon.events import get_logger

__all__ = ["announce_stop"]

_log = get_logger()


def announce_stop(name: str, second: bool, running: int, queued: int, settings: Settings) -> None:
    """Lo dice en stderr (una terminal, el journal) y en el evento ``daemon.stop_requested``."""
    grace = settings.shutdown_grace
    if second:
        text = (f"{name} again: stopping now; {running} running download(s) are interrupted and requeued "
                "(they resume on the next start); a download already being published finishes first")
    elif running and grace > 0:
        text = (f"{name}: stopping; waiting up to {shown_value(settings, 'shutdown_grace')} "
                f"(shutdown_grace) for {running} running download(s) to finish, then they are requeued. "
                "Press Ctrl-C again (or send SIGTERM again) to stop now and requeue them")
    elif running:
        text = f"{name}: stopping now (shutdown_grace is 0); {running} running download(s) are requeued"
    else:
        text = f"{name}: stopping; nothing is running" + (f", {queued} queued job(s) go back to incoming/"
                                                          if queued else "")
    with contextlib.suppress(OSError, ValueError):
        os.write(2, f"videonote-dl: {text}\n".encode())
    _log.info("daemon.stop_requested", signal=name, running=running, queued=queued,
              grace_s=0.0 if second else grace, immediate=second)
