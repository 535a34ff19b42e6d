"""Medios reales generados sin red en tiempo de prueba (ffmpeg lavfi: testsrc + sine) y su análisis.

``MediaSet(root)`` crea, con el ffmpeg que usa el daemon (PATH o imageio-ffmpeg):

- ``progressive/clip.mp4``: MP4 progresivo (H.264 + AAC, faststart);
- ``hls_ts/index.m3u8`` + segmentos ``.ts`` y ``hls_fmp4/index.m3u8`` + ``init.mp4`` y ``.m4s``;
- ``dash/manifest.mpd``: DASH con vídeo y audio en adaptaciones separadas;
- una página HTML con ``<video><source type=...>`` para cada uno.

``serve(server, root)`` registra cada archivo en el servidor de pruebas con su Content-Type, y
``probe(path)`` lee con ``ffmpeg -i`` los flujos, el tamaño y la duración de un archivo.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from daemon.downloaders.ytdlp.tools import find_ffmpeg
from tests.support.http_server import Behavior, TestServer

__all__ = ["CONTENT_TYPES", "MediaSet", "Probe", "ffmpeg", "page", "probe", "serve"]

CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
    ".m4s": "video/iso.segment", ".mpd": "application/dash+xml", ".html": "text/html; charset=utf-8",
}


def ffmpeg() -> str:
    path, _source = find_ffmpeg("auto")
    assert path is not None, "no ffmpeg: install the project (imageio-ffmpeg ships one)"
    return path


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *args], cwd=cwd,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]


def _sources(duration: float, size: str, rate: int) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={duration}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={duration}"]


_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25",
         "-sc_threshold", "0"]
_AAC = ["-c:a", "aac", "-b:a", "64k"]


def page(title: str, src: str, mime: str) -> bytes:
    return (f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
            f'<video controls><source src="{src}" type="{mime}"></video></body></html>').encode()


@dataclass
class MediaSet:
    """Los medios de prueba bajo ``root`` (se generan al crearlo; unos segundos)."""

    root: Path
    duration: float = 4.0
    size: str = "320x240"
    kinds: tuple[str, ...] = ("progressive", "hls_ts", "hls_fmp4", "dash")
    files: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = _sources(self.duration, self.size, 25)
        for kind in self.kinds:
            folder = self.root / kind
            folder.mkdir(parents=True, exist_ok=True)
            if kind == "progressive":
                _run([*src, *_X264, *_AAC, "-shortest", "-movflags", "+faststart", "clip.mp4"], folder)
                self.files[kind] = folder / "clip.mp4"
            elif kind in ("hls_ts", "hls_fmp4"):
                extra = (["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4",
                          "-hls_segment_filename", "seg%03d.m4s"] if kind == "hls_fmp4"
                         else ["-hls_segment_filename", "seg%03d.ts"])
                _run([*src, *_X264, *_AAC, "-shortest", "-f", "hls", "-hls_time", "1",
                      "-hls_playlist_type", "vod", *extra, "index.m3u8"], folder)
                self.files[kind] = folder / "index.m3u8"
            elif kind == "dash":
                _run([*src, *_X264, *_AAC, "-shortest", "-map", "0:v", "-map", "1:a", "-f", "dash",
                      "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0",
                      "-adaptation_sets", "id=0,streams=v id=1,streams=a", "manifest.mpd"], folder)
                self.files[kind] = folder / "manifest.mpd"
            mime = CONTENT_TYPES[self.files[kind].suffix]
            (folder / "page.html").write_bytes(page(f"{kind} clip", self.files[kind].name, mime))


def serve(server: TestServer, root: Path, prefix: str = "/media") -> None:
    """Registra cada archivo de ``root`` (recursivo) en ``server`` bajo ``prefix``."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ctype = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        server.add(f"{prefix}/{path.relative_to(root).as_posix()}", Behavior(data=path.read_bytes(),
                                                                            content_type=ctype))


@dataclass(frozen=True)
class Probe:
    """Lo que ``ffmpeg -i`` dice de un archivo."""

    video: tuple[str, ...]
    audio: tuple[str, ...]
    width: int
    height: int
    duration: float
    major_brand: str
    raw: str


def probe(path: Path) -> Probe:
    done = subprocess.run([ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, timeout=60, check=False)
    text = done.stderr.decode(errors="replace")
    video = tuple(re.findall(r"Stream #\S+.*?: Video: (\w+)", text))
    audio = tuple(re.findall(r"Stream #\S+.*?: Audio: (\w+)", text))
    size = re.search(r"Stream #\S+.*?: Video: .*?, (\d{2,5})x(\d{2,5})", text)
    dur = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", text)
    brand = re.search(r"major_brand\s*:\s*(\S+)", text)
    seconds = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else -1.0
    return Probe(video, audio, int(size[1]) if size else 0, int(size[2]) if size else 0, seconds,
                 brand[1] if brand else "", text)


def moov_before_mdat(path: Path) -> bool:
    """True si el átomo ``moov`` va antes que ``mdat`` (faststart)."""
    data = path.read_bytes()
    moov, mdat = data.find(b"moov"), data.find(b"mdat")
    return 0 <= moov < mdat
