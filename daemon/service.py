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
from pathlib import Path
from typing import Any

import orjson

from daemon import __version__
from daemon.config import ConfigError, Settings, load_settings, restart_required_changes, settings_diff
from daemon.downloaders.base import Downloader, DownloadOptions
from daemon.downloaders.download_lifecycle import cleanup_download
from daemon.downloaders.download_manager import CancelResult, DownloadManager, DownloadTask, RetryPolicy
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.events import get_logger, reopen_event_log, set_log_level
from daemon.faultpoints import apause_point, crash_point
from daemon.ids import new_correlation_id
from daemon.jobs import JobLimits, JobRejected, JobSpec, parse_job
from daemon.publish import sweep_staging
from daemon.reaper import reap_temp_root
from daemon.spool import Spool
from daemon.status import write_status
from daemon.systemd import SystemdNotifier
from daemon.temp_manager import TempManager
from daemon.text import printable
from daemon.watcher import SpoolWatcher

__all__ = ["Daemon", "run_daemon"]

_log = get_logger()
_SCAN_INLINE_LIMIT = 2000
_CLAIM_BATCH = 256
_CANCEL_FORGET_AFTER = 3600.0


class Daemon:
    """El proceso supervisor. ``await Daemon(settings).run()`` devuelve el código de salida."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.notifier = SystemdNotifier()
        self.started_at = time.time()
        self.counts = {"done": 0, "failed": 0, "rejected": 0, "cancelled": 0, "requeued": 0}
        self.manager: DownloadManager | None = None
        self.watcher: SpoolWatcher | None = None
        self._jobs: dict[str, tuple[JobSpec, str, float]] = {}  # id -> (job, nombre reclamado, recibido)
        self._scan_wanted = asyncio.Event()
        self._cancel_wanted = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._reload = asyncio.Event()
        self._claiming = True
        self._first_scan_done = asyncio.Event()
        self._extractor_index_ready = False
        self._index_lock = asyncio.Lock()
        self._last_scan = 0.0
        self._incoming_waiting = 0
        self._last_incoming_size = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._downloaders: dict[str, Downloader] = {}
        self._metrics: Any = None  # daemon.metrics.MetricsServer, si metrics.listen está puesto

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
        self._downloaders = {"http": HttpDownloader(ca_bundle=s.download.ca_bundle)}
        self._add_ytdlp()
        self.manager = DownloadManager(
            self._downloaders, s.output_dir, max_concurrent=s.max_concurrent, temp_root=s.temp_dir,
            progress_interval=s.download.progress_interval, on_outcome=self._conclude,
            on_finished=self._on_finished, resolve_auto=self._resolve_auto,
        )
        await self._start_metrics()
        self._recover()
        self._sweep_staging(max_age=0.0)
        self.watcher = SpoolWatcher({"incoming": self.spool.incoming, "cancel": self.spool.cancel}, self._wake)
        self.watcher.start()
        workers = [
            self._spawn(self._scan_loop, "scan"),
            self._spawn(self._cancel_loop, "cancel"),
            self._spawn(self._status_loop, "status"),
            self._spawn(self._reaper_loop, "reaper"),
            self._spawn(self._health_loop, "health"),
            self._spawn(self._reload_loop, "reload"),
        ]
        if self.notifier.watchdog_interval:
            interval = self.notifier.watchdog_interval
            workers.append(self._spawn(lambda: self._watchdog_loop(interval), "watchdog"))
        self._scan_wanted.set()
        self._cancel_wanted.set()
        self._write_status()
        self.notifier.ready(self._status_text())
        _log.info("daemon.ready", instance=self.spool.instance, max_concurrent=s.max_concurrent,
                  temp_dir=str(s.temp_dir), output_dir=str(s.output_dir))
        await self._stop.wait()
        await self._shutdown(workers)
        await self._stop_metrics()
        return 0

    # --- métricas (daemon.metrics): observan el flujo de eventos; el estado se lee al servir --
    async def _start_metrics(self) -> None:
        listen = self.settings.metrics.listen
        if listen is None:
            return
        from daemon.events import add_event_observer
        from daemon.metrics import DaemonMetrics, MetricsServer

        metrics = DaemonMetrics(self._metrics_state, __version__)
        server = MetricsServer(metrics, listen)
        try:
            await server.start()
        except OSError as exc:
            # Las descargas no dependen de la monitorización: se sigue sin métricas, y se dice alto.
            _log.error("daemon.error", where="metrics", error=f"cannot listen on {listen}: "
                       f"{exc.strerror or exc}; fix metrics.listen in the config and restart")
            return
        add_event_observer(metrics.observe)
        self._metrics = server
        _log.info("metrics.listening", listen=listen, path="/metrics")

    def _metrics_state(self) -> Any:
        from daemon.metrics import MetricsState

        m = self.manager
        return MetricsState(queued=m.queued if m else 0, incoming_waiting=self._incoming_waiting,
                            running=m.running if m else 0, max_concurrent=self.settings.max_concurrent)

    async def _stop_metrics(self) -> None:
        if self._metrics is not None:
            from daemon.events import remove_event_observer

            remove_event_observer(self._metrics.metrics.observe)
            await self._metrics.close()
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

    def _add_ytdlp(self) -> None:
        if not self.settings.ytdlp.enabled:
            return
        try:
            from daemon.downloaders.ytdlp import YtdlpDownloader
        except ImportError as exc:
            _log.warning("daemon.error", where="ytdlp", error=f"yt-dlp downloader unavailable: {exc}")
            return
        y = self.settings.ytdlp
        self._downloaders["ytdlp"] = YtdlpDownloader(kill_grace=y.kill_grace, socket_timeout=y.socket_timeout,
                                                     use_zygote=y.zygote)

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
        """Dice en stderr (una terminal, el journal) y en un evento qué se espera y cuánto, y que una
        segunda señal para al instante devolviendo los trabajos a incoming/."""
        from daemon.config import shown_value

        running = self.manager.running if self.manager else 0
        queued = self.manager.queued if self.manager else 0
        grace = self.settings.shutdown_grace
        name = sig.name
        if second:
            text = (f"{name} again: stopping now; {running} running download(s) are interrupted and requeued "
                    "(they resume on the next start)")
        elif running and grace > 0:
            text = (f"{name}: stopping; waiting up to {shown_value(self.settings, 'shutdown_grace')} "
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

    def request_stop(self, immediately: bool = False) -> None:
        """Para el daemon desde código (pruebas, embebido)."""
        self._claiming = False
        self._stop.set()
        if immediately:
            self._stop_now.set()

    # --- recuperación tras caída ----------------------------------------------------------
    def _recover(self) -> None:
        for source, names in self.spool.orphaned_claims():
            for name in names:
                self._recover_one(source, name)

    def _recover_one(self, source: Path, name: str) -> None:
        job_id = None
        new_name = None
        try:
            data, _st = self._read_any(source / name)
            job = parse_job(data, name, self._limits())
            job_id = job.id
            record = self.spool.terminal_record(job.id)
            if record is not None and self._record_matches(record, job):
                # Terminó justo antes de la caída: sólo faltaba retirar el archivo.
                os.unlink(source / name)
                cleanup_download(job.id, self.settings.temp_dir)
                _log.info("job.recovered", correlation_id=job.id, file=name, record=str(record))
                return
            suffix = os.path.splitext(name)[1]
            new_name = f"{job.id}{suffix}" if job.id_source != "explicit" else None
        except (JobRejected, OSError):
            pass  # se volverá a examinar (y rechazar con motivo) al reclamarlo
        try:
            target = self.spool.requeue(source, name, new_name)
        except OSError as exc:
            _log.error("daemon.error", where="recover", file=name, error=exc.strerror or str(exc))
            return
        self.counts["requeued"] += 1
        _log.info("job.requeued", correlation_id=job_id, file=target, reason="recovered after a crash")

    @staticmethod
    def _read_any(path: Path) -> tuple[bytes, os.stat_result]:
        from daemon.jobs import read_job_file

        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return read_job_file(path.name, fd)
        finally:
            os.close(fd)

    @staticmethod
    def _record_matches(record: Path, job: JobSpec) -> bool:
        try:
            return orjson.loads(record.read_bytes()).get("job_file_sha256") == job.file_sha256
        except (OSError, orjson.JSONDecodeError):
            return False

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
        assert self.manager is not None
        room = self.settings.max_queued - self.manager.queued
        if room <= 0:
            return
        if self._last_incoming_size > _SCAN_INLINE_LIMIT:
            entries = await asyncio.get_running_loop().run_in_executor(None, self.spool.scan_incoming)
        else:
            entries = self.spool.scan_incoming()
        self._last_incoming_size = len(entries)
        self._last_scan = time.time()
        claimed = 0
        for entry in entries:
            if not self._claiming or claimed >= room:
                break
            if self.spool.claim(entry.name):
                crash_point("after_claim")
                claimed += 1
                await apause_point("claimed", entry.name)
                job = self._parse_claimed(entry.name)
                if job is not None:
                    await apause_point("parsed", job.id)
                    self._accept(job, entry.name)
                if claimed % _CLAIM_BATCH == 0:
                    await asyncio.sleep(0)  # dejar respirar al bucle (watchdog, señales)
        self._incoming_waiting = max(0, len(entries) - claimed)
        if claimed:
            self._status_dirty.set()

    def _parse_claimed(self, name: str) -> JobSpec | None:
        """Lee y valida un archivo recién reclamado; si no vale, lo rechaza con motivo y da None."""
        try:
            data, _st = self.spool.read_claimed(name)
            job = parse_job(data, name, self._limits())
            return self._resolve_id_conflicts(job)
        except JobRejected as exc:
            self._reject(name, exc.reason, exc.job_id)
        except Exception as exc:  # nunca dejar un archivo atascado en active/ por un fallo inesperado
            _log.exception("daemon.error", where="accept", file=printable(name), error=repr(exc))
            self._reject(name, f"internal error while reading the job ({type(exc).__name__}); report this "
                               "with the file attached", None)
        return None

    def _accept(self, job: JobSpec, name: str) -> None:
        """Encola un trabajo ya validado (o lo termina si ya pidieron cancelarlo)."""
        assert self.manager is not None
        received = time.time()
        _log.info("job.received", correlation_id=job.id, file=name, url=job.url, downloader=job.downloader,
                  id_source=job.id_source)
        if self.spool.cancel_requested(job.id):
            self._finish_without_running(job, name, received, "cancelled", "cancelled before it started")
            self.spool.consume_cancel(job.id)
            return
        downloader = self._choose_downloader(job)
        if downloader is None:
            self._reject(name, "downloader 'ytdlp' is not available in this daemon; use downloader: http", job.id)
            return
        self._jobs[job.id] = (job, name, received)
        d = self.settings.download
        options = DownloadOptions(
            url=job.url, filename=job.filename, sha256=job.sha256,
            max_bytes=min(job.max_bytes or d.max_bytes, d.max_bytes),
            timeout=job.timeout or d.timeout, headers=dict(job.headers), forward_headers=job.forward_headers,
            format=job.format,
            playlist=job.playlist, allowed_schemes=d.allowed_schemes,
            allow_private_networks=d.allow_private_networks, allowed_networks=d.allowed_networks,
            max_redirects=d.max_redirects,
        )
        retry = RetryPolicy(retries=job.retries if job.retries is not None else d.retries, backoff=d.backoff,
                            max_backoff=d.max_backoff)
        self.manager.submit(job.id, options, downloader=downloader, priority=job.priority, retry=retry,
                            output_subdir=job.output_dir)
        self._status_dirty.set()

    def _resolve_id_conflicts(self, job: JobSpec) -> JobSpec:
        assert self.manager is not None
        live = job.id in self.manager.tasks or job.id in self._jobs
        finished = self.spool.terminal_record(job.id)
        if not live and finished is None:
            return job
        if job.id_source == "explicit":
            if live:
                raise JobRejected(f"a job with id {job.id!r} is already queued or running; wait for it "
                                  "or choose another id", job.id)
            raise JobRejected(f"id {job.id!r} already finished (see {finished}); submit with a new id "
                              f"or run `videonote-dl retry {job.id}`", job.id)
        return replace(job, id=f"{job.id[:40]}-{new_correlation_id()[:12]}", id_source="generated")

    async def _warm_extractor_index(self) -> None:
        """Carga el índice de extractores de yt-dlp fuera del bucle (~0,4-1 s una vez por proceso),
        justo antes del primer trabajo: el daemon ocioso no paga esa memoria."""
        from daemon.downloaders.ytdlp import preload_extractors

        try:
            await asyncio.to_thread(preload_extractors)
        except Exception as exc:
            _log.warning("daemon.error", where="ytdlp_index", error=repr(exc))
        self._extractor_index_ready = True

    def _choose_downloader(self, job: JobSpec) -> str | None:
        """El descargador pedido; ``auto`` se resuelve al arrancar la descarga (``_resolve_auto``),
        no al reclamar: una ráfaga se encola sin consultar los extractores de yt-dlp."""
        if job.downloader == "ytdlp" and "ytdlp" not in self._downloaders:
            return None
        if job.downloader == "auto" and "ytdlp" not in self._downloaders:
            return "http"
        return job.downloader

    async def _resolve_auto(self, url: str) -> str:
        """``auto`` -> ``ytdlp`` si un extractor de yt-dlp (no el genérico) reclama la URL, si no ``http``."""
        from daemon.downloaders.ytdlp import pick_downloader

        if not self._extractor_index_ready:
            async with self._index_lock:  # varias descargas arrancan a la vez: se carga una vez
                if not self._extractor_index_ready:
                    await self._warm_extractor_index()
        try:
            return pick_downloader(url, "auto")
        except Exception as exc:
            _log.warning("daemon.error", where="pick_downloader", error=repr(exc))
            return "http"

    def _reject(self, name: str, reason: str, job_id: str | None) -> None:
        path = self.spool.reject(name, reason)
        self.counts["rejected"] += 1
        self._status_dirty.set()
        # JSON escapa los controles; un nombre que no es UTF-8 lo escapa _serialize.
        _log.warning("job.rejected", correlation_id=job_id, file=name, reason=reason, moved_to=str(path))

    def _limits(self) -> JobLimits:
        d = self.settings.download
        return JobLimits(allowed_schemes=d.allowed_schemes, max_bytes=d.max_bytes,
                         ytdlp_enabled=self.settings.ytdlp.enabled)

    # --- resultados -----------------------------------------------------------------------
    def _record(self, task: DownloadTask | None, job: JobSpec, name: str, received: float,
                outcome: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": job.id, "outcome": outcome, "job": job.to_record(), "source_file": name,
            "job_file_sha256": job.file_sha256, "daemon": {"instance": self.spool.instance, "version": __version__},
        }
        timings: dict[str, Any] = {"received_at": _iso(received)}
        if task is not None:
            record["downloader"] = task.downloader
            record["attempts"] = task.attempt
            timings["started_at"] = _iso(task.started_at)
            finished = task.finished_at or time.time()
            timings["finished_at"] = _iso(finished)
            timings["duration_s"] = round(finished - (task.started_at or received), 3)
            if task.result is not None and task.published_path is not None:
                record.update(path=str(task.published_path), filename=task.published_path.name,
                              renamed=task.renamed, size=task.result.size, sha256=task.result.sha256)
                if task.result.final_url:
                    record["final_url"] = task.result.final_url
                if task.result.extra:
                    record["extra"] = task.result.extra
            if task.error is not None:
                record["error"] = task.error
        record["timings"] = timings
        return record

    def _conclude(self, task: DownloadTask) -> None:
        """El desenlace de una tarea, hecho durable: el único camino a un registro terminal de una
        tarea del gestor (un éxito llega aquí desde el hilo de publicación, antes de la limpieza).
        Un ``OSError`` al escribir el registro de un éxito se propaga: el gestor retira lo publicado."""
        entry = self._jobs.get(task.correlation_id)
        if entry is None:
            return
        job, name, received = entry
        if task.state == "interrupted":
            return  # no es un desenlace: _on_finished lo devuelve a la cola
        outcome = "cancelled" if task.state == "cancelled" else str(task.state)
        self._write_terminal(job, name, received, outcome, task)

    def _write_terminal(self, job: JobSpec, name: str, received: float, outcome: str,
                        task: DownloadTask | None, error: dict[str, Any] | None = None) -> Path:
        """Escribe el registro terminal (done/ si succeeded, si no failed/) y emite ``job.recorded``."""
        record = self._record(task, job, name, received, outcome)
        if error is not None:
            record["error"] = error
        path = self.spool.write_record("done" if outcome == "succeeded" else "failed", job.id, record)
        _log.info("job.recorded", correlation_id=job.id, record=str(path), outcome=outcome)
        return path

    def _on_finished(self, task: DownloadTask) -> None:
        """Contabilidad al final de una tarea; el registro ya lo escribió ``_conclude``."""
        entry = self._jobs.pop(task.correlation_id, None)
        if entry is None:
            return
        job, name, _received = entry
        if task.state == "interrupted" or (task.state == "queued" and self._stop.is_set()):
            self._requeue(job, name, "daemon stopping")
        else:
            self.spool.release(name)
            key = {"succeeded": "done", "cancelled": "cancelled"}.get(str(task.state), "failed")
            self.counts[key] += 1
            if task.state == "cancelled":
                self.spool.consume_cancel(job.id)
        self._status_dirty.set()
        if not self._stop.is_set():
            self._scan_wanted.set()  # hay sitio en la cola: mirar incoming/

    def _finish_without_running(self, job: JobSpec, name: str, received: float, outcome: str, why: str) -> None:
        _log.warning("job.cancelled", correlation_id=job.id, attempt=0, while_state="incoming")
        self._write_terminal(job, name, received, outcome, None, {"kind": outcome, "message": why})
        self.spool.release(name)
        self.counts["cancelled"] += 1

    def _requeue(self, job: JobSpec, name: str, reason: str) -> None:
        suffix = os.path.splitext(name)[1]
        new_name = f"{job.id}{suffix}" if job.id_source != "explicit" else None
        try:
            target = self.spool.requeue(self.spool.claimed, name, new_name)
        except OSError as exc:
            _log.error("daemon.error", correlation_id=job.id, where="requeue", error=exc.strerror or str(exc))
            return
        self.counts["requeued"] += 1
        _log.info("job.requeued", correlation_id=job.id, file=target, reason=reason)

    def _requeue_leftover_claims(self) -> None:
        """Al parar: lo reclamado que no llegó al gestor (la parada cortó el escaneo entre el
        reclamo y la cola) vuelve a incoming/; nunca queda nada en active/<instancia>/."""
        try:
            names = sorted(os.listdir(self.spool.claimed))
        except OSError:
            return
        for name in names:
            if name.startswith("."):
                continue
            try:
                target = self.spool.requeue(self.spool.claimed, name)
            except OSError as exc:
                _log.error("daemon.error", where="requeue", file=printable(name), error=exc.strerror or str(exc))
                continue
            self.counts["requeued"] += 1
            _log.info("job.requeued", correlation_id=None, file=target, reason="daemon stopping")

    # --- cancelaciones --------------------------------------------------------------------
    async def _cancel_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.rescan_interval):
                    await self._cancel_wanted.wait()
            self._cancel_wanted.clear()
            await self._process_cancels()

    async def _process_cancels(self) -> None:
        assert self.manager is not None
        for job_id in self.spool.cancel_requests():
            if job_id in self.manager.tasks:
                _log.info("job.cancel_requested", correlation_id=job_id)
                result = await self.manager.cancel(job_id)
                if result is CancelResult.TOO_LATE:
                    # Terminará como succeeded; el marcador se retira para que el cancel lo sepa.
                    self.spool.consume_cancel(job_id)
            elif self.spool.terminal_record(job_id) is not None:
                self.spool.consume_cancel(job_id)
                _log.info("job.cancel_ignored", correlation_id=job_id, reason="the job already finished")
            elif self.spool.cancel_age(job_id) > _CANCEL_FORGET_AFTER:
                self.spool.consume_cancel(job_id)
                _log.info("job.cancel_ignored", correlation_id=job_id, reason="no such job within an hour")

    # --- recolector, salud, estado, watchdog ----------------------------------------------
    async def _reaper_loop(self) -> None:
        # La primera pasada espera al primer escaneo: los trabajos devueltos a incoming/ tras una
        # caída ya están reclamados y sus directorios (para reanudar) quedan fuera de la pasada.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._first_scan_done.wait()
        while not self._stop.is_set():
            await asyncio.get_running_loop().run_in_executor(
                None, reap_temp_root, self.settings.temp_dir, self.settings.reaper.max_age, set(self._jobs)
            )
            await asyncio.get_running_loop().run_in_executor(None, self._sweep_staging,
                                                             self.settings.reaper.max_age)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.reaper.interval):
                    await self._stop.wait()

    def _sweep_staging(self, max_age: float) -> None:
        """Retira copias a medio publicar que dejó un publicador muerto (sin cerrojo, más viejas que
        ``max_age``; al arrancar, todas las que no tienen cerrojo)."""
        try:
            removed = sweep_staging(self.settings.output_dir, max_age)
        except OSError as exc:
            _log.warning("daemon.error", where="staging", error=exc.strerror or str(exc))
            return
        if removed:
            _log.info("reaper.staging_removed", removed=removed, output_dir=str(self.settings.output_dir))

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
        return (f"running {running}, queued {queued + self._incoming_waiting}, done {c['done']}, "
                f"failed {c['failed'] + c['cancelled']}, rejected {c['rejected']}; "
                f"max_concurrent {self.settings.max_concurrent}")

    def _write_status(self, state: str = "running") -> None:
        m = self.manager
        status = {
            "state": state, "pid": os.getpid(), "instance": self.spool.instance, "version": __version__,
            "started_at": _iso(self.started_at), "updated_at": _iso(time.time()),
            "uptime_s": round(time.time() - self.started_at, 1),
            "config": str(self.settings.source) if self.settings.source else None,
            "max_concurrent": self.settings.max_concurrent,
            "running": m.snapshot() if m else [], "queued": m.queued if m else 0,
            "incoming_waiting": self._incoming_waiting, "counts": dict(self.counts),
            "last_scan": _iso(self._last_scan) if self._last_scan else None,
            "watcher_restarts": self.watcher.restarts if self.watcher else 0,
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
            self.manager.set_max_concurrent(self.settings.max_concurrent)
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
            entry = self._jobs.pop(task.correlation_id, None)
            if entry is not None:
                self._requeue(entry[0], entry[1], "daemon stopping")
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._requeue_leftover_claims()
        if self.watcher is not None:
            self.watcher.stop()
        for downloader in self._downloaders.values():
            close: Callable[[], Awaitable[None]] | None = (
                getattr(downloader, "aclose", None) or getattr(downloader, "close", None)
            )
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self._write_status("stopped")
        self.spool.close()
        # Todo está ya devuelto o registrado: otra señal de parada no debe matar el proceso a medio
        # salir (asyncio restauraría la acción por defecto al cerrar el bucle).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        _log.info("daemon.stopped", counts=dict(self.counts), uptime_s=round(time.time() - self.started_at, 1))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def run_daemon(settings: Settings) -> int:
    """Corre el daemon hasta que lo paren; devuelve el código de salida."""
    return asyncio.run(Daemon(settings).run())
