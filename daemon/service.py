"""El daemon: cablea spool, vigilante, gestor de descargas, recolector, estado y systemd.

Un solo bucle asyncio hace todo el trabajo; los manejadores de señales sólo marcan eventos.
SIGHUP recarga la configuración y reabre el registro; SIGTERM/SIGINT paran con gracia
(``shutdown_grace``), devolviendo a incoming/ lo que no terminó (con sus temporales para
reanudar); una segunda señal para al instante, devolviendo igual los trabajos.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from daemon import __version__
from daemon.claimed_job import LiveJobs
from daemon.config import ConfigError, Settings, load_settings, restart_required_changes, settings_diff
from daemon.downloader_registry import DownloaderRegistry
from daemon.downloaders.download_manager import DownloadManager, DownloadTask
from daemon.events import get_logger, reopen_event_log, set_log_level
from daemon.file_io import choose_file_io
from daemon.fleet import peer_sweep_loop, start_watching
from daemon.intake import Intake
from daemon.outcomes import Outcomes, iso_time
from daemon.reaper import reap_staging, reap_temp_root
from daemon.recovery import recover_orphaned_claims
from daemon.spool import Spool
from daemon.status import write_status
from daemon.stop_notice import announce_stop
from daemon.systemd import SystemdNotifier
from daemon.temp_manager import TempManager
from daemon.watcher import SpoolWatcher

__all__ = ["Daemon", "run_daemon"]

_log = get_logger()


class Daemon:
    """El proceso supervisor. ``await Daemon(settings).run()`` devuelve el código de salida."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.notifier = SystemdNotifier()
        self.started_at = time.time()
        self.live: LiveJobs = {}
        self.outcomes = Outcomes(self.spool, self.live, self._outcome_changed)
        self.manager: DownloadManager | None = None
        self.intake: Intake | None = None
        self.registry: DownloaderRegistry | None = None
        self.watcher: SpoolWatcher | None = None
        self._scan_wanted = asyncio.Event()
        self._cancel_wanted = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._reload = asyncio.Event()
        self._claiming = True
        self._first_scan_done = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metrics: Any = None  # daemon.metrics.MetricsServer, si metrics.listen está puesto

    @property
    def counts(self) -> dict[str, int]:
        return self.outcomes.counts

    # --- ciclo principal ------------------------------------------------------------------
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        TempManager.set_temp_root(s.temp_dir)
        s.output_dir.mkdir(parents=True, exist_ok=True)
        self.spool.prepare()
        _log.info("daemon.starting", version=__version__, pid=os.getpid(), instance=self.spool.instance,
                  config=str(s.source) if s.source else "(embedded defaults)", spool=str(s.spool_dir))
        self._install_signals()
        file_io = choose_file_io(s.file_io, {"spool_dir": s.spool_dir, "temp_dir": s.temp_dir,
                                             "output_dir": s.output_dir})
        _log.info("daemon.file_io", file_io=file_io.mode, configured=s.file_io, reason=file_io.reason)
        self.registry = DownloaderRegistry(s, file_io)
        self.manager = DownloadManager(
            self.registry.downloaders, s.output_dir, max_concurrent=s.max_concurrent, temp_root=s.temp_dir,
            progress_interval=s.download.progress_interval, on_outcome=self.outcomes.conclude,
            on_finished=self._task_finished, resolve_auto=self.registry.resolve_auto,
            max_running_per_owner=s.max_running_per_submitter, file_io=file_io,
        )
        self.intake = Intake(lambda: self.settings, self.manager, self.outcomes, self.registry, self.live,
                             wake=self._scan_wanted.set)
        await self._start_metrics()
        recover_orphaned_claims(self.outcomes, self.intake.limits(), s.temp_dir)
        self._sweep_staging(max_age=0.0)
        self.watcher = start_watching(s, self.spool, self._wake, observe={"incoming": self.intake.arrivals.observe})
        workers = [
            self._spawn(self._scan_loop, "scan"),
            self._spawn(self._cancel_loop, "cancel"),
            self._spawn(self._status_loop, "status"),
            self._spawn(self._reaper_loop, "reaper"),
            self._spawn(self._health_loop, "health"),
            self._spawn(self._reload_loop, "reload"),
            self._spawn(lambda: peer_sweep_loop(self, self.outcomes, self._stop, self._scan_wanted.set), "peer_sweep"),
        ]
        if self.notifier.watchdog_interval:
            interval = self.notifier.watchdog_interval
            workers.append(self._spawn(lambda: self._watchdog_loop(interval), "watchdog"))
        self._scan_wanted.set()
        self._cancel_wanted.set()
        self._write_status()
        self.notifier.ready(self._status_text())
        tools = await asyncio.to_thread(self.registry.tools)  # ffmpeg, deno, yt-dlp en uso (issue 16)
        _log.info("daemon.ready", instance=self.spool.instance, max_concurrent=s.max_concurrent,
                  temp_dir=str(s.temp_dir), output_dir=str(s.output_dir), **tools)
        await self._stop.wait()
        await self._shutdown(workers)
        await self._stop_metrics()
        return 0

    # --- métricas (daemon.metrics): observan el flujo de eventos; el estado se lee al servir --
    async def _start_metrics(self) -> None:
        if self.settings.metrics.listen is not None:
            from daemon.metrics import start_metrics

            self._metrics = await start_metrics(self.settings.metrics.listen, self._metrics_state, __version__)

    def _metrics_state(self) -> Any:
        from daemon.metrics import MetricsState

        m = self.manager
        return MetricsState(queued=m.queued if m else 0, incoming_waiting=self._incoming_waiting(),
                            running=m.running if m else 0, max_concurrent=self.settings.max_concurrent)

    async def _stop_metrics(self) -> None:
        if self._metrics is not None:
            from daemon.metrics import stop_metrics

            await stop_metrics(self._metrics)
            self._metrics = None

    def _spawn(self, loop_factory: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
        """Arranca un bucle auxiliar; si lanza, se registra y se vuelve a arrancar."""

        async def guarded() -> None:
            while True:
                try:
                    await loop_factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _log.exception("daemon.error", where=name, error=repr(exc))
                    await asyncio.sleep(1.0)

        return asyncio.get_running_loop().create_task(guarded(), name=name)

    # --- señales --------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        if os.environ.get("VIDEONOTE_DL_TEST_HOOKS") == "1":
            # Gancho de pruebas: SIGUSR2 bloquea el bucle (prueba del watchdog de systemd).
            loop.add_signal_handler(signal.SIGUSR2, lambda: loop.call_soon(time.sleep, 3600))

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        second = self._stop.is_set()
        if self._stop.is_set():
            self._stop_now.set()
        self._stop.set()
        self._claiming = False
        self._announce_stop(sig, second)

    def _announce_stop(self, sig: signal.Signals, second: bool) -> None:
        m = self.manager
        announce_stop(sig.name, second, m.running if m else 0, m.queued if m else 0, self.settings)

    # --- escaneo y reclamo ----------------------------------------------------------------
    def _wake(self, label: str) -> None:
        """Llamado desde el hilo de watchdog."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._woken, label)

    def _woken(self, label: str) -> None:
        if self.watcher is not None:
            self.watcher.acknowledge(label)  # antes de escanear: lo que llegue ahora vuelve a avisar
        if label != "cancel" and self.intake is not None:
            self.intake.relist_wanted = True
        (self._cancel_wanted if label == "cancel" else self._scan_wanted).set()

    async def _scan_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.rescan_interval):
                    await self._scan_wanted.wait()
            self._scan_wanted.clear()
            if self._claiming:
                await self._scan_once()
            self._first_scan_done.set()

    async def _scan_once(self) -> None:
        assert self.intake is not None
        if await self.intake.scan_once(lambda: self._claiming):
            self._status_dirty.set()

    # --- desenlaces ------------------------------------------------------------------------
    def _task_finished(self, task: DownloadTask) -> None:
        self.outcomes.finished(task, stopping=self._stop.is_set())

    def _outcome_changed(self) -> None:
        self._status_dirty.set()
        if not self._stop.is_set():
            self._scan_wanted.set()  # hay sitio en la cola: mirar incoming/

    def _incoming_waiting(self) -> int:
        return self.intake.incoming_waiting if self.intake is not None else 0

    # --- cancelaciones --------------------------------------------------------------------
    async def _cancel_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.rescan_interval):
                    await self._cancel_wanted.wait()
            self._cancel_wanted.clear()
            await self._process_cancels()

    async def _process_cancels(self) -> None:
        assert self.intake is not None
        await self.intake.process_cancels()

    # --- recolector, salud, estado, watchdog ----------------------------------------------
    async def _reaper_loop(self) -> None:
        # La primera pasada espera al primer escaneo: los trabajos devueltos a incoming/ tras una
        # caída ya están reclamados y sus directorios (para reanudar) quedan fuera de la pasada.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._first_scan_done.wait()
        while not self._stop.is_set():
            await asyncio.get_running_loop().run_in_executor(
                None, reap_temp_root, self.settings.temp_dir, self.settings.reaper.max_age, set(self.live)
            )
            await asyncio.get_running_loop().run_in_executor(None, self._sweep_staging,
                                                             self.settings.reaper.max_age)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.reaper.interval):
                    await self._stop.wait()

    def _sweep_staging(self, max_age: float) -> None:
        reap_staging(self.settings.output_dir, max_age, lambda job_id: self.spool.terminal_record(job_id) is not None)

    async def _health_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.settings.rescan_interval, 2.0)):
                    await self._stop.wait()
            if self.watcher is None or self._stop.is_set():
                continue
            problem = self.watcher.health_problem()
            if problem is not None:
                self.watcher.restart()
                _log.warning("spool.watcher_restarted", reason=problem, restarts=self.watcher.restarts)
                self._scan_wanted.set()

    async def _status_loop(self) -> None:
        while True:
            # Con descargas en marcha, una foto por segundo (0,5 s de espera + 0,5 s de pausa): el
            # progreso que muestra `status --watch` nunca tiene más de ~1 s. Ocioso: cada 5 s o al cambiar.
            busy = self.manager is not None and self.manager.running > 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5 if busy else 5.0):
                    await self._status_dirty.wait()
            self._status_dirty.clear()
            self._write_status()
            self.notifier.status(self._status_text())
            await asyncio.sleep(0.5)

    async def _watchdog_loop(self, interval: float) -> None:
        while True:
            self.notifier.watchdog_ping()
            await asyncio.sleep(interval)

    def _status_text(self) -> str:
        m = self.manager
        running, queued = (m.running, m.queued) if m else (0, 0)
        c = self.counts
        return (f"running {running}, queued {queued + self._incoming_waiting()}, done {c['done']}, "
                f"failed {c['failed'] + c['cancelled']}, rejected {c['rejected']}; "
                f"max_concurrent {self.settings.max_concurrent}")

    def _write_status(self, state: str = "running") -> None:
        m = self.manager
        status = {
            "state": state, "pid": os.getpid(), "instance": self.spool.instance, "version": __version__,
            "started_at": iso_time(self.started_at), "updated_at": iso_time(time.time()),
            "uptime_s": round(time.time() - self.started_at, 1),
            "config": str(self.settings.source) if self.settings.source else None,
            "max_concurrent": self.settings.max_concurrent,
            "running": m.snapshot() if m else [], "queued": m.queued if m else 0,
            "incoming_waiting": self._incoming_waiting(), "counts": dict(self.counts),
            "last_scan": iso_time(self.intake.last_scan) if self.intake and self.intake.last_scan else None,
            "watcher_restarts": self.watcher.restarts if self.watcher else 0,
            "cancel_unknown": sorted(self.intake.unknown_cancels)[:1000] if self.intake else [],
            "spool_dir": str(self.settings.spool_dir), "event_log": str(self.settings.event_log),
        }
        try:
            write_status(self.settings.status_file, status)
        except OSError as exc:
            _log.warning("daemon.error", where="status_file", error=exc.strerror or str(exc))

    # --- recarga --------------------------------------------------------------------------
    async def _reload_loop(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self.reload()

    def reload(self) -> None:
        """Relee la configuración y aplica lo que puede cambiar en caliente."""
        self.notifier.reloading()
        reopen_event_log()
        source = self.settings.source
        try:
            new = load_settings(source) if source else self.settings
        except ConfigError as exc:
            _log.error("config.reload_failed", error=str(exc), kept=str(source))
            self.notifier.ready(self._status_text())
            return
        changed = settings_diff(self.settings, new)
        restart = restart_required_changes(self.settings, new)
        live = {k for k in changed if k not in restart}
        kept = {key: getattr(self.settings, key) for key in
                ("spool_dir", "temp_dir", "output_dir", "event_log", "status_file")}
        self.settings = replace(new, **kept)
        set_log_level(self.settings.log_level)
        if self.manager is not None:
            self.manager.set_max_concurrent(self.settings.max_concurrent, self.settings.max_running_per_submitter)
            self.manager.progress_interval = self.settings.download.progress_interval
        _log.info("config.reloaded", changed=sorted(live), restart_required=restart)
        self._status_dirty.set()
        self._write_status()
        self.notifier.ready(self._status_text())

    # --- parada ---------------------------------------------------------------------------
    async def _shutdown(self, workers: list[asyncio.Task[None]]) -> None:
        assert self.manager is not None
        self._claiming = False
        self.notifier.stopping("stopping: finishing running downloads")
        grace = 0.0 if self._stop_now.is_set() else self.settings.shutdown_grace
        self.notifier.extend_timeout(grace + 15.0)  # que systemd no mate antes de acabar la gracia
        _log.info("daemon.stopping", running=self.manager.running, queued=self.manager.queued, grace_s=grace,
                  publishing=self.manager.committed_count())
        pending = await self.manager.shutdown(grace, abort=self._stop_now)
        for task in pending:
            claimed = self.live.pop(task.correlation_id, None)
            if claimed is not None:
                self.outcomes.requeue(claimed, "daemon stopping")
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self.outcomes.requeue_leftover_claims()
        if self.watcher is not None:
            self.watcher.stop()
        if self.registry is not None:
            await self.registry.close()
        self._write_status("stopped")
        self.spool.close()
        # Todo está ya devuelto o registrado: otra señal de parada no debe matar el proceso a medio
        # salir (asyncio restauraría la acción por defecto al cerrar el bucle).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        _log.info("daemon.stopped", counts=dict(self.counts), uptime_s=round(time.time() - self.started_at, 1))


def run_daemon(settings: Settings) -> int:
    """Corre el daemon hasta que lo paren; devuelve el código de salida."""
    return asyncio.run(Daemon(settings).run())
