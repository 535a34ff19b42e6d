"""Entrada: lo que los productores dejan en el spool (incoming/ y cancel/), hasta la cola del gestor.

``scan_once`` reclama (rename a ``active/<instancia>/``), lee y valida cada archivo, y lo encola en
el gestor de descargas o lo rechaza con motivo. ``process_cancels`` atiende ``cancel/<id>``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from daemon.claim_order import ClaimOrder
from daemon.claimed_job import ClaimedJob, LiveJobs
from daemon.config import Settings
from daemon.downloader_registry import DownloaderRegistry
from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.download_manager import CancelResult, DownloadManager, RetryPolicy
from daemon.events import get_logger
from daemon.faultpoints import apause_point, crash_point
from daemon.ids import new_correlation_id
from daemon.jobs import JobLimits, JobRejected, JobSpec, parse_job
from daemon.outcomes import Outcomes
from daemon.spool import IncomingEntry
from daemon.text import printable

__all__ = ["Intake"]

_log = get_logger()
_SCAN_INLINE_LIMIT = 2000  # con más archivos en incoming/, el listado va a un hilo
_CLAIM_BATCH = 256  # cada tantos reclamos, ceder el bucle (watchdog, señales)
_CANCEL_FORGET_AFTER = 3600.0


class Intake:
    """Reclamo, validación y encolado de trabajos; cancelaciones pedidas en el spool."""

    def __init__(self, settings: Callable[[], Settings], manager: DownloadManager, outcomes: Outcomes,
                 registry: DownloaderRegistry, live: LiveJobs) -> None:
        self._settings = settings  # la configuración vigente (cambia con SIGHUP)
        self.manager = manager
        self.outcomes = outcomes
        self.spool = outcomes.spool
        self.registry = registry
        self.live = live
        self.last_scan = 0.0
        self.incoming_waiting = 0
        self._last_incoming_size = 0
        self.claim_order = ClaimOrder(self.spool.incoming)
        self._listing: list[IncomingEntry] = []  # lo que quedó por reclamar de la última lectura, en orden
        self.relist_wanted = True  # algo llegó a incoming/ (o volvió): releer en la próxima pasada

    def limits(self) -> JobLimits:
        s = self._settings()
        return JobLimits(allowed_schemes=s.download.allowed_schemes, max_bytes=s.download.max_bytes,
                         ytdlp_enabled=s.ytdlp.enabled)

    # --- incoming/ ----------------------------------------------------------------------
    async def scan_once(self, claiming: Callable[[], bool]) -> int:
        """Una pasada por incoming/; devuelve cuántos archivos reclamó."""
        room = self.claim_room()
        if room <= 0:
            return 0
        # incoming/ se relee si algo llegó (inotify), cada rescan_interval o si se agotó lo leído;
        # si no (un hueco que se libera), se sigue la lista ya ordenada: con miles esperando, releer
        # y ordenar en cada desenlace costaba ~0,3 s por cada 4 reclamos.
        if self.relist_wanted or not self._listing or time.time() - self.last_scan >= self._settings().rescan_interval:
            self.relist_wanted = False
            if self._last_incoming_size > _SCAN_INLINE_LIMIT:
                entries = await asyncio.get_running_loop().run_in_executor(None, self._candidates, room)
            else:
                entries = self._candidates(room)
            self._last_incoming_size = len(entries)
            self.last_scan = time.time()
        else:
            entries = self._listing
        claimed = seen = 0
        for entry in entries:
            if not claiming() or claimed >= room:
                break
            seen += 1
            if self.spool.claim(entry.name):
                crash_point("after_claim")
                claimed += 1
                await apause_point("claimed", entry.name)
                job = self.parse_claimed(entry.name)
                if job is not None:
                    await apause_point("parsed", job.id)
                    self.accept(job, entry.name)
                if claimed % _CLAIM_BATCH == 0:
                    await asyncio.sleep(0)
        self._listing = entries[seen:]
        self.incoming_waiting = len(self._listing)
        return claimed

    def claim_room(self) -> int:
        """Cuántos archivos reclamar ahora: los huecos libres más ``lookahead`` (lo que ya espera en
        cola cuenta), nunca más de ``max_queued`` en cola. Lo demás se queda en incoming/, donde
        otro daemon del mismo spool puede tomarlo."""
        s, m = self._settings(), self.manager
        return min(s.max_queued - m.queued, s.max_concurrent + s.lookahead - m.running - m.queued_ready)

    def _candidates(self, room: int) -> list[IncomingEntry]:
        """incoming/ en el orden de reclamo: prioridad, luego antigüedad (``daemon.claim_order``)."""
        return self.claim_order.order(self.spool.scan_incoming(), room)

    def parse_claimed(self, name: str) -> JobSpec | None:
        """Lee y valida un archivo recién reclamado; si no vale, lo rechaza con motivo y da None."""
        try:
            data, _st = self.spool.read_claimed(name)
            job = parse_job(data, name, self.limits())
            return self._resolve_id_conflicts(job)
        except JobRejected as exc:
            self.outcomes.rejected(name, exc.reason, exc.job_id)
        except Exception as exc:  # nunca dejar un archivo atascado en active/ por un fallo inesperado
            _log.exception("daemon.error", where="accept", file=printable(name), error=repr(exc))
            self.outcomes.rejected(name, f"internal error while reading the job ({type(exc).__name__}); "
                                         "report this with the file attached", None)
        return None

    def accept(self, job: JobSpec, name: str) -> None:
        """Encola un trabajo ya validado (o lo termina si ya pidieron cancelarlo)."""
        claimed = ClaimedJob(job, name, time.time())
        _log.info("job.received", correlation_id=job.id, file=name, url=job.url, downloader=job.downloader,
                  id_source=job.id_source)
        if self.spool.cancel_requested(job.id):
            self.outcomes.cancelled_before_start(claimed)
            return
        downloader = self.registry.choose(job)
        if downloader is None:
            self.outcomes.rejected(name, "downloader 'ytdlp' is not available in this daemon; use downloader: http",
                                   job.id)
            return
        self.live[job.id] = claimed
        d = self._settings().download
        options = DownloadOptions(
            url=job.url, filename=job.filename, sha256=job.sha256,
            max_bytes=min(job.max_bytes or d.max_bytes, d.max_bytes),
            timeout=job.timeout or d.timeout, headers=dict(job.headers), forward_headers=job.forward_headers,
            format=job.format, playlist=job.playlist, allowed_schemes=d.allowed_schemes,
            allow_private_networks=d.allow_private_networks, allowed_networks=d.allowed_networks,
            max_redirects=d.max_redirects,
        )
        retry = RetryPolicy(retries=job.retries if job.retries is not None else d.retries, backoff=d.backoff,
                            max_backoff=d.max_backoff)
        self.manager.submit(job.id, options, downloader=downloader, priority=job.priority, retry=retry,
                            output_subdir=job.output_dir)

    def _resolve_id_conflicts(self, job: JobSpec) -> JobSpec:
        live = job.id in self.manager.tasks or job.id in self.live
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

    # --- cancel/ ------------------------------------------------------------------------
    async def process_cancels(self) -> None:
        """Atiende cada ``cancel/<id>``: cancela lo vivo, dice tarde lo que ya publica, olvida lo viejo."""
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
