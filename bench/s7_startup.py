"""Escenario 7: arranque con 100.000 archivos de trabajo esperando en incoming/.

Se escriben 100.000 trabajos en incoming/ con el daemon parado (como si se hubieran acumulado
durante una parada) y se arranca el daemon: tiempo desde justo antes de lanzar el proceso hasta
READY=1 en el socket de notificación (como lo vería systemd; el daemon recibe ``NOTIFY_SOCKET``
apuntando a un socket del banco) y hasta el primer ``job.started``. Referencia emparejada: el
mismo daemon con el spool vacío (lo que cuesta arrancar sin atraso).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Measurement, Row, ScenarioResult, Target, median, run_paired, wait_until
from bench.context import BenchContext
from bench.daemon_runner import BenchDaemon, job_yaml


def _fill(incoming: Path, url: str, n: int) -> None:
    incoming.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cid = f"st-{i:06d}"
        with open(incoming / f"{cid}.yaml", "wb") as handle:
            handle.write(job_yaml(url, cid, filename=f"{cid}.bin"))


def _start(base: Path, label: str, url: str, n: int, profile: str | None) -> Measurement:
    if base.exists():
        shutil.rmtree(base)
    daemon = BenchDaemon(base, label, max_concurrent=4)
    if n:
        _fill(daemon.incoming, url, n)
    try:
        daemon.start(wait_ready=False, profile=profile)
        daemon.wait_ready(timeout=120)
        spawned = daemon.spawned_at
        ready_ev = daemon.events.ts("daemon.ready")
        out: Measurement = {"ready": (daemon.ready_at or ready_ev) - spawned,  # type: ignore[operator]
                            "ready_event": ready_ev - spawned}  # type: ignore[operator]
        if n:
            def started() -> bool:
                daemon.alive_or_raise()
                daemon.events.poll()
                return daemon.events.count("job.started") > 0

            wait_until(started, 120, interval=0.002, what="the first job.started")
            first = min(daemon.events.ids("job.started").values())
            out["first_started"] = first - spawned
        return out
    finally:
        if profile:
            daemon.stop(timeout=300)
        else:
            daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 7 y devuelve su resultado."""
    n = 10000 if ctx.smoke else 100000
    rounds = ctx.rounds(5)
    url = ctx.small_files(1)[0]
    base = ctx.scratch("s7")
    contenders: list[tuple[str, Callable[[int], Measurement]]] = [
        (f"daemon, {n:,} waiting", lambda rnd: _start(base / "backlog", f"s7b{rnd}", url, n, None)),
        ("daemon, empty spool", lambda rnd: _start(base / "empty", f"s7e{rnd}", url, 0, None)),
    ]
    started = time.time()
    raw = run_paired(contenders, rounds)
    if ctx.profile:
        _start(base / "profiled", "s7p", url, n, "s7")
    result = ScenarioResult(
        7, f"start-up with {n:,} job files waiting",
        f"{n:,} job files written into incoming/ while the daemon is stopped, then `python -m daemon run`: "
        "time from just before the process is spawned to READY=1 on the notify socket (as systemd sees it) and "
        "to the first `job.started` (event ts, same clock). Paired reference: the same start with an empty "
        "spool. Interpreter start-up and imports are included in both.",
        runs=rounds, duration_s=time.time() - started,
    )
    b, e = raw[f"daemon, {n:,} waiting"], raw["daemon, empty spool"]
    result.rows.append(Row(f"daemon, {n:,} waiting", "spawn -> READY=1", "s", [m["ready"] for m in b],
                           [bm["ready"] / em["ready"] for bm, em in zip(b, e, strict=True)], "vs empty spool"))
    result.rows.append(Row("daemon, empty spool", "spawn -> READY=1", "s", [m["ready"] for m in e]))
    result.rows.append(Row(f"daemon, {n:,} waiting", "spawn -> first job.started", "s",
                           [m["first_started"] for m in b]))
    result.rows.append(Row(f"daemon, {n:,} waiting", "spawn -> daemon.ready event", "s", [m["ready_event"] for m in b]))
    result.targets.append(Target(f"start-up with {n:,} waiting: READY", median([m["ready"] for m in b]), 2.0, "s"))
    result.raw = {"measurements": raw, "cpu_count": os.cpu_count()}
    return result
