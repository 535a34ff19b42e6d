"""Post-proceso: un programa del operador entre la descarga y la publicación.

Los perfiles los define el operador en config.yaml, nunca un trabajo::

    postprocess:
      profiles:
        videonote:
          command: [ffmpeg, -i, "{input}", ..., "{output}"]
          timeout: 10m
          extension: mp4

Un trabajo elige uno con ``postprocess: NOMBRE`` (un nombre desconocido se rechaza listando los
que hay). El programa corre tras verificar la descarga y antes del punto de no retorno: en el
directorio aislado del trabajo, en su propio grupo de procesos, con stdin cerrado, dentro de lo
que quede del ``timeout`` del intento (y del suyo propio), y se puede cancelar (TERM al grupo,
KILL tras 5 s, y se recoge). Sólo se publica su salida ``{output}``. La cola de stderr (acotada)
va a ``job.postprocess_finished``; un código distinto de 0 hace fallar el trabajo con el tipo
``postprocess`` y esa cola. ``ffmpeg`` como programa es el que usa yt-dlp (``ytdlp.tools``).
En una lista (``playlist: true``) corre una vez por archivo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.downloaders.base import DownloadResult, DownloadTimeout, PermanentDownloadError
from daemon.events import get_logger, redact
from daemon.units import parse_duration

__all__ = ["PostprocessFailed", "PostprocessSettings", "Profile", "ffmpeg_setting", "parse_profiles",
           "postprocess_step", "run_postprocess"]

_log = get_logger()
_KILL_GRACE = 5.0
_TAIL_LINES = 20
_LINE_CHARS = 300
_OUT_DIR = ".postprocess"
_PLACEHOLDERS = ("{input}", "{output}")


class PostprocessFailed(PermanentDownloadError):
    """El programa de post-proceso terminó con un código distinto de 0 o sin salida."""

    kind = "postprocess"


@dataclass(frozen=True, slots=True)
class Profile:
    """Un perfil: argv con ``{input}`` y ``{output}``, su límite de tiempo y la extensión de la salida."""

    name: str
    command: tuple[str, ...]
    timeout: float = 600.0
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class PostprocessSettings:
    """Sección ``postprocess`` de la configuración."""

    profiles: Mapping[str, Profile] = field(default_factory=dict)


def parse_profiles(value: Any) -> dict[str, Profile]:
    """``postprocess.profiles`` de config.yaml -> perfiles; ``ValueError`` con lo que falta si no vale."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("give a mapping of NAME: {command: [...], timeout: 10m}")
    profiles: dict[str, Profile] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"profile name {name!r} must use only letters, digits, - and _")
        if not isinstance(spec, dict) or set(spec) - {"command", "timeout", "extension"}:
            raise ValueError(f"profile {name!r} takes only command (a list), timeout and extension")
        command = spec.get("command")
        if (not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
                or not all(any(p in a for a in command) for p in _PLACEHOLDERS)):
            raise ValueError(f"profile {name!r}: command must be a list of strings using {{input}} and {{output}}")
        extension = spec.get("extension")
        if extension is not None and (not isinstance(extension, str) or not extension.isalnum()):
            raise ValueError(f"profile {name!r}: extension must be letters and digits, like mp4")
        timeout = parse_duration(spec.get("timeout", 600))
        if timeout <= 0:
            raise ValueError(f"profile {name!r}: timeout must be above zero")
        profiles[name] = Profile(name, tuple(command), timeout, extension)
    return profiles


def ffmpeg_setting(value: Any) -> str:
    """``ytdlp.ffmpeg``: ``auto`` o la ruta absoluta de un ffmpeg ejecutable."""
    if value == "auto" or (isinstance(value, str) and os.path.isabs(value) and os.access(value, os.X_OK)):
        return str(value)
    raise ValueError(f"give auto or the absolute path of an executable ffmpeg, not {str(value)[:80]!r}")


def _argv(profile: Profile, source: Path, output: Path) -> list[str]:
    argv = [a.replace("{input}", str(source)).replace("{output}", str(output)) for a in profile.command]
    if argv[0] == "ffmpeg":  # el mismo ffmpeg que yt-dlp: PATH, si no el de imageio-ffmpeg
        from daemon.downloaders.ytdlp.tools import find_ffmpeg

        argv[0] = find_ffmpeg("auto")[0] or "ffmpeg"
    return argv


def _output_name(filename: str, extension: str | None) -> str:
    if not extension:
        return filename
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem}.{extension}"


async def run_postprocess(profile: Profile, result: DownloadResult, temp_dir: Path, job_id: str,
                          remaining: float) -> DownloadResult:
    """Corre ``profile`` sobre el resultado (cada archivo, si es una carpeta); devuelve lo que se publica."""
    out_dir = temp_dir / _OUT_DIR
    if out_dir.exists():  # de un intento anterior: se rehace entero
        await asyncio.to_thread(_remove_tree, out_dir)
    out_dir.mkdir(mode=0o700)
    deadline = time.monotonic() + min(profile.timeout, remaining)
    if not result.path.is_dir():
        output = out_dir / _output_name(result.filename, profile.extension)
        await _run_one(profile, result.path, output, temp_dir, job_id, deadline)
        return await asyncio.to_thread(_file_result, output, result, profile)
    for source in sorted(p for p in result.path.iterdir() if p.is_file()):
        await _run_one(profile, source, out_dir / _output_name(source.name, profile.extension), temp_dir,
                       job_id, deadline)
    from daemon.downloaders.ytdlp.result import folder_result

    extra = {k: v for k, v in result.extra.items() if k != "files"}
    extra["postprocess"] = profile.name
    return await asyncio.to_thread(folder_result, out_dir, result.filename, 1 << 62, extra)


async def postprocess_step(options: Any, result: DownloadResult, attempt_started: float | None) -> DownloadResult:
    """El paso del camino de un trabajo: sin perfil, el resultado tal cual; con perfil, su salida.

    ``options`` es el ``DownloadOptions`` del trabajo; el tiempo es lo que quede de su ``timeout``
    desde el comienzo del intento (``attempt_started``, hora de pared)."""
    profile = options.postprocess
    if profile is None:
        return result
    elapsed = time.time() - attempt_started if attempt_started else 0.0
    return await run_postprocess(profile, result, Path(options.output_path), str(options.correlation_id),
                                 float(options.timeout) - elapsed)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _file_result(output: Path, source: DownloadResult, profile: Profile) -> DownloadResult:
    from daemon.sha import file_sha256

    extra = dict(source.extra)
    extra["postprocess"] = {"profile": profile.name, "source_size": source.size, "source_sha256": source.sha256}
    return DownloadResult(path=output, filename=output.name, size=output.stat().st_size,
                          sha256=file_sha256(output), final_url=source.final_url, extra=extra)


async def _run_one(profile: Profile, source: Path, output: Path, cwd: Path, job_id: str, deadline: float) -> None:
    argv = _argv(profile, source, output)
    budget = deadline - time.monotonic()
    if budget <= 0:
        raise DownloadTimeout(f"no time left for post-processing profile {profile.name!r}", profile=profile.name)
    _log.info("job.postprocess_started", correlation_id=job_id, profile=profile.name, input=source.name,
              timeout_s=round(budget, 3))
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
    except OSError as exc:
        raise PostprocessFailed(f"cannot start post-processing profile {profile.name!r}: {exc.strerror or exc}",
                                profile=profile.name, command=argv[0]) from None
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    outcome, returncode = "failed", None
    try:
        try:
            async with asyncio.timeout(budget):
                await _read_tail(proc, tail)
                returncode = await proc.wait()
        except TimeoutError:
            outcome = "timeout"
            returncode = await _kill(proc)
            raise DownloadTimeout(f"post-processing profile {profile.name!r} took longer than {budget:.0f}s",
                                  profile=profile.name, stderr_tail=list(tail)) from None
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            returncode = await _kill(proc)
            raise
        if returncode != 0:
            raise PostprocessFailed(
                f"post-processing profile {profile.name!r} exited with {returncode}: "
                f"{tail[-1] if tail else 'no stderr'}", profile=profile.name, returncode=returncode,
                stderr_tail=list(tail))
        if not output.is_file() or output.is_symlink() or output.stat().st_size == 0:
            raise PostprocessFailed(f"post-processing profile {profile.name!r} wrote no {{output}} file",
                                    profile=profile.name, stderr_tail=list(tail))
        outcome = "succeeded"
    finally:
        _log.info("job.postprocess_finished", correlation_id=job_id, profile=profile.name, outcome=outcome,
                  returncode=returncode, duration_s=round(time.monotonic() - started, 3), stderr_tail=list(tail))


async def _read_tail(proc: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
    """Guarda las últimas líneas de stderr (acotadas) sin retener el resto. ffmpeg separa con ``\\r``."""
    assert proc.stderr is not None
    pending = b""
    while chunk := await proc.stderr.read(65536):
        pending += chunk
        *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            _keep(raw, tail)
        pending = pending[-4096:]
    _keep(pending, tail)


def _keep(raw: bytes, tail: collections.deque[str]) -> None:
    line = redact(raw.decode("utf-8", "replace").strip())
    if line:
        tail.append(line if len(line) <= _LINE_CHARS else line[:_LINE_CHARS] + "...")


async def _kill(proc: asyncio.subprocess.Process) -> int | None:
    """TERM al grupo, KILL tras la espera, y recoger; sobrevive a nuevas cancelaciones."""
    from daemon.downloaders.ytdlp.process import complete

    async def stop() -> int | None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(_KILL_GRACE):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return await proc.wait()

    code = await complete(stop())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # lo que quede del grupo (hijos del programa)
    return code
