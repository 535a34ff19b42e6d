"""Escenario 5: memoria del daemon (RSS) ociosa, con 10.000 trabajos en cola y durante la
descarga de 1 GiB, frente a ``aria2c --enable-rpc`` ocioso.

- Ocioso: daemon recién arrancado, 2 s después de READY (pasada inicial del recolector hecha).
- Durante 1 GiB: con ``VmHWM`` puesto a cero (``clear_refs``) antes de entregar el trabajo, el
  pico de RSS hasta su ``job.recorded`` (además se muestrea VmRSS cada 20 ms) menos el ocioso.
- 10.000 en cola: ``max_concurrent: 1`` y todas las URLs a un puerto que escucha y nunca
  responde, así la primera descarga queda bloqueada y las otras 9.999 esperan; RSS cuando los
  10.000 tienen su ``job.queued`` (y 1 s de calma) menos el RSS ocioso del mismo proceso.
El RSS es el del proceso principal (VmRSS); el de todo el árbol (hijos como un zigoto de
yt-dlp) va en filas aparte.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import orjson

from bench.common import Measurement, Row, ScenarioResult, Target, median, run_paired, wait_until
from bench.context import BenchContext
from bench.daemon_runner import BenchDaemon, job_yaml
from bench.infra import Procs, StallServer, free_port, reset_peak_rss, rss_kib

SETTLE = 2.0
MIB = 1024.0


def _aria2_idle(ctx: BenchContext, base: Path) -> Measurement:
    port = free_port()
    folder = base / "aria2"
    folder.mkdir(exist_ok=True)
    proc = Procs.popen([ctx.tools["aria2c"], "--enable-rpc", f"--rpc-listen-port={port}",  # type: ignore[list-item]
                        "--rpc-listen-all=false", "-q", "-d", str(folder)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(SETTLE)
        if proc.poll() is not None:
            raise RuntimeError(f"aria2c --enable-rpc exited with {proc.returncode}")
        return {"rss": rss_kib(proc.pid) / MIB}
    finally:
        Procs.kill_group(proc)


def _warm_up(daemon: BenchDaemon, url: str, cid: str) -> None:
    """Un trabajo pequeño primero: lo que el primer trabajo carga una sola vez (importaciones
    perezosas, índice de yt-dlp para ``downloader: auto``) no se achaca a lo que se mide después."""
    daemon.drop([(f"{cid}.yaml", job_yaml(url, cid, filename=f"{cid}.bin"))])
    daemon.wait_events("job.recorded", [cid], timeout=60)
    time.sleep(0.5)


def _daemon_idle_and_big(ctx: BenchContext, base: Path, rnd: int, url: str, sha: str, size: int,
                         small: str) -> Measurement:
    daemon = BenchDaemon(base / f"d{rnd}", f"s5-{rnd}", max_concurrent=4)
    daemon.start()
    try:
        time.sleep(SETTLE)
        idle, idle_tree = daemon.rss_kib() / MIB, daemon.tree_rss_kib() / MIB
        _warm_up(daemon, small, f"warm-{rnd}")
        warm = daemon.rss_kib() / MIB
        reset_ok = reset_peak_rss(daemon.pid)
        cid = f"mem-big-{rnd}"
        daemon.drop([(f"{cid}.yaml", job_yaml(url, cid, sha256=sha, filename=f"{cid}.bin"))])
        peak = peak_tree = 0.0
        while not (daemon.done / f"{cid}.json").exists():
            daemon.alive_or_raise()
            peak = max(peak, daemon.rss_kib() / MIB)
            peak_tree = max(peak_tree, daemon.tree_rss_kib() / MIB)
            time.sleep(0.02)
        if reset_ok:
            peak = max(peak, rss_kib(daemon.pid, "VmHWM") / MIB)
        record = orjson.loads((daemon.done / f"{cid}.json").read_bytes())
        if record.get("sha256") != sha:
            raise RuntimeError(f"1 GiB job finished with sha256 {record.get('sha256')}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record["path"])
        return {"idle": idle, "idle_tree": idle_tree, "after_first_job": warm, "first_job_delta": warm - idle,
                "big_peak": peak, "big_delta": peak - warm, "big_delta_tree": peak_tree - idle_tree,
                "hwm_reset": float(reset_ok)}
    finally:
        daemon.stop()


def _queued(base: Path, rnd: int, stall: StallServer, n: int, small: str) -> Measurement:
    # Con el reclamo acotado (issue F) hace falta ``lookahead`` para tener n trabajos en memoria.
    daemon = BenchDaemon(base / f"q{rnd}", f"s5q-{rnd}", max_concurrent=1, max_queued=max(20000, n),
                         lookahead=min(n, 10000))
    daemon.start()
    try:
        time.sleep(SETTLE)
        _warm_up(daemon, small, f"warm-{rnd}")
        idle, idle_tree = daemon.rss_kib() / MIB, daemon.tree_rss_kib() / MIB
        ids = [f"q-r{rnd}-{i:05d}" for i in range(n)]
        daemon.drop([(f"{cid}.yaml", job_yaml(stall.url, cid, filename=f"{cid}.bin")) for cid in ids])
        daemon.wait_events("job.queued", ids, timeout=120)
        wait_until(lambda: not any(os.scandir(daemon.incoming)), 30, what="incoming/ to drain")
        time.sleep(1.0)
        queued, queued_tree = daemon.rss_kib() / MIB, daemon.tree_rss_kib() / MIB
        return {"idle": idle, "queued": queued, "queued_delta": queued - idle,
                "queued_delta_tree": queued_tree - idle_tree}
    finally:
        daemon.kill()  # 10.000 trabajos bloqueados: su estado ya no interesa


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 5 y devuelve su resultado."""
    rounds = ctx.rounds(5)
    q_rounds = ctx.rounds(3, heavy=True)
    n = 1000 if ctx.smoke else 10000
    size = 64 * 1024**2 if ctx.smoke else 1024**3
    rel = "big/1GiB.bin" if size == 1024**3 else "big/small-big.bin"
    url, _ = ctx.served_file(rel, size)
    sha = ctx.sha256_of(rel)
    small = ctx.small_files(1)[0]
    base = ctx.scratch("s5")
    contenders = [("daemon", lambda rnd: _daemon_idle_and_big(ctx, base, rnd, url, sha, size, small))]
    if ctx.tools.get("aria2c"):
        contenders.append(("aria2c --enable-rpc", lambda _rnd: _aria2_idle(ctx, base)))
    started = time.time()
    raw = run_paired(contenders, rounds)
    stall = StallServer()
    try:
        queued = run_paired([("daemon queued", lambda rnd: _queued(base, rnd, stall, n, small))],
                            q_rounds)["daemon queued"]
    finally:
        stall.close()
    result = ScenarioResult(
        5, "memory (RSS)",
        "RSS of the daemon's main process (VmRSS): idle 2 s after READY; then one 16 KiB job (what the first job "
        "loads once is reported on its own row); peak during the 1 GiB job (VmHWM reset via clear_refs just "
        f"before the drop, plus 20 ms sampling) minus the RSS after that first job; with {n:,} jobs claimed and "
        "queued behind one download stalled on a port that never answers (max_concurrent 1) minus the RSS "
        "before the drop (also after one warm-up job). "
        "Reference: `aria2c --enable-rpc` idle, paired round by round with the daemon's idle.",
        runs=rounds, duration_s=time.time() - started,
    )
    d = raw["daemon"]
    aria = raw.get("aria2c --enable-rpc")
    result.rows.append(Row("daemon", "RSS idle", "MiB", [m["idle"] for m in d],
                           [dm["idle"] / am["rss"] for dm, am in zip(d, aria, strict=True)] if aria else None,
                           "vs aria2c idle" if aria else ""))
    if aria:
        result.rows.append(Row("aria2c --enable-rpc", "RSS idle", "MiB", [m["rss"] for m in aria]))
    result.rows.append(Row("daemon", "RSS idle, whole process tree", "MiB", [m["idle_tree"] for m in d]))
    result.rows.append(Row("daemon", "RSS added by the first (16 KiB) job: one-time lazy loading", "MiB",
                           [m["first_job_delta"] for m in d]))
    result.rows.append(Row("daemon", f"RSS added during the {size // 1024**2} MiB job (peak - after first job)",
                           "MiB", [m["big_delta"] for m in d]))
    result.rows.append(Row("daemon", "peak during it - idle, whole process tree (20 ms samples)", "MiB",
                           [m["big_delta_tree"] for m in d]))
    result.rows.append(Row("daemon", f"RSS added by {n:,} queued jobs", "MiB", [m["queued_delta"] for m in queued],
                           note=f"{q_rounds} runs"))
    result.rows.append(Row("daemon", f"RSS with {n:,} queued jobs", "MiB", [m["queued"] for m in queued]))
    result.rows.append(Row("daemon", "same delta, whole process tree", "MiB",
                           [m["queued_delta_tree"] for m in queued]))
    result.targets += [
        Target("RSS idle", median([m["idle"] for m in d]), 45.0, "MiB", detail="fresh daemon, no job run yet"),
        Target("RSS idle after the first job (steady state)", median([m["after_first_job"] for m in d]), 45.0, "MiB",
               detail="one 16 KiB `downloader: auto` job run, then idle"),
        Target(f"RSS added by {n:,} queued jobs", median([m["queued_delta"] for m in queued]), 20.0, "MiB"),
        Target(f"RSS added during a {size // 1024**2} MiB download", median([m["big_delta"] for m in d]), 10.0, "MiB"),
    ]
    if not all(m["hwm_reset"] for m in d):
        result.notes.append("VmHWM could not be reset (clear_refs refused): the 1 GiB peak comes from 20 ms samples")
    result.raw = {"idle_and_big": raw, "queued": queued}
    return result
