"""Escenario 4, implementación propia (se usa si no existe ``bench/ytdlp_cost.py``).

50 trabajos ``downloader: ytdlp`` pequeños a través del spool de un daemon real frente a 50
ejecuciones de ``python -m yt_dlp``, en 5 rondas de 10 emparejadas (daemon, herramienta, ...).
CPU por trabajo: daemon = delta de CPU de todo su árbol de procesos (hijos recogidos incluidos)
entre antes de entregar los 10 trabajos y su último ``job.recorded``, dividido entre 10;
herramienta = CPU de cada proceso (wait4).
"""

from __future__ import annotations

import shutil
import sys
import time

from bench.common import Measurement, Row, ScenarioResult, Target, median, ratios_to, run_paired
from bench.context import BenchContext
from bench.daemon_runner import BenchDaemon, job_yaml
from bench.infra import run_tool

TARGET_CPU_S = 0.15


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 4 con trabajos reales por el spool."""
    per_round = 3 if ctx.smoke else 10
    rounds = ctx.rounds(5)
    url, _ = ctx.served_file("media/clip.mp4", 256 * 1024)
    base = ctx.scratch("s4")
    daemon = BenchDaemon(base / "daemon", "s4", max_concurrent=4)
    daemon.start(profile="s4" if ctx.profile else None)
    available = True

    def via_daemon(rnd: int) -> Measurement:
        nonlocal available
        ids = [f"y-r{rnd}-{i:03d}" for i in range(per_round)]
        pairs = daemon.prepare_jobs([(f"{cid}.yaml", job_yaml(url, cid, downloader="ytdlp")) for cid in ids])
        cpu0, t0 = daemon.cpu_seconds(), time.time()
        daemon.deliver(pairs)
        daemon.wait_events("job.received", ids, timeout=60)
        if daemon.events.count("job.rejected"):
            available = False
            return {"cpu_per_job": float("nan"), "wall": float("nan")}
        daemon.wait_events("job.recorded", ids, timeout=600)
        cpu1 = daemon.cpu_seconds()
        last = max(daemon.events.ts("job.recorded", cid) for cid in ids)  # type: ignore[type-var]
        failed = daemon.terminal_counts()["failed"]
        if failed:
            raise RuntimeError(f"{failed} yt-dlp jobs failed: {daemon.events.samples.get('job.failed', [])[-2:]}")
        daemon.clear_outputs()
        return {"cpu_per_job": (cpu1 - cpu0) / per_round, "wall": last - t0}

    def via_cli(rnd: int) -> Measurement:
        out = base / f"cli-{rnd}"
        out.mkdir()
        cpu = wall = 0.0
        for i in range(per_round):
            result = run_tool([sys.executable, "-m", "yt_dlp", "--ignore-config", "--quiet", "--no-warnings",
                               "--no-progress", "-o", f"{out}/{i}-%(id)s.%(ext)s", "--", url], cwd=out)
            if result.returncode != 0:
                raise RuntimeError(f"python -m yt_dlp failed: {result.stderr}")
            cpu += result.cpu
            wall += result.wall
        shutil.rmtree(out)
        return {"cpu_per_job": cpu / per_round, "wall": wall}

    started = time.time()
    try:
        raw = run_paired([("daemon", via_daemon), ("python -m yt_dlp", via_cli)], rounds)
    finally:
        daemon.stop()
    result = ScenarioResult(
        4, "yt-dlp fixed cost per job",
        f"{per_round * rounds} small `downloader: ytdlp` jobs through a real daemon's spool vs as many runs of "
        f"`python -m yt_dlp` on the same 256 KiB clip.mp4 served by nginx; {rounds} paired rounds of {per_round}. "
        "CPU per job: daemon = CPU of its whole process tree over the round / jobs; tool = wait4 rusage.",
        runs=rounds, duration_s=time.time() - started,
    )
    d, c = raw["daemon"], raw["python -m yt_dlp"]
    if not available:
        result.notes.append("the daemon rejected `downloader: ytdlp` (yt-dlp downloader unavailable): daemon side "
                            "not measured")
        result.rows.append(Row("python -m yt_dlp", "CPU per job", "s", [m["cpu_per_job"] for m in c]))
        result.targets.append(Target("yt-dlp CPU per job", None, TARGET_CPU_S, "s"))
        return result
    result.rows.append(Row("daemon", "CPU per job", "s", [m["cpu_per_job"] for m in d]))
    result.rows.append(Row("python -m yt_dlp", "CPU per job", "s", [m["cpu_per_job"] for m in c],
                           ratios_to(d, c, "cpu_per_job")))
    result.rows.append(Row("daemon", f"wall for {per_round} jobs", "s", [m["wall"] for m in d]))
    result.rows.append(Row("python -m yt_dlp", f"wall for {per_round} runs", "s", [m["wall"] for m in c],
                           ratios_to(d, c)))
    result.targets.append(Target("yt-dlp CPU per job (daemon)", median([m["cpu_per_job"] for m in d]),
                                 TARGET_CPU_S, "s"))
    result.raw = {"measurements": raw}
    return result
