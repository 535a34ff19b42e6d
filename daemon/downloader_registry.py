"""Los descargadores del daemon y la elección entre ellos (``downloader: auto``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from daemon.config import Settings
from daemon.downloaders.base import Downloader, DownloadOptions
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.events import get_logger
from daemon.file_io import FileIo
from daemon.jobs import JobSpec
from daemon.manifest_routing import manifest_by_suffix, telling_suffix

__all__ = ["DownloaderRegistry"]

_log = get_logger()


class DownloaderRegistry:
    """``http`` siempre; ``ytdlp`` si está activado y se puede importar."""

    def __init__(self, settings: Settings, file_io: FileIo | None = None) -> None:
        http = HttpDownloader(ca_bundle=settings.download.ca_bundle, file_io=file_io)
        self.downloaders: dict[str, Downloader] = {"http": http}
        self._extractor_index_ready = False
        self._index_lock = asyncio.Lock()
        self._extractor_cache_dir = settings.temp_dir  # la tabla guardada entre arranques (extractor_cache)
        if settings.ytdlp.enabled:
            self._add_ytdlp(settings)

    def _add_ytdlp(self, settings: Settings) -> None:
        try:
            from daemon.downloaders.ytdlp import YtdlpDownloader
        except ImportError as exc:
            _log.warning("daemon.error", where="ytdlp", error=f"yt-dlp downloader unavailable: {exc}")
            return
        y = settings.ytdlp
        self.downloaders["ytdlp"] = YtdlpDownloader(kill_grace=y.kill_grace, socket_timeout=y.socket_timeout,
                                                    use_zygote=y.zygote, ffmpeg=y.ffmpeg,
                                                    concurrent_fragments=y.concurrent_fragments)
        self.ffmpeg_setting = y.ffmpeg

    def tools(self) -> dict[str, Any]:
        """Qué ffmpeg, deno y yt-dlp se usan (para ``daemon.ready``); lanza ``-version`` una vez."""
        from daemon.downloaders.ytdlp import describe_tools, ytdlp_version

        if "ytdlp" not in self.downloaders:
            return {}
        found = describe_tools(self.ffmpeg_setting)
        return {"ytdlp": ytdlp_version(), **{name: info.as_dict() for name, info in found.items()}}

    def choose(self, job: JobSpec) -> str | None:
        """El descargador pedido (None si no está disponible); ``auto`` se resuelve al arrancar la
        descarga (``resolve_auto``), no al reclamar: una ráfaga se encola sin consultar extractores."""
        if job.downloader == "ytdlp" and "ytdlp" not in self.downloaders:
            return None
        if job.downloader == "auto" and "ytdlp" not in self.downloaders:
            return "http"
        return job.downloader

    async def resolve_auto(self, options: DownloadOptions) -> str:
        """``auto`` -> ``ytdlp`` para una lista, un manifiesto (``manifest_routing``: sufijo o, sin
        sufijo revelador, Content-Type) o una URL que reclama un extractor de yt-dlp (no el genérico);
        si no, ``http``."""
        from daemon.downloaders.ytdlp import pick_downloader

        url = options.url
        if options.playlist or manifest_by_suffix(url):
            return self._routed(options, "ytdlp", "playlist" if options.playlist else "suffix")

        if not self._extractor_index_ready:
            async with self._index_lock:  # varias descargas arrancan a la vez: se carga una vez
                if not self._extractor_index_ready:
                    await self._warm_extractor_index(options.correlation_id)
        try:
            picked = str(pick_downloader(url, "auto"))
        except Exception as exc:
            _log.warning("daemon.error", where="pick_downloader", error=repr(exc))
            picked = "http"
        if picked == "ytdlp":
            return self._routed(options, "ytdlp", "extractor")
        # Sin sufijo revelador, lo dice el Content-Type de la propia respuesta: el descargador HTTP
        # entrega un manifiesto a yt-dlp (``RouteToYtdlp``) sin una petición de más para el resto.
        options.route_manifests = not telling_suffix(url)
        return "http"

    @staticmethod
    def _routed(options: DownloadOptions, downloader: str, rule: str) -> str:
        _log.info("job.routed", correlation_id=options.correlation_id, downloader=downloader, rule=rule)
        return downloader

    async def _warm_extractor_index(self, for_job: str | None) -> None:
        """Prepara la tabla de extractores de yt-dlp fuera del bucle, justo antes del primer trabajo
        ``auto`` (el daemon ocioso no paga ni ese tiempo ni esa memoria): la copia guardada en
        ``temp_dir`` si es la del yt-dlp instalado; si no, un proceso hijo (~1 s de CPU)."""
        from daemon.downloaders.ytdlp import preload_extractors

        started = time.monotonic()
        try:
            source = await asyncio.to_thread(preload_extractors, self._extractor_cache_dir)
            # Un evento del daemon, no del trabajo: sin su correlation_id (el del contexto de la tarea),
            # que lo metería en el ciclo de vida del trabajo; ``for_job`` dice quién lo esperó.
            _log.info("daemon.extractor_table", correlation_id=None, source=source, for_job=for_job,
                      duration_ms=round((time.monotonic() - started) * 1000, 1))
        except Exception as exc:
            _log.warning("daemon.error", where="ytdlp_index", error=repr(exc))
        self._extractor_index_ready = True

    async def close(self) -> None:
        for downloader in self.downloaders.values():
            close: Callable[[], Awaitable[None]] | None = (
                getattr(downloader, "aclose", None) or getattr(downloader, "close", None)
            )
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
