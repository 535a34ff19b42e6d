"""Los descargadores del daemon y la elección entre ellos (``downloader: auto``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from daemon.config import Settings
from daemon.downloaders.base import Downloader
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.events import get_logger
from daemon.jobs import JobSpec

__all__ = ["DownloaderRegistry"]

_log = get_logger()


class DownloaderRegistry:
    """``http`` siempre; ``ytdlp`` si está activado y se puede importar."""

    def __init__(self, settings: Settings) -> None:
        self.downloaders: dict[str, Downloader] = {"http": HttpDownloader(ca_bundle=settings.download.ca_bundle)}
        self._extractor_index_ready = False
        self._index_lock = asyncio.Lock()
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
                                                    use_zygote=y.zygote)

    def choose(self, job: JobSpec) -> str | None:
        """El descargador pedido (None si no está disponible); ``auto`` se resuelve al arrancar la
        descarga (``resolve_auto``), no al reclamar: una ráfaga se encola sin consultar extractores."""
        if job.downloader == "ytdlp" and "ytdlp" not in self.downloaders:
            return None
        if job.downloader == "auto" and "ytdlp" not in self.downloaders:
            return "http"
        return job.downloader

    async def resolve_auto(self, url: str) -> str:
        """``auto`` -> ``ytdlp`` si un extractor de yt-dlp (no el genérico) reclama la URL, si no ``http``."""
        from daemon.downloaders.ytdlp import pick_downloader

        if not self._extractor_index_ready:
            async with self._index_lock:  # varias descargas arrancan a la vez: se carga una vez
                if not self._extractor_index_ready:
                    await self._warm_extractor_index()
        try:
            return str(pick_downloader(url, "auto"))
        except Exception as exc:
            _log.warning("daemon.error", where="pick_downloader", error=repr(exc))
            return "http"

    async def _warm_extractor_index(self) -> None:
        """Carga el índice de extractores de yt-dlp fuera del bucle (~0,4-1 s una vez por proceso),
        justo antes del primer trabajo: el daemon ocioso no paga esa memoria."""
        from daemon.downloaders.ytdlp import preload_extractors

        try:
            await asyncio.to_thread(preload_extractors)
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
