"""Los programas externos de yt-dlp: ffmpeg (fusionar, HLS/DASH, post-proceso) y deno (YouTube).

- **ffmpeg**: ``ytdlp.ffmpeg: auto`` usa el ``ffmpeg`` del PATH si lo hay; si no, el binario
  estático que trae la rueda ``imageio-ffmpeg`` (una dependencia: una máquina recién instalada
  tiene ffmpeg sin apt). Una ruta explícita se usa tal cual (y se comprueba al arrancar).
- **deno**: el ``deno`` del PATH; si no, el que instala la rueda ``deno`` de PyPI junto al
  intérprete (``<venv>/bin/deno``). yt-dlp lo recibe con ``--js-runtimes deno:RUTA``; sus scripts
  EJS vienen de ``yt-dlp-ejs`` (el extra ``yt-dlp[default]``).

Nada aquí importa yt_dlp; ``describe_tools`` lanza ``ffmpeg -version`` y ``deno --version`` una vez
(para ``check-config`` y ``daemon.ready``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ToolInfo", "describe_tools", "find_deno", "find_ffmpeg", "print_tools", "tool_version"]


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """Un programa encontrado: ruta (None si no hay), de dónde salió y su versión."""

    name: str
    path: str | None
    source: str  # PATH | imageio-ffmpeg | deno wheel | config | missing
    version: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "source": self.source, "version": self.version}


def find_ffmpeg(configured: str = "auto") -> tuple[str | None, str]:
    """(ruta, origen) del ffmpeg a usar. ``configured``: ``auto`` o una ruta."""
    if configured and configured != "auto":
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path), "config"
        return None, "missing"
    found = shutil.which("ffmpeg")
    if found:
        return found, "PATH"
    try:
        import imageio_ffmpeg

        exe = str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # sin la rueda o sin binario para esta plataforma
        return None, "missing"
    return exe, "imageio-ffmpeg"


def find_deno() -> tuple[str | None, str]:
    """(ruta, origen) del deno a usar: PATH, si no el de la rueda ``deno`` junto al intérprete."""
    found = shutil.which("deno")
    if found:
        return found, "PATH"
    beside = Path(sys.executable).parent / "deno"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside), "deno wheel"
    try:
        import deno

        wheel = str(deno.find_deno_bin())
    except Exception:
        return None, "missing"
    return (wheel, "deno wheel") if os.access(wheel, os.X_OK) else (None, "missing")


def tool_version(path: str | None, flag: str = "-version") -> str | None:
    """Primera línea de ``PATH FLAG`` (recortada), o None si no arranca."""
    if path is None:
        return None
    try:
        done = subprocess.run([path, flag], capture_output=True, timeout=20, check=False,
                              stdin=subprocess.DEVNULL, env=dict(os.environ))
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if done.returncode != 0 or not lines:
        return None
    return lines[0].strip()[:120]


@functools.cache
def describe_tools(configured_ffmpeg: str = "auto") -> dict[str, ToolInfo]:
    """ffmpeg y deno tal como los usará yt-dlp (una vez por proceso: lanza ``-version``)."""
    ffmpeg, ffmpeg_source = find_ffmpeg(configured_ffmpeg)
    deno, deno_source = find_deno()
    deno_version = tool_version(deno, "--version")
    return {
        "ffmpeg": ToolInfo("ffmpeg", ffmpeg, ffmpeg_source, tool_version(ffmpeg)),
        "deno": ToolInfo("deno", deno, deno_source, deno_version),
    }


def print_tools(settings: Any) -> None:
    """Las líneas de ``check-config`` sobre yt-dlp, ffmpeg y deno (``settings``: ``daemon.config.Settings``)."""
    if not settings.ytdlp.enabled:
        print("  tools: yt-dlp disabled (ytdlp.enabled: false)")
        return
    from daemon.downloaders.ytdlp.extractors import ytdlp_version

    print(f"  tools: yt-dlp {ytdlp_version()}")
    for name, info in describe_tools(settings.ytdlp.ffmpeg).items():
        where = f"{info.path} (from {info.source})" if info.path else "missing"
        print(f"  tools: {name} = {where}; version: {info.version or 'unknown'}")
        if name == "deno" and info.path:
            print("  tools: yt-dlp JavaScript runtime = deno (YouTube needs it; EJS scripts from yt-dlp-ejs)")
