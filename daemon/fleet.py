"""Varios daemons (y varios hosts) sobre un spool: cómo se vigila y el barrido de pares muertos.

- ``start_watching``: inotify, o sólo reescaneos (``watch: poll``, o ``auto`` sobre NFS, CIFS o
  CephFS, donde inotify no ve lo que escriben otros hosts). Avisa si ``temp_dir`` no es local.
- ``peer_sweep_loop``: cada ``rescan_interval``, la misma prueba del cerrojo que al arrancar; los
  reclamos de un daemon muerto vuelven a incoming/ mientras los demás siguen vivos.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from daemon.config import Settings
from daemon.events import get_logger
from daemon.fs_kind import choose_watch, fs_kind
from daemon.intake import Intake
from daemon.outcomes import Outcomes
from daemon.recovery import sweep_dead_peers
from daemon.spool import Spool
from daemon.watcher import SpoolWatcher

__all__ = ["peer_sweep_loop", "start_watching"]

_log = get_logger()


def start_watching(settings: Settings, spool: Spool, wake: Callable[[str], None],
                   observe: dict[str, Callable[[str, bool, bool, bool], None]] | None = None) -> SpoolWatcher | None:
    """Arranca la vigilancia inotify, o nada si el modo efectivo es ``poll`` (lo dice un evento)."""
    mode, reason = choose_watch(settings.watch, settings.spool_dir)
    _log.info("spool.watch_mode", watch=mode, configured=settings.watch, reason=reason,
              rescan_interval_s=settings.rescan_interval)
    temp_fs = fs_kind(settings.temp_dir).network
    if temp_fs is not None:
        _log.warning("daemon.error", where="temp_dir", error=f"temp_dir {settings.temp_dir} is on {temp_fs}; put "
                     "it on a local disk (each host its own): temp dirs are locked and reaped per host")
    if mode != "inotify":
        return None
    watcher = SpoolWatcher({"incoming": spool.incoming, "cancel": spool.cancel}, wake, observe=observe)
    watcher.start()
    return watcher


class _Daemon(Protocol):
    settings: Settings
    intake: Intake | None


async def peer_sweep_loop(daemon: _Daemon, outcomes: Outcomes, stop: asyncio.Event,
                          requeued: Callable[[], None]) -> None:
    """Cada ``rescan_interval``: los reclamos de un daemon muerto (cerrojo libre) vuelven a incoming/.

    Un par muerto queda recuperado, a lo sumo, un ``rescan_interval`` después de morir; ``requeued``
    (pedir un escaneo) hace que sus trabajos se reclamen enseguida.
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(daemon.settings.rescan_interval):
                await stop.wait()
        if stop.is_set() or daemon.intake is None:
            return
        if sweep_dead_peers(outcomes, daemon.intake.limits(), daemon.settings.temp_dir):
            daemon.intake.relist_wanted = True
            requeued()
