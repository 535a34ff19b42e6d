"""Entrada: lo que los productores dejan en el spool (incoming/ y cancel/), hasta la cola del gestor.

``scan_once`` reclama (rename a ``active/<instancia>/``), lee y valida cada archivo, y lo encola en
el gestor de descargas o lo rechaza con motivo. ``process_cancels`` atiende ``cancel/<id>``.
Toda entrada es hostil: un directorio, un FIFO, un enlace, un archivo ilegible o que desaparece
se rechaza o se salta (una vez, con evento) sin detener ni frenar el bucle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from daemon.authority import Authority
from daemon.claim_order import ClaimOrder
from daemon.claimed_job import ClaimedJob, LiveJobs
from daemon.config import Settings
from daemon.downloader_registry import DownloaderRegistry
from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.download_manager import CancelResult, DownloadManager, RetryPolicy
from daemon.events import get_logger, set_redacted_query_params
from daemon.faultpoints import apause_point, crash_point
from daemon.ids import new_correlation_id
from daemon.jobfile import kind_of
from daemon.jobs import JobLimits, JobRejected, JobSpec, parse_job
from daemon.memory import release_freed_memory
from daemon.outcomes import Outcomes
from daemon.retention import expire_old_entries
from daemon.settle import ArrivalTracker
from daemon.spool import CancelMarker, IncomingEntry
from daemon.text import printable

__all__ = ["Intake"]

_log = get_logger()
_SCAN_INLINE_LIMIT = 2000  # con más archivos en incoming/, el listado va a un hilo
_CLAIM_BATCH = 256  # cada tantos reclamos, ceder el bucle (watchdog, señales)
_RETENTION_EVERY = 60.0
_TRIM_AFTER_CLAIMS = 1000  # tras tomar tantos y vaciar incoming/, la memoria libre vuelve al sistema
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # compartido por los trabajos sin cabeceras: de sólo lectura


@functools.lru_cache(maxsize=64)
def _retry_policy(retries: int, backoff: float, max_backoff: float) -> RetryPolicy:
    """Una política por combinación (es inmutable): no una copia por trabajo en cola."""
    return RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)


class Intake:
    """Reclamo, validación y encolado de trabajos; cancelaciones pedidas en el spool."""

    def __init__(self, settings: Callable[[], Settings], manager: DownloadManager, outcomes: Outcomes,
                 registry: DownloaderRegistry, live: LiveJobs, wake: Callable[[], None] | None = None) -> None:
        self._settings = settings  # la configuración vigente (cambia con SIGHUP)
        self.manager = manager
        self.outcomes = outcomes
        self.spool = outcomes.spool
        self.registry = registry
        self.live = live
        self.last_scan = 0.0
        self.incoming_waiting = 0
        self._last_incoming_size = 0
        self.arrivals = ArrivalTracker()  # pistas de inotify: cómo llegó cada nombre
        self.authority = Authority()
        self.unknown_cancels: set[str] = set()  # marcadores sin trabajo vivo, en cola ni terminado
        self._wake = wake  # despierta un escaneo (cuando vence la espera de un archivo escrito en sitio)
        self._wake_at: asyncio.TimerHandle | None = None
        self._due = float("inf")
        self._skipped: dict[tuple[str, str], int] = {}  # (carpeta, nombre) -> inodo saltado ya avisado
        self._stems: set[str] = set()
        self._policy_of: Settings | None = None
        self._last_retention = 0.0
        self._apply_policy()
        self.claim_order = ClaimOrder(self.spool.incoming)
        self._listing: list[IncomingEntry] = []  # lo que quedó por reclamar de la última lectura, en orden
        self.relist_wanted = True  # algo llegó a incoming/ (o volvió): releer en la próxima pasada
        self._claimed_since_trim = 0

    def limits(self) -> JobLimits:
        s = self._settings()
        return JobLimits(allowed_schemes=s.download.allowed_schemes, max_bytes=s.download.max_bytes,
                         ytdlp_enabled=s.ytdlp.enabled, postprocess_profiles=tuple(s.postprocess.profiles))

    def _apply_policy(self) -> None:
        """Aplica la sección ``producers`` vigente (al arrancar y tras cada recarga)."""
        s = self._settings()
        if s is not self._policy_of:
            self._policy_of = s
            self.authority.set_admin_group(s.producers.admin_group)
            set_redacted_query_params(s.producers.redact_query)

    # --- incoming/ ----------------------------------------------------------------------
    async def scan_once(self, claiming: Callable[[], bool]) -> int:
        """Una pasada por incoming/; devuelve cuántos archivos reclamó."""
        self._apply_policy()
        room = self.claim_room()
        if room <= 0:
            return 0
        # incoming/ se relee si algo llegó (inotify), cada rescan_interval, si se agotó lo leído o si
        # vence la espera de un archivo escrito en sitio; si no (un hueco que se libera), se sigue la
        # lista ya ordenada: con miles esperando, releer y ordenar en cada desenlace costaba ~0,3 s.
        relisted = False
        if self.relist_wanted or not self._listing or \
                time.time() - self.last_scan >= self._settings().rescan_interval:
            self.relist_wanted = False
            self.arrivals.mark()  # las pistas que lleguen durante el listado sobreviven a su ``prune``
            try:
                if self._last_incoming_size > _SCAN_INLINE_LIMIT:
                    entries = await asyncio.get_running_loop().run_in_executor(None, self._candidates, room)
                else:
                    entries = self._candidates(room)
            except OSError as exc:
                self._skip("incoming", ".", 0, exc)
                return 0
            relisted = True
            self._last_incoming_size = len(entries)
            self.last_scan = time.time()
            self._due = float("inf")
        else:
            entries = self._listing
        claimed = seen = 0
        passed: list[str] = []  # vistas y no reclamadas (siguen en incoming/)
        for entry in entries:
            if not claiming() or claimed >= room:
                break
            seen += 1
            if not self._claim(entry):
                passed.append(entry.name)
            else:
                crash_point("after_claim")
                claimed += 1
                await apause_point("claimed", entry.name)
                parsed = self.parse_claimed(entry.name)
                if parsed is not None:
                    await apause_point("parsed", parsed[0].id)
                    self.accept(parsed[0], entry.name, parsed[1])
                if claimed % _CLAIM_BATCH == 0:
                    await asyncio.sleep(0)
        self._listing = entries[seen:]
        self.incoming_waiting = len(self._listing)
        if relisted:
            self._after_scan(entries, passed)
        self._claimed_since_trim += claimed
        if not self._listing and self._claimed_since_trim >= _TRIM_AFTER_CLAIMS:
            # Una ráfaga entera tomada: lo que dejaron su listado y sus lecturas vuelve al sistema.
            self._claimed_since_trim = 0
            asyncio.get_running_loop().run_in_executor(None, release_freed_memory)
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

    def _claim(self, entry: IncomingEntry) -> bool:
        """Reclama una entrada si está completa; rechaza lo que no es un archivo; salta (una vez,
        con evento) lo que no se puede mover. Nunca lanza."""
        if self._skipped.get(("incoming", entry.name)) == entry.ino:
            return False
        kind = kind_of(entry.mode)  # lo que no es un archivo regular no se está escribiendo: sin espera
        wait = 0.0 if kind is not None else self.arrivals.wait_for(entry.name, entry.mtime_ns, entry.ctime_ns,
                                                                   self._settings().producers.settle)
        if wait > 0:
            self._due = min(self._due, wait)
            return False
        try:
            if kind is not None:
                self.outcomes.rejected(entry.name, f"the job file is {kind}; write a regular file in spool/tmp/ "
                                       "and rename it into incoming/", None, source=self.spool.incoming)
                return False
            if self.spool.claim(entry.name):
                self.arrivals.forget(entry.name)
                return True
        except OSError as exc:
            self._skip("incoming", entry.name, entry.ino, exc)
        return False

    def _skip(self, folder: str, name: str, ino: int, exc: OSError) -> None:
        """Una entrada que el daemon no puede mover ni borrar: se dice una vez y se deja de intentar
        (hasta que cambie de inodo)."""
        if self._skipped.get((folder, name)) == ino:
            return
        self._skipped[(folder, name)] = ino
        _log.warning("spool.entry_skipped", folder=folder, file=printable(name), error=exc.strerror or str(exc),
                     hint="the daemon cannot move or remove it; its owner or an administrator should remove it")

    def _after_scan(self, entries: list[IncomingEntry], passed: list[str]) -> None:
        present = {entry.name for entry in entries}
        self.arrivals.prune(present)
        for key in [k for k in self._skipped if k[0] == "incoming" and k[1] not in present and k[1] != "."]:
            del self._skipped[key]
        # Los ids que aún esperan en incoming/ (para los cancel/ que llegan antes que su trabajo): lo
        # reclamado ya está en el gestor; guardar todo el listado eran ~1 MiB tras una ráfaga.
        self._stems = {name.split(".", 1)[0] for name in passed}
        self._stems.update(entry.name.split(".", 1)[0] for entry in self._listing)
        if self._due != float("inf") and self._wake is not None:
            loop = asyncio.get_running_loop()
            when = loop.time() + self._due + 0.01
            if self._wake_at is None or self._wake_at.cancelled() or self._wake_at.when() > when \
                    or self._wake_at.when() < loop.time():
                if self._wake_at is not None:
                    self._wake_at.cancel()
                self._wake_at = loop.call_at(when, self._settled)

    def _settled(self) -> None:
        """Venció la espera de un archivo escrito en sitio: releer incoming/ y despertar un escaneo."""
        self.relist_wanted = True
        if self._wake is not None:
            self._wake()

    def parse_claimed(self, name: str) -> tuple[JobSpec, int] | None:
        """Lee y valida un archivo recién reclamado: (trabajo, uid de su dueño). Si no vale, lo
        rechaza con motivo (la copia guardada, sin valores de cabeceras) y da None."""
        data: bytes | None = None
        try:
            data, st = self.spool.read_claimed(name)
            job = parse_job(data, name, self.limits())
            self._check_priority(job, st.st_uid)
            return self._resolve_id_conflicts(job), st.st_uid
        except JobRejected as exc:
            self.outcomes.rejected(name, exc.reason, exc.job_id, content=data)
        except Exception as exc:  # nunca dejar un archivo atascado en active/ por un fallo inesperado
            _log.exception("daemon.error", where="accept", file=printable(name), error=repr(exc))
            self.outcomes.rejected(name, f"internal error while reading the job ({type(exc).__name__}); "
                                         "report this with the file attached", None, content=data)
        return None

    def _check_priority(self, job: JobSpec, submitter: int) -> None:
        ceiling = self._settings().producers.priority_ceiling
        if job.priority > ceiling and not self.authority.is_admin(submitter):
            raise JobRejected(f"priority {job.priority} is above {ceiling}, the highest this daemon allows "
                              "producers outside its admin group (producers.admin_group); use a priority of "
                              f"at most {ceiling}", job.id)

    def accept(self, job: JobSpec, name: str, submitter: int = -1) -> None:
        """Encola un trabajo ya validado (o lo termina si su dueño ya pidió cancelarlo)."""
        claimed = ClaimedJob(job, name, time.time(), submitter)
        _log.info("job.received", correlation_id=job.id, file=name, url=job.url, downloader=job.downloader,
                  id_source=job.id_source, submitter=submitter)
        marker = self.spool.cancel_marker(job.id)
        if marker is not None:
            if self.authority.may_cancel(marker.uid, submitter):
                self.outcomes.cancelled_before_start(replace(claimed, cancelled_by=marker.uid))
                return
            self._refuse_cancel(marker, submitter)
        downloader = self.registry.choose(job)
        if downloader is None:
            self.outcomes.rejected(name, "downloader 'ytdlp' is not available in this daemon; use downloader: http",
                                   job.id)
            return
        self.live[job.id] = claimed
        d = self._settings().download
        # La configuración manda: un trabajo sólo puede bajar max_bytes, timeout y retries.
        options = DownloadOptions(
            url=job.url, filename=job.filename, sha256=job.sha256,
            max_bytes=min(job.max_bytes or d.max_bytes, d.max_bytes),
            timeout=min(job.timeout or d.timeout, d.timeout), headers=dict(job.headers) if job.headers else _NO_HEADERS,
            forward_headers=job.forward_headers,
            format=job.format, playlist=job.playlist, allowed_schemes=d.allowed_schemes,
            allow_private_networks=d.allow_private_networks, allowed_networks=d.allowed_networks,
            max_redirects=d.max_redirects,
            postprocess=self._settings().postprocess.profiles.get(job.postprocess or ""),
        )
        retries = min(job.retries, d.retries) if job.retries is not None else d.retries
        retry = _retry_policy(retries, d.backoff, d.max_backoff)
        self.manager.submit(job.id, options, downloader=downloader, priority=job.priority, retry=retry,
                            output_subdir=job.output_dir, owner=submitter)

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
        """Atiende cada ``cancel/<id>``: cancela lo vivo (si quien pide puede), dice tarde lo que ya
        publica, caduca lo desconocido y retira lo inválido. Ninguna entrada detiene la pasada."""
        self._apply_policy()
        markers, invalid = self.spool.cancel_markers()
        for name, why in invalid:
            if ("cancel", name) in self._skipped:
                continue
            problem = self.spool.consume_cancel(name)
            if problem is None:
                _log.info("spool.cancel_removed", file=printable(name), reason=why)
            else:
                self._skip("cancel", name, 0, OSError(0, problem))
        unknown: set[str] = set()
        for marker in markers:
            try:
                if await self._one_cancel(marker):
                    unknown.add(marker.job_id)
            except Exception as exc:
                _log.exception("daemon.error", where="cancel", correlation_id=marker.job_id, error=repr(exc))
        if unknown:  # lo reclamado y aún no aceptado (un instante) también es conocido
            with contextlib.suppress(OSError):
                unknown -= {name.split(".", 1)[0] for name in os.listdir(self.spool.claimed)}
        if unknown != self.unknown_cancels:
            self.unknown_cancels = unknown
            self.outcomes.on_change()  # el estado lo publica: `videonote-dl cancel` lo lee ahí
        self._expire_old()

    async def _one_cancel(self, marker: CancelMarker) -> bool:
        """Un marcador; True si su id no es de ningún trabajo conocido (ni vivo, ni en cola, ni terminado)."""
        job_id = marker.job_id
        claimed = self.live.get(job_id)
        if job_id in self.manager.tasks:
            submitter = claimed.submitter if claimed is not None else -1
            if not self.authority.may_cancel(marker.uid, submitter):
                self._refuse_cancel(marker, submitter)
                return False
            if claimed is not None and claimed.cancelled_by is None:
                self.live[job_id] = replace(claimed, cancelled_by=marker.uid)
            _log.info("job.cancel_requested", correlation_id=job_id, cancelled_by=marker.uid)
            if await self.manager.cancel(job_id) is CancelResult.TOO_LATE:
                # Terminará como succeeded; el marcador se retira para que el cancel lo sepa.
                self.spool.consume_cancel(job_id)
            return False
        if self.spool.terminal_record(job_id) is not None:
            self.spool.consume_cancel(job_id)
            _log.info("job.cancel_ignored", correlation_id=job_id, reason="the job already finished")
            return False
        age = time.time() - marker.mtime
        if age > self._settings().producers.cancel_ttl:
            self.spool.consume_cancel(job_id)
            _log.info("job.cancel_expired", correlation_id=job_id, cancelled_by=marker.uid, age_s=round(age, 1),
                      reason="no live or queued job with this id within producers.cancel_ttl")
            return False
        return job_id not in self._stems

    def _refuse_cancel(self, marker: CancelMarker, submitter: int) -> None:
        self.spool.consume_cancel(marker.job_id)
        _log.warning("job.cancel_refused", correlation_id=marker.job_id, cancelled_by=marker.uid,
                     submitter=submitter,
                     reason="only the job's submitter, root or a member of producers.admin_group may cancel it")

    def _expire_old(self) -> None:
        now = time.time()
        if now - self._last_retention < _RETENTION_EVERY:
            return
        self._last_retention = now
        removed = expire_old_entries((self.spool.rejected, self.spool.failed), self._settings().producers.retention)
        if removed:
            _log.info("spool.expired", count=len(removed), folders="rejected, failed",
                      retention_s=self._settings().producers.retention)
