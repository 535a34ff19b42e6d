"""Escenario 4: coste fijo de yt-dlp por trabajo frente a ``python -m yt_dlp`` por trabajo.

Si existe ``bench/ytdlp_cost.py`` (el banco propio del descargador yt-dlp, de otro equipo) se
usa ese: se corre como ``python -m bench.ytdlp_cost --n N --out raw/ytdlp_cost.json`` y su JSON
se convierte en filas de esta tabla (sus muestras ya van emparejadas trabajo a trabajo:
A B C A B C ...). Si no existe, se usa la implementación propia de ``bench/s4_ytdlp_fallback.py``
(trabajos ``downloader: ytdlp`` a través del spool de un daemon real).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from typing import Any

import orjson

from bench.common import RAW_DIR, Row, ScenarioResult, Target, log, median
from bench.context import BenchContext
from bench.daemon_runner import REPO

TARGET_CPU_S = 0.15
_MODES = (
    ("cli", "python -m yt_dlp (one process per job)"),
    ("subprocess", "daemon yt-dlp: subprocess per job"),
    ("zygote", "daemon yt-dlp: forked from a warm zygote"),
)


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 4 con ``bench.ytdlp_cost`` si está; si no, con la implementación propia."""
    if importlib.util.find_spec("bench.ytdlp_cost") is None:
        from bench import s4_ytdlp_fallback

        return s4_ytdlp_fallback.run(ctx)
    return _run_external(ctx)


def _run_external(ctx: BenchContext) -> ScenarioResult:
    # ytdlp_cost corre N trabajos por modo y por tipo de página (2): 25 + 25 = 50 trabajos por modo.
    n = 2 if ctx.smoke else 5 if ctx.quick else 25
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    out = RAW_DIR / "ytdlp_cost.json"
    started = time.time()
    log(f"  running bench.ytdlp_cost --n {n} (its own paired loop: cli, subprocess, zygote per job)")
    proc = subprocess.run([sys.executable, "-m", "bench.ytdlp_cost", "--n", str(n), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800, check=False)
    (RAW_DIR / "ytdlp_cost.stdout.txt").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.ytdlp_cost exited {proc.returncode}: {proc.stderr[-1500:]}")
    report: dict[str, Any] = orjson.loads(out.read_bytes())
    result = ScenarioResult(
        4, "yt-dlp fixed cost per job",
        f"{n} small yt-dlp jobs per mode and per page kind, measured by `bench/ytdlp_cost.py` (the yt-dlp "
        "downloader's own bench, called by this harness): each job runs the daemon's `YtdlpDownloader` inside "
        "`DownloadLifecycle` (isolated temp dir, flock) in-process, not through the spool; modes alternate job by "
        "job (cli, subprocess, zygote, cli, ...). CPU per job = the job's processes (wait4/rusage; for the "
        "zygote, its child plus its share of the zygote's own fork/reap CPU). Server: tests/support/http_server.py "
        "in its own process. Ratio: this mode's CPU per job / the `python -m yt_dlp` CPU of the same job index.",
        runs=n, duration_s=time.time() - started,
    )
    zygote_medians: list[float] = []
    for scenario, data in report.get("scenarios", {}).items():
        samples: dict[str, list[float]] = data.get("samples", {})
        cli = samples.get("cli", [])
        for mode, label in _MODES:
            values = samples.get(mode, [])
            if not values:
                continue
            ratios = None if mode == "cli" else [v / c for v, c in zip(values, cli, strict=False) if c > 0]
            result.rows.append(Row(f"{label} [{scenario}]", "CPU per job", "s", values, ratios))
        for mode, label in _MODES:
            wall = data.get("wall_per_job_s", {}).get(mode)
            if wall:
                result.rows.append(Row(f"{label} [{scenario}]", "wall per job (median of jobs)", "s",
                                       [wall["median"]], note=f"min {wall['min']}, max {wall['max']}"))
        if samples.get("zygote"):
            zygote_medians.append(median(samples["zygote"]))
            result.targets.append(Target(f"yt-dlp CPU per job, zygote [{scenario}]", median(samples["zygote"]),
                                         TARGET_CPU_S, "s", detail=f"{n} jobs; subprocess/zygote = "
                                         f"{data.get('ratio_subprocess_over_zygote')}x"))
    z = report.get("zygote_startup")
    if z:
        result.notes.append(f"zygote start-up, paid once per daemon: {z.get('cpu_s')} s CPU, {z.get('wall_s')} s "
                            f"wall, RSS {z.get('rss_mib')} MiB (shared copy-on-write with its children)")
    pick = report.get("pick_downloader", {})
    if pick.get("first_call"):
        result.notes.append(f"pick_downloader first call (imports yt_dlp): {pick['first_call'].get('cpu_s')} s CPU")
    result.notes.append(f"yt-dlp {report.get('ytdlp_version')}; full report: bench/results/raw/ytdlp_cost.json")
    result.raw = {"ytdlp_cost": report}
    return result
