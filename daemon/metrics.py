"""Métricas Prometheus del daemon (prometheus_client), alimentadas por el flujo de eventos.

``DaemonMetrics.observe`` se registra como observador de ``daemon.events``: cada evento que el
daemon emite actualiza contadores (trabajos por resultado, bytes por descargador, reintentos,
retiradas del recolector, reinicios del ayudante de yt-dlp...), sin tocar el código que decide los
resultados. Lo que es estado (cola, descargas en marcha, errores del registro de eventos) se lee
al servir ``/metrics`` con la función ``state``. ``MetricsServer`` sirve ``/metrics`` con aiohttp
en una dirección TCP o un socket unix (``metrics.listen``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from daemon.events import event_log_write_errors

__all__ = ["METRIC_NAMES", "DaemonMetrics", "MetricsServer", "MetricsState", "parse_listen", "start_metrics",
           "stop_metrics"]

# Cada serie que /metrics expone (nombre base, sin _bucket/_sum/_count): el tablero y las alertas
# de docs/ sólo pueden usar estas (una prueba lo comprueba contra una extracción real).
METRIC_NAMES: tuple[str, ...] = (
    "videonote_dl_build_info",
    "videonote_dl_start_time_seconds",
    "videonote_dl_jobs_total",
    "videonote_dl_bytes_total",
    "videonote_dl_job_duration_seconds",
    "videonote_dl_retries_total",
    "videonote_dl_reaper_removals_total",
    "videonote_dl_reaper_freed_bytes_total",
    "videonote_dl_ytdlp_helper_starts_total",
    "videonote_dl_ytdlp_helper_restarts_total",
    "videonote_dl_ytdlp_helper_failures_total",
    "videonote_dl_watcher_restarts_total",
    "videonote_dl_queue_depth",
    "videonote_dl_incoming_waiting",
    "videonote_dl_running_jobs",
    "videonote_dl_max_concurrent",
    "videonote_dl_event_log_write_errors_total",
)

# El formato de texto clásico: lo entiende todo Prometheus 2.x (nuestros nombres no necesitan el 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))


@dataclass(frozen=True, slots=True)
class MetricsState:
    """Lo que se lee en el momento de servir /metrics."""

    queued: int = 0
    incoming_waiting: int = 0
    running: int = 0
    max_concurrent: int = 0


class _StateCollector:
    """Colector de prometheus_client que pregunta al daemon en cada extracción."""

    def __init__(self, state: Callable[[], MetricsState]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state()
        yield GaugeMetricFamily("videonote_dl_queue_depth", "Jobs claimed and waiting for a download slot",
                                value=s.queued)
        yield GaugeMetricFamily("videonote_dl_incoming_waiting",
                                "Job files still waiting in incoming/ (not yet claimed) at the last scan",
                                value=s.incoming_waiting)
        yield GaugeMetricFamily("videonote_dl_running_jobs", "Downloads running now", value=s.running)
        yield GaugeMetricFamily("videonote_dl_max_concurrent", "Configured max_concurrent", value=s.max_concurrent)
        yield CounterMetricFamily("videonote_dl_event_log_write_errors",
                                  "Events dropped because the event log could not be written (disk full, I/O)",
                                  value=event_log_write_errors())


class DaemonMetrics:
    """Registro propio (no el global de prometheus_client) y la traducción evento -> métrica."""

    def __init__(self, state: Callable[[], MetricsState], version: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # sin series *_created: ruido para un tablero
        self.registry = CollectorRegistry()
        r = self.registry
        Info("videonote_dl_build", "Build information", registry=r).info(
            {"version": version, "python": platform.python_version()})
        Gauge("videonote_dl_start_time_seconds", "Unix time the daemon started", registry=r).set(time.time())
        self.jobs = Counter("videonote_dl_jobs", "Finished jobs by outcome (succeeded, failed, cancelled, rejected)",
                            ["outcome"], registry=r)
        for outcome in ("succeeded", "failed", "cancelled", "rejected"):
            self.jobs.labels(outcome)  # series a cero desde el arranque: rate() funciona desde el principio
        self.bytes = Counter("videonote_dl_bytes", "Bytes downloaded, by downloader", ["downloader"], registry=r)
        for downloader in ("http", "ytdlp"):
            self.bytes.labels(downloader)
        self.duration = Histogram("videonote_dl_job_duration_seconds",
                                  "Time from a job's first start to its terminal record, by outcome",
                                  ["outcome"], buckets=_DURATION_BUCKETS, registry=r)
        self.retries = Counter("videonote_dl_retries", "Attempts retried after a transient error", registry=r)
        self.reaper_removals = Counter("videonote_dl_reaper_removals", "Stale temp entries the reaper removed",
                                       registry=r)
        self.reaper_freed = Counter("videonote_dl_reaper_freed_bytes", "Bytes the reaper freed", registry=r)
        self.helper_starts = Counter("videonote_dl_ytdlp_helper_starts", "yt-dlp helper (zygote) starts",
                                     registry=r)
        self.helper_restarts = Counter("videonote_dl_ytdlp_helper_restarts",
                                       "yt-dlp helper (zygote) starts after the first one", registry=r)
        self.helper_failures = Counter("videonote_dl_ytdlp_helper_failures",
                                       "yt-dlp helper (zygote) failures (downloads fall back to plain processes)",
                                       registry=r)
        self.watcher_restarts = Counter("videonote_dl_watcher_restarts", "inotify watcher restarts", registry=r)
        r.register(_StateCollector(state))
        self._lock = threading.Lock()  # los eventos llegan también desde hilos (recolector, ejecutores)
        self._downloader: dict[str, str] = {}  # id -> descargador
        self._seen_bytes: dict[str, int] = {}  # id -> bytes ya contados (del último job.progress)
        self._started: dict[str, float] = {}  # id -> monotonic del primer job.started
        self._helper_started = 0

    def render(self) -> bytes:
        """El texto de /metrics."""
        return generate_latest(self.registry)

    def observe(self, name: str, fields: Mapping[str, Any]) -> None:
        """Observador de eventos (``daemon.events.add_event_observer``)."""
        handler = _HANDLERS.get(name)
        if handler is not None:
            with self._lock:
                handler(self, fields)

    # --- traducción evento -> métrica (con el cerrojo tomado) ------------------------------
    def _on_queued(self, f: Mapping[str, Any]) -> None:
        self._downloader[str(f.get("correlation_id"))] = str(f.get("downloader") or "http")

    def _on_ytdlp_started(self, f: Mapping[str, Any]) -> None:
        self._downloader[str(f.get("correlation_id"))] = "ytdlp"  # ``auto`` resuelto a yt-dlp

    def _on_started(self, f: Mapping[str, Any]) -> None:
        self._started.setdefault(str(f.get("correlation_id")), time.monotonic())

    def _count_bytes(self, cid: str, done: int) -> None:
        # job.progress trae el acumulado del intento; se suma lo nuevo. Un intento que vuelve a
        # empezar (menos bytes que antes) empieza a contar de nuevo.
        seen = self._seen_bytes.get(cid, 0)
        if done > seen:
            downloader = self._downloader.get(cid, "http")
            self.bytes.labels("http" if downloader == "auto" else downloader).inc(done - seen)
        self._seen_bytes[cid] = done

    def _on_progress(self, f: Mapping[str, Any]) -> None:
        self._count_bytes(str(f.get("correlation_id")), int(f.get("bytes") or 0))

    def _on_published(self, f: Mapping[str, Any]) -> None:
        # Una descarga más corta que progress_interval no emite job.progress: se completa con el tamaño
        # publicado (job.published llega antes que job.recorded). ``recovered``: ya publicado antes de
        # una caída, nada se descargó ahora.
        if not f.get("recovered"):
            self._count_bytes(str(f.get("correlation_id")), int(f.get("size") or 0))

    def _on_attempt_over(self, f: Mapping[str, Any]) -> None:
        self._seen_bytes.pop(str(f.get("correlation_id")), None)

    def _on_retrying(self, f: Mapping[str, Any]) -> None:
        self.retries.inc()
        self._on_attempt_over(f)

    def _finish(self, cid: str, outcome: str) -> None:
        self.jobs.labels(outcome).inc()
        started = self._started.pop(cid, None)
        if started is not None:
            self.duration.labels(outcome).observe(time.monotonic() - started)
        self._downloader.pop(cid, None)
        self._seen_bytes.pop(cid, None)

    def _on_recorded(self, f: Mapping[str, Any]) -> None:
        self._finish(str(f.get("correlation_id")), str(f.get("outcome") or "failed"))

    def _on_rejected(self, f: Mapping[str, Any]) -> None:
        self.jobs.labels("rejected").inc()

    def _on_cancelled(self, f: Mapping[str, Any]) -> None:
        # Cancelado antes de reclamarse para correr: no habrá job.recorded.
        if f.get("while_state") == "incoming":
            self._finish(str(f.get("correlation_id")), "cancelled")

    def _on_interrupted(self, f: Mapping[str, Any]) -> None:
        # Vuelve a incoming/ al parar: ni resultado ni duración en este proceso.
        cid = str(f.get("correlation_id"))
        self._started.pop(cid, None)
        self._seen_bytes.pop(cid, None)

    def _on_reaper_removed(self, f: Mapping[str, Any]) -> None:
        if not f.get("dry_run"):
            self.reaper_removals.inc()
            self.reaper_freed.inc(max(0, int(f.get("bytes_freed") or 0)))

    def _on_helper_started(self, f: Mapping[str, Any]) -> None:
        if self._helper_started:
            self.helper_restarts.inc()
        self._helper_started += 1
        self.helper_starts.inc()

    def _on_helper_unavailable(self, f: Mapping[str, Any]) -> None:
        self.helper_failures.inc()

    def _on_watcher_restarted(self, f: Mapping[str, Any]) -> None:
        self.watcher_restarts.inc()


_HANDLERS: dict[str, Callable[[DaemonMetrics, Mapping[str, Any]], None]] = {
    "job.queued": DaemonMetrics._on_queued,
    "ytdlp.started": DaemonMetrics._on_ytdlp_started,
    "job.started": DaemonMetrics._on_started,
    "job.progress": DaemonMetrics._on_progress,
    "job.published": DaemonMetrics._on_published,
    "job.failed": DaemonMetrics._on_attempt_over,
    "job.retrying": DaemonMetrics._on_retrying,
    "job.recorded": DaemonMetrics._on_recorded,
    "job.rejected": DaemonMetrics._on_rejected,
    "job.cancelled": DaemonMetrics._on_cancelled,
    "job.interrupted": DaemonMetrics._on_interrupted,
    "reaper.removed": DaemonMetrics._on_reaper_removed,
    "ytdlp.zygote_started": DaemonMetrics._on_helper_started,
    "ytdlp.zygote_unavailable": DaemonMetrics._on_helper_unavailable,
    "spool.watcher_restarted": DaemonMetrics._on_watcher_restarted,
}


def parse_listen(listen: str) -> tuple[str, int] | Path:
    """``host:puerto`` -> (host, puerto); una ruta -> socket unix."""
    if "/" in listen:
        return Path(listen)
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """``GET /metrics`` (y ``/``, que dice dónde mirar) en el bucle del daemon, con aiohttp."""

    def __init__(self, metrics: DaemonMetrics, listen: str) -> None:
        self.metrics = metrics
        self.listen = listen
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/", self._serve_index)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        target = parse_listen(self.listen)
        site: web.BaseSite
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()  # un socket de una ejecución anterior
            site = web.UnixSite(self._runner, str(target))
        else:
            site = web.TCPSite(self._runner, target[0], target[1], reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        if isinstance(target, Path):
            os.chmod(target, 0o660)  # el grupo del servicio (p. ej. el agente que extrae) puede conectar

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            target = parse_listen(self.listen)
            if isinstance(target, Path):
                with contextlib.suppress(OSError):
                    target.unlink()  # aiohttp no retira el socket unix

    async def _serve_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _serve_index(self, _request: web.Request) -> web.Response:
        return web.Response(text="videonote-dl: Prometheus metrics at /metrics\n")


async def start_metrics(listen: str, state: Callable[[], MetricsState], version: str) -> MetricsServer | None:
    """Sirve /metrics en ``listen`` y conecta el observador de eventos; None si no se puede escuchar
    (las descargas no dependen de la monitorización: se sigue sin métricas, y se dice alto)."""
    from daemon.events import add_event_observer, get_logger

    server = MetricsServer(DaemonMetrics(state, version), listen)
    try:
        await server.start()
    except OSError as exc:
        get_logger().error("daemon.error", where="metrics", error=f"cannot listen on {listen}: "
                           f"{exc.strerror or exc}; fix metrics.listen in the config and restart")
        return None
    add_event_observer(server.metrics.observe)
    get_logger().info("metrics.listening", listen=listen, path="/metrics")
    return server


async def stop_metrics(server: MetricsServer) -> None:
    from daemon.events import remove_event_observer

    remove_event_observer(server.metrics.observe)
    await server.close()
