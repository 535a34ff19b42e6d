"""Un yt-dlp en marcha: su grupo de procesos, sus tuberías, su final y cómo terminarlo.

Cada yt-dlp corre en su propio grupo de procesos (``setsid``), con stdin cerrado. ``Running``
es lo común a los dos modos (subproceso propio o hijo del zigoto): esperar el final, mandar una
señal al grupo entero y ``terminate`` (TERM, KILL tras ``kill_grace``, recoger), que sobrevive a
nuevas cancelaciones para que ningún proceso quede atrás. Antes de recoger a un líder se mata lo
que quede en su grupo, con el líder aún zombi para que el pgid no pueda reutilizarse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from daemon.downloaders.ytdlp.argv import child_env, ytdlp_command
from daemon.downloaders.ytdlp.errors import YtdlpFailed

__all__ = [
    "LINE_LIMIT",
    "ExitInfo",
    "Running",
    "SubprocessRun",
    "complete",
    "pipe_reader",
    "resolve",
    "start_subprocess",
]

LINE_LIMIT = 256 * 1024
_T = TypeVar("_T")


@dataclass(slots=True)
class ExitInfo:
    """Cómo terminó un yt-dlp."""

    returncode: int | None  # negativo: señal; None: desconocido (el zigoto desapareció)
    cpu_s: float | None = None


class Running:
    """Un yt-dlp en marcha, sea subproceso o hijo del zigoto: pid (= pgid), stdout, stderr."""

    mode = "?"

    def __init__(self, pid: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport]) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._transports = transports
        self.exit_info: ExitInfo | None = None
        self._wait_task: asyncio.Task[ExitInfo] = asyncio.ensure_future(self._wait_impl())

    async def _wait_impl(self) -> ExitInfo:  # pragma: no cover - lo redefine cada modo
        raise NotImplementedError

    async def wait(self) -> ExitInfo:
        """Espera el final (varias esperas comparten la misma; cancelar una no la cancela)."""
        return await asyncio.shield(self._wait_task)

    def signal_group(self, sig: int) -> None:
        """Envía ``sig`` al grupo entero mientras el proceso no haya sido recogido."""
        if self.exit_info is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def terminate(self, kill_grace: float) -> ExitInfo:
        """TERM al grupo; KILL si no termina en ``kill_grace``; espera y recoge el proceso.

        Sobrevive a nuevas cancelaciones (que se entregan al terminar): ningún proceso queda atrás."""
        return await complete(self._terminate(kill_grace))

    async def _terminate(self, kill_grace: float) -> ExitInfo:
        if self.exit_info is not None:
            return self.exit_info
        self.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(kill_grace):
                return await self.wait()
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            return await self.wait()

    def close(self) -> None:
        """Cierra las tuberías (el proceso ya terminó o se terminó)."""
        for transport in self._transports:
            transport.close()


class SubprocessRun(Running):
    """Etapa 1: ``Popen`` propio en una sesión nueva; lo recogemos nosotros con ``wait4``."""

    mode = "subprocess"

    def __init__(self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader, transports: list[asyncio.BaseTransport]) -> None:
        self.popen = popen
        super().__init__(popen.pid, stdout, stderr, transports)

    async def _wait_impl(self) -> ExitInfo:
        pid = self.pid
        await self._exited()
        # El proceso es un zombi sin recoger: su pgid no puede reutilizarse todavía. Se mata lo
        # que quede en el grupo y después se recoge (con su uso de CPU).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _pid, status, usage = os.wait4(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = returncode  # que Popen no intente recogerlo otra vez
        self.exit_info = ExitInfo(returncode, round(usage.ru_utime + usage.ru_stime, 6))
        return self.exit_info

    async def _exited(self) -> None:
        """Espera a que el hijo termine sin recogerlo (pidfd; si no hay, un hilo con waitid)."""
        pid = self.pid
        flags = os.WEXITED | os.WNOWAIT
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            await asyncio.to_thread(os.waitid, os.P_PID, pid, flags)
            return
        loop = asyncio.get_running_loop()
        try:
            while os.waitid(os.P_PID, pid, flags | os.WNOHANG) is None:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(pidfd, resolve, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)


async def start_subprocess(args: Sequence[str], cwd: Path, guard: bool, python: str) -> SubprocessRun:
    """Etapa 1: lanza ``yt-dlp ARGS`` en una sesión nueva y engancha sus tuberías."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        popen = subprocess.Popen(
            ytdlp_command(args, guard=guard, python=python),
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, cwd=cwd, env=child_env(),
            start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        os.close(out_r)
        os.close(err_r)
        raise YtdlpFailed(f"cannot start yt-dlp: {exc.strerror or exc}") from None
    finally:
        os.close(out_w)
        os.close(err_w)

    async def attach() -> SubprocessRun:
        stdout, t_out = await pipe_reader(out_r)
        stderr, t_err = await pipe_reader(err_r)
        return SubprocessRun(popen, stdout, stderr, [t_out, t_err])

    # El proceso ya corre: terminar de engancharlo aunque llegue una cancelación.
    return await complete(attach())


def resolve(future: asyncio.Future[None]) -> None:
    """Da por cumplido ``future`` (para ``add_reader``/``add_writer``)."""
    if not future.done():
        future.set_result(None)


async def pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """Un ``StreamReader`` sobre el extremo de lectura ``fd`` de una tubería (del que se adueña)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def complete(coro: Awaitable[_T]) -> _T:
    """Espera ``coro`` hasta el final aunque cancelen la tarea actual; la cancelación se vuelve
    a pedir al terminar, de modo que llega en el siguiente ``await`` (tras la limpieza)."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        current = asyncio.current_task()
        if current is not None:
            current.cancel()
    return task.result()
