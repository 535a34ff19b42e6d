"""El zigoto visto desde el daemon: arrancarlo a demanda, pedirle hijos y pararlo.

El zigoto (``zygote_server.py serve FD``) es un proceso de larga vida con yt-dlp ya importado;
por cada trabajo hace ``fork()`` y el hijo ejecuta yt-dlp en su propio grupo de procesos. Aquí
se habla con él por un socket ``SOCK_SEQPACKET``: cada petición lleva el argv y tres descriptores
(stdout, stderr y un socket de estado por el que llegan el pid del hijo y, al final, su estado).
Un zigoto que falla se deja fuera ``_ZYGOTE_RETRY_AFTER`` segundos (los trabajos van a la etapa 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from daemon.downloaders.ytdlp.argv import ZYGOTE_SCRIPT, child_env
from daemon.downloaders.ytdlp.extractors import ytdlp_version
from daemon.downloaders.ytdlp.process import LINE_LIMIT, ExitInfo, Running, complete, pipe_reader, resolve
from daemon.events import get_logger

__all__ = ["ZygoteClient", "ZygoteRun", "ZygoteUnavailable"]

_log = get_logger()

_ZYGOTE_START_TIMEOUT = 60.0
_ZYGOTE_RETRY_AFTER = 30.0
_SPAWN_REPLY_TIMEOUT = 30.0


class ZygoteUnavailable(Exception):
    """El zigoto no pudo lanzar el trabajo (que no llegó a empezar)."""


class ZygoteRun(Running):
    """Etapa 2: hijo del zigoto. El zigoto lo recoge y nos manda el estado por un socket."""

    mode = "zygote"

    def __init__(self, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport], status: asyncio.StreamReader) -> None:
        self._status = status
        super().__init__(pid, stdout, stderr, transports)

    async def _wait_impl(self) -> ExitInfo:
        try:
            line = await self._status.readline()
            message = json.loads(line) if line else {}
        except (ValueError, OSError):
            message = {}
        if "returncode" not in message:
            # El zigoto murió: el hijo queda huérfano. Se mata su grupo por si sigue vivo.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self.exit_info = ExitInfo(None, None)
        else:
            self.exit_info = ExitInfo(int(message["returncode"]), message.get("cpu_s"))
        return self.exit_info


class ZygoteClient:
    """Arranca el zigoto a demanda, le pide procesos y lo para. Un fallo lo deja fuera un rato."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.popen: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.version: str | None = None
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        """Pid del zigoto si se arrancó (y no se ha descartado)."""
        return self.popen.pid if self.popen is not None else None

    async def ensure_started(self) -> bool:
        """True si el zigoto está en marcha (arrancándolo si hace falta y no falló hace poco)."""
        async with self._lock:
            if self.control is not None and self.popen is not None and self.popen.poll() is None:
                return True
            if self.popen is not None:
                # Murió entre trabajos. Si llevaba un rato vivo se rearranca ya; si murió nada más
                # arrancar, cuenta como fallo y se espera antes de volver a intentarlo.
                lived = time.monotonic() - self._started_at
                self._discard(f"exited with status {self.popen.returncode}",
                              failed=lived < _ZYGOTE_RETRY_AFTER)
            if self._failed_at is not None and time.monotonic() - self._failed_at < _ZYGOTE_RETRY_AFTER:
                return False
            try:
                await self._start()
            except (OSError, TimeoutError, ValueError) as exc:
                self._discard(f"start-up failed: {exc or type(exc).__name__}")
                return False
            except BaseException:
                self._discard("start-up cancelled", failed=False)
                raise
            return True

    async def _start(self) -> None:
        started = time.monotonic()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [self.python, "-P", str(ZYGOTE_SCRIPT), "serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=child_env(), start_new_session=True, close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_ZYGOTE_START_TIMEOUT):
            data = await loop.sock_recv(ours, 65536)
        if not data:
            raise OSError("the yt-dlp zygote exited during start-up")
        hello = json.loads(data)
        self.version = str(hello.get("ytdlp_version") or ytdlp_version())
        self._failed_at = None
        self._started_at = time.monotonic()
        _log.info("ytdlp.zygote_started", pid=self.popen.pid, ytdlp_version=self.version,
                  startup_s=round(time.monotonic() - started, 3))

    def _discard(self, reason: str, failed: bool = True) -> None:
        """Olvida un zigoto roto (lo mata si sigue vivo); si ``failed``, recuerda cuándo falló."""
        if self.control is not None:
            self.control.close()
            self.control = None
        retry_after_s = _ZYGOTE_RETRY_AFTER if failed else 0.0
        if self.popen is not None:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
            _log.warning("ytdlp.zygote_unavailable", pid=self.popen.pid, reason=reason,
                         retry_after_s=retry_after_s)
        else:
            _log.warning("ytdlp.zygote_unavailable", reason=reason, retry_after_s=retry_after_s)
        self.popen = None
        self._failed_at = time.monotonic() if failed else None

    async def spawn(self, argv: Sequence[str], cwd: Path, guard: bool) -> ZygoteRun:
        """Pide al zigoto un hijo para ``argv``. ``ZygoteUnavailable`` si no llegó a empezar.

        Una vez enviada la petición, el resto (esperar el pid, abrir las tuberías) termina
        aunque llegue una cancelación, que se entrega después: así ningún hijo queda sin dueño.
        """
        control = self.control
        if control is None:
            raise ZygoteUnavailable("not running")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            payload = json.dumps({"argv": list(argv), "cwd": str(cwd), "guard": guard}).encode()
            await _send_fds(control, payload, [out_w, err_w, theirs.fileno()])
        except BaseException as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            ours.close()
            if isinstance(exc, OSError):
                async with self._lock:
                    if self.control is control:
                        self._discard(f"request failed: {exc.strerror or exc}")
                raise ZygoteUnavailable(str(exc)) from None
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
            theirs.close()
        try:
            return await complete(self._accept(ours, out_r, err_r))
        except ZygoteUnavailable as exc:
            async with self._lock:
                if self.control is control:
                    self._discard(f"no reply to a job request: {exc}")
            raise

    async def _accept(self, ours: socket.socket, out_r: int, err_r: int) -> ZygoteRun:
        """Espera el pid del hijo y abre sus tuberías; si no llega, no hubo hijo."""
        transports: list[asyncio.BaseTransport] = []
        try:
            # Lector a mano, sin StreamWriter: su __del__ cerraría el socket al recogerse.
            status = asyncio.StreamReader(limit=LINE_LIMIT)
            t_status, _ = await asyncio.get_running_loop().create_unix_connection(
                lambda: asyncio.StreamReaderProtocol(status), sock=ours
            )
            transports.append(t_status)
            async with asyncio.timeout(_SPAWN_REPLY_TIMEOUT):
                line = await status.readline()
            reply = json.loads(line) if line else {}
            if not isinstance(reply, dict) or "pid" not in reply:
                error = reply.get("error") if isinstance(reply, dict) else None
                raise ZygoteUnavailable(str(error or "the zygote did not start the job"))
            stdout, t_out = await pipe_reader(out_r)
            out_r = -1
            transports.append(t_out)
            stderr, t_err = await pipe_reader(err_r)
            err_r = -1
            transports.append(t_err)
        except (OSError, ValueError, TimeoutError) as exc:
            raise ZygoteUnavailable(str(exc) or type(exc).__name__) from None
        finally:
            if err_r >= 0:
                for transport in transports:
                    transport.close()
                if not transports:
                    ours.close()
                for fd in (out_r, err_r):
                    if fd >= 0:
                        os.close(fd)
        return ZygoteRun(int(reply["pid"]), stdout, stderr, transports, status)

    async def aclose(self) -> None:
        """Cierra el socket de control: el zigoto termina sus trabajos vivos y sale."""
        async with self._lock:
            control, popen = self.control, self.popen
            self.control, self.popen = None, None
            if control is not None:
                control.close()
            if popen is None:
                return
            try:
                await asyncio.to_thread(popen.wait, 10)
            except subprocess.TimeoutExpired:
                popen.kill()
                await asyncio.to_thread(popen.wait)
            _log.info("ytdlp.zygote_stopped", pid=popen.pid, returncode=popen.returncode)


async def _send_fds(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    """``send_fds`` sobre un socket no bloqueante, esperando a que admita escritura."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(sock, [payload], fds)
            return
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock.fileno(), resolve, ready)
            try:
                await ready
            finally:
                loop.remove_writer(sock.fileno())
