"""``YtdlpDownloader``: un trabajo de yt-dlp de principio a fin, aislado y cancelable.

Comprueba la URL y el primer salto de red (``preflight``), construye el argv (``argv``), lanza
yt-dlp desde el zigoto o como subproceso (``zygote_client``, ``process``), lee su salida
(``output``), lo termina si se cancela, agota el tiempo o pasa de ``max_bytes``, y devuelve el
archivo que dejó en el directorio aislado o un error clasificado (``errors``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from daemon.downloaders.base import (
    DownloadOptions,
    DownloadResult,
    DownloadTimeout,
    ProgressCallback,
    SizeLimitExceeded,
    StorageError,
)
from daemon.downloaders.ytdlp.argv import build_argv
from daemon.downloaders.ytdlp.errors import classify_failure
from daemon.downloaders.ytdlp.extractors import known_claim, ytdlp_version
from daemon.downloaders.ytdlp.inputs import withheld_headers
from daemon.downloaders.ytdlp.output import RunState, SizeLimitHit, clean_line, consume
from daemon.downloaders.ytdlp.preflight import check_job_url, refuse_private_host
from daemon.downloaders.ytdlp.process import ExitInfo, Running, start_subprocess
from daemon.downloaders.ytdlp.result import build_result, checked_paths
from daemon.downloaders.ytdlp.tools import find_deno, find_ffmpeg
from daemon.downloaders.ytdlp.zygote_client import ZygoteClient, ZygoteUnavailable
from daemon.events import get_logger, redact

__all__ = ["YtdlpDownloader"]

_log = get_logger()


class YtdlpDownloader:
    """Descargador ``ytdlp`` (protocolo ``Downloader``).

    ``kill_grace``: espera entre TERM y KILL al cancelar o agotar el tiempo.
    ``socket_timeout``: ``--socket-timeout`` de yt-dlp (acotado por el ``timeout`` del trabajo).
    ``use_zygote``: lanzar cada trabajo desde el zigoto (etapa 2); si no, o si el zigoto no está
    disponible, un subproceso por trabajo (etapa 1). Los ajustes se fijan al crearlo (el daemon
    lo crea al arrancar: cambiarlos en la configuración pide reiniciar); ``aclose()`` para el
    zigoto al parar el daemon.
    """

    name = "ytdlp"

    def __init__(
        self,
        kill_grace: float = 5.0,
        socket_timeout: float = 30.0,
        use_zygote: bool = True,
        python: str | None = None,
        fragment_retries: int = 3,
        ffmpeg: str = "auto",
        concurrent_fragments: int = 8,
    ) -> None:
        self.kill_grace = float(kill_grace)
        self.socket_timeout = float(socket_timeout)
        self.use_zygote = bool(use_zygote)
        self.python = python or sys.executable
        self.fragment_retries = int(fragment_retries)
        self.concurrent_fragments = int(concurrent_fragments)
        # ffmpeg (PATH, si no el de imageio-ffmpeg) y deno (PATH, si no el de la rueda): se buscan una vez.
        self.ffmpeg, self.ffmpeg_source = find_ffmpeg(ffmpeg)
        self.deno, self.deno_source = find_deno()
        self._zygote = ZygoteClient(self.python)

    @property
    def zygote_pid(self) -> int | None:
        """Pid del zigoto si está en marcha (para el estado y las pruebas)."""
        return self._zygote.pid

    async def prestart(self) -> bool:
        """Arranca ya el zigoto (si ``use_zygote``) para que el primer trabajo no espere ~1 s.

        Opcional: sin esto se arranca con el primer trabajo. True si quedó disponible."""
        return self.use_zygote and await self._zygote.ensure_started()

    async def aclose(self) -> None:
        """Para el zigoto (si lo hay). Los trabajos en curso deben cancelarse antes."""
        await self._zygote.aclose()

    async def download(self, options: DownloadOptions, progress: ProgressCallback | None = None) -> DownloadResult:
        """Descarga ``options.url`` con yt-dlp dentro de ``options.output_path``."""
        if options.output_path is None:
            raise ValueError("options.output_path is not set; run the download through DownloadLifecycle")
        out_dir = Path(options.output_path)
        checked = check_job_url(options)
        if not options.allow_private_networks:
            await refuse_private_host(checked.host, checked.port, options.url)
        args = build_argv(options, socket_timeout=self.socket_timeout, fragment_retries=self.fragment_retries,
                          ffmpeg=self.ffmpeg, deno=self.deno, concurrent_fragments=self.concurrent_fragments)
        guard = not options.allow_private_networks
        run, version = await self._start(args, out_dir, guard)
        cid = options.correlation_id
        started_event: dict[str, Any] = {"ytdlp_version": version, "pid": run.pid, "mode": run.mode}
        known = known_claim(options.url)
        if known:
            started_event["extractor"] = known
        withheld = withheld_headers(options)
        if withheld:
            # Sólo irían al origen de la URL, y yt-dlp no puede limitarlas a él (``inputs``).
            started_event["withheld_headers"] = withheld
        _log.info("ytdlp.started", correlation_id=cid, **started_event)

        state = RunState(options.max_bytes, progress)
        started = time.monotonic()
        outcome = "failed"
        killed = False
        exit_info: ExitInfo | None = None
        try:
            try:
                async with asyncio.timeout(options.timeout):
                    await consume(run.stdout, run.stderr, state)
                    exit_info = await run.wait()
            except TimeoutError:
                killed, outcome = True, "timeout"
                exit_info = await run.terminate(self.kill_grace)
                raise DownloadTimeout(
                    f"yt-dlp did not finish within {options.timeout:g}s", timeout_s=options.timeout,
                    **self._details(state, exit_info, version),
                ) from None
            except SizeLimitHit as hit:
                killed, outcome = True, "too_large"
                exit_info = await run.terminate(self.kill_grace)
                raise SizeLimitExceeded(
                    f"download exceeded the size limit of {options.max_bytes} bytes",
                    max_bytes=options.max_bytes, seen_bytes=hit.seen, **self._details(state, exit_info, version),
                ) from None
            except BaseException as exc:  # CancelledError, KeyboardInterrupt, errores propios
                killed = True
                outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                exit_info = await run.terminate(self.kill_grace)
                raise
            if exit_info.returncode == 0 and state.files:
                result = await self._result(out_dir, state, version, run, options)
                outcome = "succeeded"
                return result
            raise classify_failure(
                exit_info.returncode, list(state.stderr_tail), list(state.screen_tail),
                **self._details(state, exit_info, version, with_tail=False),
            )
        finally:
            run.close()
            info = exit_info or run.exit_info
            _log.info(
                "ytdlp.finished", correlation_id=cid, pid=run.pid, mode=run.mode,
                returncode=info.returncode if info else None, extractor=state.extractor,
                outcome=outcome, killed=killed, duration_s=round(time.monotonic() - started, 3),
                cpu_s=info.cpu_s if info else None,
            )

    # --- partes de download() ------------------------------------------------------------------
    async def _start(self, args: list[str], cwd: Path, guard: bool) -> tuple[Running, str]:
        if self.use_zygote and await self._zygote.ensure_started():
            try:
                run = await self._zygote.spawn(args, cwd, guard)
                return run, self._zygote.version or ytdlp_version()
            except ZygoteUnavailable:
                pass  # el trabajo no llegó a empezar: etapa 1
        return await start_subprocess(args, cwd, guard, self.python), ytdlp_version()

    @staticmethod
    def _details(state: RunState, exit_info: ExitInfo | None, version: str,
                 with_tail: bool = True) -> dict[str, Any]:
        details: dict[str, Any] = {"ytdlp_version": version, "extractor": state.extractor}
        if with_tail:
            details["returncode"] = exit_info.returncode if exit_info else None
            details["stderr_tail"] = [clean_line(line) for line in state.stderr_tail]
        return details

    async def _result(self, out_dir: Path, state: RunState, version: str, run: Running,
                      options: DownloadOptions) -> DownloadResult:
        extra: dict[str, Any] = {"ytdlp_version": version, "extractor": state.extractor,
                                 "ytdlp_mode": run.mode}
        if state.media_id:
            extra["media_id"] = redact(state.media_id)
        if run.exit_info is not None and run.exit_info.cpu_s is not None:
            extra["ytdlp_cpu_s"] = run.exit_info.cpu_s
        try:
            paths = checked_paths(out_dir, state.files)
            # yt-dlp ya terminó y el directorio es sólo nuestro (0700): tamaño y hash no cambian.
            return await asyncio.to_thread(build_result, out_dir, paths, state.file_info, options, extra)
        except StorageError as exc:
            exc.details.update(self._details(state, run.exit_info, version))
            raise
        except OSError as exc:
            raise StorageError(f"cannot read the downloaded file: {exc.strerror or exc}") from None
