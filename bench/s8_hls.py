"""Escenario 8: un flujo HLS de 200 segmentos (~100 MB) frente a ``yt-dlp`` y ``yt-dlp -N 8``.

- El flujo se genera al correr el banco con el ffmpeg de la rueda ``imageio-ffmpeg`` (lavfi
  ``testsrc2`` con ruido, para que no se comprima; H.264 CBR + AAC, segmentos TS de 1 s) y se guarda
  en ``bench/results/raw/hls-cache/`` (ignorado por git): sólo la primera ejecución lo paga
  (~10 s). Se copia al tmpfs que sirve nginx.
- daemon: un trabajo ``downloader: auto`` (la URL ``.m3u8`` va a yt-dlp por su sufijo) con el
  ``ytdlp.concurrent_fragments`` del config (el valor por defecto, salvo ``BENCH_HLS_FRAGMENTS``);
  tiempo del rename del archivo de trabajo al evento ``job.published``. El zigoto se calienta antes
  con un trabajo pequeño (un daemon de larga vida lo tiene caliente).
- herramientas: ``yt-dlp`` del venv, solo y con ``-N 8``; tiempo de pared del proceso.
- Todos reciben el mismo ffmpeg (``--ffmpeg-location``): el remux TS -> MP4 del final (FixupM3u8)
  lo hacen todos, y el archivo resultante es comparable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

from bench.common import RAW_DIR, Measurement, Row, ScenarioResult, Target, log, median, ratios_to, run_paired
from bench.context import BenchContext
from bench.daemon_runner import BenchDaemon, job_yaml
from bench.infra import run_tool
from daemon.config import YtdlpSettings

__all__ = ["SEGMENTS", "generate_stream", "run"]

SEGMENTS = 200
SMOKE_SEGMENTS = 20
WARMUP_SEGMENTS = 2
_BITRATE = "3.8M"  # vídeo CBR con relleno: ~0,5 MB por segmento de 1 s
MB = 1_000_000


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def generate_stream(folder: Path, segments: int) -> Path:
    """Genera (una vez) ``folder/index.m3u8`` con ``segments`` segmentos TS de 1 s; devuelve la carpeta."""
    if (folder / ".complete").exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    staging = folder.with_name(folder.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    video = f"testsrc2=size=640x360:rate=25:duration={segments},noise=alls=60:allf=t"
    audio = f"sine=frequency=440:sample_rate=44100:duration={segments}"
    argv = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi",
            "-i", audio, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
            "-keyint_min", "25", "-sc_threshold", "0", "-b:v", _BITRATE, "-maxrate", _BITRATE, "-minrate",
            _BITRATE, "-bufsize", "4M", "-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-b:a", "64k",
            "-shortest", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
            "-hls_segment_filename", "seg%03d.ts", "index.m3u8"]
    started = time.time()
    done = subprocess.run(argv, cwd=staging, capture_output=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not generate the HLS stream: {done.stderr.decode(errors='replace')[-800:]}")
    count = sum(1 for p in staging.iterdir() if p.suffix == ".ts")
    if count != segments:
        raise RuntimeError(f"ffmpeg wrote {count} segments, expected {segments}")
    (staging / ".complete").write_text("")
    staging.rename(folder)
    log(f"  generated {segments} HLS segments ({_size(folder) / MB:.1f} MB) in {time.time() - started:.1f}s")
    return folder


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _served(ctx: BenchContext, segments: int) -> tuple[str, int]:
    """Copia el flujo (de la caché) al tmpfs servido; devuelve (URL del manifiesto, bytes servidos)."""
    cached = generate_stream(RAW_DIR / "hls-cache" / f"hls-{segments}x1s-{_BITRATE}", segments)
    target = ctx.www / f"hls{segments}"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cached, target)
    return f"{ctx.base_url}/hls{segments}/index.m3u8", _size(target)


def probe_streams(path: Path) -> tuple[int, int, float]:
    """(flujos de vídeo, flujos de audio, duración en s) según ``ffmpeg -i``."""
    import re

    done = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, timeout=60,
                          check=False)
    text = done.stderr.decode(errors="replace")
    dur = re.search(r"Duration: (\d+):(\d+):(\d+\.\d+)", text)
    seconds = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else -1.0
    return len(re.findall(r"Stream #\S+.*?: Video:", text)), len(re.findall(r"Stream #\S+.*?: Audio:", text)), seconds


def _check_media(path: Path, segments: int, who: str) -> None:
    videos, audios, seconds = probe_streams(path)
    if (videos, audios) != (1, 1) or abs(seconds - segments) > 1.5:
        raise RuntimeError(f"{who} produced {path} with {videos} video / {audios} audio streams, {seconds:.1f}s "
                           f"(expected 1/1, {segments}s)")


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 8 y devuelve su resultado."""
    segments = SMOKE_SEGMENTS if ctx.smoke else SEGMENTS
    url, served_bytes = _served(ctx, segments)
    warm_url, _ = _served(ctx, WARMUP_SEGMENTS)
    fragments = int(os.environ.get("BENCH_HLS_FRAGMENTS") or YtdlpSettings().concurrent_fragments)
    ffmpeg = _ffmpeg()
    ytdlp = str(Path(sys.executable).parent / "yt-dlp")
    rounds = ctx.rounds(5, heavy=True)
    base = ctx.scratch("s8")
    out = base / "tools"
    out.mkdir()
    overrides: dict[str, object] = {"max_concurrent": 1}
    if os.environ.get("BENCH_HLS_FRAGMENTS"):
        overrides["ytdlp"] = {"concurrent_fragments": fragments}
    daemon = BenchDaemon(base / "daemon", "s8", **overrides)
    daemon.start(profile="s8" if ctx.profile else None)
    # Calentamiento: el zigoto y el índice de extractores, como en un daemon que ya lleva un rato.
    daemon.drop([("warm.yaml", job_yaml(warm_url, "warm"))])
    daemon.wait_events("job.recorded", ["warm"], timeout=120)
    daemon.clear_outputs()
    checked: set[str] = set()

    def via_daemon(rnd: int) -> Measurement:
        cid = f"hls-r{rnd}"
        cpu0 = daemon.cpu_seconds()
        [t0] = daemon.drop([(f"{cid}.yaml", job_yaml(url, cid, filename=cid))])
        daemon.wait_events("job.recorded", [cid], timeout=600)
        cpu1 = daemon.cpu_seconds()
        record = orjson.loads((daemon.done / f"{cid}.json").read_bytes())
        if record.get("outcome") != "succeeded":
            raise RuntimeError(f"daemon job {cid} ended {record.get('outcome')}: {record.get('error')}")
        published = Path(record["path"])
        size = published.stat().st_size
        if "daemon" not in checked:
            _check_media(published, segments, "the daemon")
            checked.add("daemon")
        os.unlink(published)
        ev = daemon.events
        return {"wall": ev.ts("job.published", cid) - t0, "cpu": cpu1 - cpu0,  # type: ignore[operator]
                "pickup": ev.ts("job.started", cid) - t0, "size": float(size)}  # type: ignore[operator]

    def tool(name: str, extra: list[str]) -> tuple[str, object]:
        def measure(rnd: int) -> Measurement:
            target = out / f"{name.replace(' ', '_')}-r{rnd}.mp4"
            argv = [ytdlp, "--ignore-config", "--no-cache-dir", f"--ffmpeg-location={ffmpeg}", *extra,
                    "-o", str(target), url]
            result = run_tool(argv, cwd=out, timeout=600)
            if result.returncode != 0 or not target.exists():
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr}")
            size = target.stat().st_size
            if name not in checked:
                _check_media(target, segments, name)
                checked.add(name)
            target.unlink()
            for leftover in out.iterdir():  # nada de un intento queda para el siguiente
                if leftover.is_file():
                    leftover.unlink()
            return {"wall": result.wall, "cpu": result.cpu, "size": float(size)}

        return name, measure

    # La cuarta fila sólo informa (no entra en el objetivo): yt-dlp con los ajustes del daemon
    # (sus -N y el progreso cada 0,25 s); sin --progress-delta, yt-dlp pinta el progreso a cada trozo
    # leído y eso es la mayor parte de la diferencia con el daemon.
    tuned = f"yt-dlp -N {fragments} --progress-delta 0.25"
    contenders: list[tuple[str, object]] = [("daemon", via_daemon), tool("yt-dlp", []),
                                            tool("yt-dlp -N 8", ["-N", "8"]),
                                            tool(tuned, ["-N", str(fragments), "--progress-delta", "0.25",
                                                         "--newline"])]
    started = time.time()
    try:
        raw = run_paired(contenders, rounds, between=lambda: time.sleep(0.3))  # type: ignore[arg-type]
    finally:
        daemon.stop()
        daemon.save_events("s8")
    result = ScenarioResult(
        8, f"HLS stream, {segments} segments",
        f"One HLS stream of {segments} TS segments of 1 s ({served_bytes / MB:.0f} MB; H.264 CBR 3.8 Mbit/s with "
        "noise + AAC, generated once by the imageio-ffmpeg binary) served by nginx from tmpfs. daemon: "
        f"`downloader: auto` job (routed to yt-dlp by the `.m3u8` suffix, zygote warm, "
        f"`ytdlp.concurrent_fragments: {fragments}`), time from the rename of the job file into incoming/ to "
        "`job.published` (fragments, TS->MP4 remux by ffmpeg, sha256, publish). Tools: `yt-dlp` from the venv, "
        "alone and with `-N 8`, process wall time. Everyone gets the same ffmpeg (`--ffmpeg-location`) and "
        "writes to tmpfs; the first output of each is checked with `ffmpeg -i` (1 video + 1 audio stream, "
        "the full duration).",
        runs=rounds, duration_s=time.time() - started,
    )
    d = raw["daemon"]
    tool_names = ["yt-dlp", "yt-dlp -N 8"]
    for name, values in raw.items():
        walls = [m["wall"] for m in values]
        ratios = None if name == "daemon" else ratios_to(d, values)
        result.rows.append(Row(name, "wall", "s", walls, ratios,
                               note="informative: the daemon's yt-dlp settings" if name == tuned else ""))
    for name, values in raw.items():
        result.rows.append(Row(name, "throughput (served bytes)", "MB/s",
                               [served_bytes / MB / m["wall"] for m in values]))
    for name, values in raw.items():
        result.rows.append(Row(name, "CPU (user+sys)", "s", [m["cpu"] for m in values],
                               note="daemon: whole process tree (zygote child, ffmpeg)" if name == "daemon" else ""))
    result.rows.append(Row("daemon", "rename -> job.started", "s", [m["pickup"] for m in d]))
    best = [dm["wall"] / min(raw[name][i]["wall"] for name in tool_names) for i, dm in enumerate(d)]
    result.targets.append(Target(
        "HLS: daemon wall / faster of yt-dlp and yt-dlp -N 8", median(best), 1.0, "x",
        detail=f"median of per-round ratios (min {min(best):.3f}, max {max(best):.3f}); "
               f"concurrent_fragments {fragments}"))
    result.notes.append(f"yt-dlp {_ytdlp_version(ytdlp)}; ffmpeg {ffmpeg}")
    result.notes.append(f"`{tuned}` is yt-dlp run with the daemon's own settings (not part of the target): the "
                        "gap between it and plain `yt-dlp` is mostly yt-dlp redrawing its progress on every chunk")
    if segments != SEGMENTS:
        result.notes.append(f"smoke run: {segments} segments instead of {SEGMENTS}")
    result.raw = {"segments": segments, "served_bytes": served_bytes, "concurrent_fragments": fragments,
                  "measurements": raw}
    return result


def _ytdlp_version(ytdlp: str) -> str:
    try:
        return subprocess.run([ytdlp, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
