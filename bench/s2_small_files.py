"""Escenario 2: 1.000 archivos de 16 KiB entregados como 1.000 archivos de trabajo a la vez.

daemon: del rename del primer archivo de trabajo al ``job.recorded`` del último (spool, directorio
aislado por trabajo, publicación y registro terminal incluidos), con ``max_concurrent: 8``;
frente a ``aria2c -i lista -j 8``, ``curl -Z --parallel-max 8`` y ``xargs -P8 curl``.
``--smoke`` lo corre con 50 trabajos y una ronda (lo que usa CI para que el arnés no se pudra).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.common import Measurement, Row, ScenarioResult, Target, median, ratios_to, run_paired
from bench.context import BenchContext
from bench.daemon_runner import REPO, BenchDaemon, job_yaml
from bench.infra import run_tool

FILE_SIZE = 16 * 1024


def _count_files(folder: Path, size: int) -> int:
    return sum(1 for e in os.scandir(folder) if e.is_file() and e.stat().st_size == size)


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 2 y devuelve su resultado."""
    n = 50 if ctx.smoke else 1000
    urls = ctx.small_files(n, FILE_SIZE)
    rounds = ctx.rounds(5)
    base = ctx.scratch("s2")
    lists = base / "lists"
    lists.mkdir()
    url_list = lists / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    daemon = BenchDaemon(base / "daemon", "s2", max_concurrent=8)
    daemon.start(profile="s2" if ctx.profile else None)
    # Un trabajo antes de la primera ronda: lo que el primer trabajo carga una vez (la tabla de
    # extractores de ``auto``, ~1,4 s en un proceso hijo; escenarios 4 y 5) no cae en una sola ronda.
    daemon.drop([("warm-0.yaml", job_yaml(urls[0], "warm-0", filename="warm-0.bin"))])
    daemon.wait_events("job.recorded", ["warm-0"], timeout=60)
    daemon.clear_outputs()

    def via_daemon(rnd: int) -> Measurement:
        ids = [f"s2-r{rnd}-{i:05d}" for i in range(n)]
        pairs = daemon.prepare_jobs([(f"{cid}.yaml", job_yaml(url, cid, filename=f"{cid}.bin"))
                                     for cid, url in zip(ids, urls, strict=True)])
        cpu0, split0 = daemon.cpu_seconds(), daemon.cpu_split()
        times = daemon.deliver(pairs)
        daemon.wait_events("job.recorded", ids, timeout=300)
        cpu1, split1 = daemon.cpu_seconds(), daemon.cpu_split()
        ev = daemon.events
        last = max(ev.ts("job.recorded", cid) for cid in ids)  # type: ignore[type-var]
        last_pickup = max(ev.ts("job.received", cid) for cid in ids)  # type: ignore[type-var]
        done = _count_files(daemon.output, FILE_SIZE)
        if done != n:
            raise RuntimeError(f"daemon published {done} of {n} files")
        counts = daemon.terminal_counts()
        if counts["failed"] or counts["rejected"]:
            raise RuntimeError(f"daemon failed/rejected jobs: {counts}")
        daemon.clear_outputs()
        wall = last - times[0]
        return {"wall": wall, "files_per_s": n / wall, "cpu": cpu1 - cpu0, "cpu_user": split1[0] - split0[0],
                "cpu_sys": split1[1] - split0[1], "drop_s": times[-1] - times[0],
                "last_pickup": last_pickup - times[0]}

    def tool(name: str, argv_for: Callable[[Path], list[str]]) -> tuple[str, Callable[[int], Measurement]]:
        def measure(rnd: int) -> Measurement:
            out = base / f"out-{name.split()[0]}-{rnd}"
            out.mkdir()
            result = run_tool(argv_for(out), cwd=out)
            got = _count_files(out, FILE_SIZE)
            if result.returncode != 0 or got != n:
                raise RuntimeError(f"{name} exited {result.returncode} with {got}/{n} files: {result.stderr}")
            shutil.rmtree(out)
            return {"wall": result.wall, "files_per_s": n / result.wall, "cpu": result.cpu}

        return name, measure

    def part(name: str, mode: str) -> tuple[str, Callable[[int], Measurement]]:
        """Una parte del trabajo del daemon, sola (``bench/_small_parts.py``), medida dentro de su proceso."""
        def measure(rnd: int) -> Measurement:
            work, measured = base / f"part-{mode}-{rnd}", base / f"part-{mode}-{rnd}.json"
            result = run_tool([sys.executable, "-m", "bench._small_parts", mode, str(measured), str(url_list),
                               str(work)], cwd=REPO)
            if result.returncode != 0:
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr}")
            got = orjson.loads(measured.read_bytes())
            if got["files"] != n or got["size"] != n * FILE_SIZE:
                raise RuntimeError(f"{name} fetched {got['files']} files, {got['size']} bytes; expected {n}")
            outs = [work / f"half-{h}" / "out" for h in (0, 1)] if mode.endswith("_x2") else [work / "out"]
            published = sum(_count_files(out, FILE_SIZE) for out in outs) if mode != "get" else n
            if published != n:
                raise RuntimeError(f"{name} published {published} of {n} files")
            measured.unlink()
            shutil.rmtree(work, ignore_errors=True)
            return {"wall": got["wall"], "files_per_s": n / got["wall"], "cpu": got["cpu"]}

        return name, measure

    t = ctx.tools
    contenders: list[tuple[str, Callable[[int], Measurement]]] = [("daemon", via_daemon)]
    # El techo de este diseño en Python (aiohttp, un bucle, 8 a la vez): la petición sola, la
    # petición con los pasos de archivo de cada trabajo, y con su registro de eventos; sin análisis ni cola.
    contenders += [part("part: aiohttp GET only", "get"), part("part: GET + the job's file steps", "steps"),
                   part("part: GET + file steps, 2 processes", "steps_x2"),
                   part("part: GET + file steps + event log", "events"),
                   part("part: GET + file steps + event log, 2 processes", "events_x2"),
                   part("part: the same, events written once per job", "batched"),
                   part("part: the same, events once per job, 2 processes", "batched_x2")]
    if t.get("aria2c"):
        contenders.append(tool("aria2c -i list -j 8", lambda out: [
            t["aria2c"], "-q", "-i", str(url_list), "-j", "8", "-d", str(out),  # type: ignore[list-item]
            "--allow-overwrite=true", "--auto-file-renaming=false"]))
    if t.get("curl"):
        contenders.append(tool("curl -Z --parallel-max 8", lambda out: [
            t["curl"], "-sS", "-Z", "--parallel-max", "8", "--output-dir", str(out),  # type: ignore[list-item]
            "--remote-name-all", *urls]))
        contenders.append(tool("xargs -P8 curl", lambda out: [
            "xargs", "-P8", "-n1", "-a", str(url_list), t["curl"], "-sS", "--output-dir", str(out),  # type: ignore[list-item]
            "-O"]))
    started = time.time()
    try:
        raw = run_paired(contenders, rounds, between=lambda: time.sleep(0.2))
    finally:
        daemon.stop()
        daemon.save_events("s2")
    result = ScenarioResult(
        2, f"{n:,} files of 16 KiB",
        f"{n:,} distinct 16 KiB files. daemon (max_concurrent: 8): {n:,} job files written to spool/tmp/ "
        "beforehand, then renamed into incoming/ at once; time from the first rename to the last "
        "`job.recorded` (claim, parse, isolated temp dir + flock, download, sha256, publish, terminal "
        "record, cleanup). Tools: process wall time with a URL list prepared beforehand, 8 in parallel. "
        "One warm-up job runs before the first round (one-time lazy loading: see scenario 5). "
        "`part:` rows time the ceiling of this design alone, inside their own process (`bench/_small_parts.py`: "
        "aiohttp as the daemon uses it, one event loop, 8 at a time, from the first request to the last "
        "file): the requests alone, and the requests with each job's file steps (claim rename and read, "
        "temp dir and flock, write + sha256 + fsync, rename, link into the output + fsync, terminal record "
        "with its fsyncs, cleanup), without events, job parsing or a queue; the same with the job's 8 events "
        "written as the daemon writes them (one JSON line per event with one `write`, and its one-line echo), "
        "and with each job's lines written at once when it ends (the bound of batched event writes); "
        "and each in two processes with half the list each, released together (one per core, like a fleet of "
        "two daemons).",
        runs=rounds, duration_s=time.time() - started,
    )
    d = raw["daemon"]
    for name, values in raw.items():
        ratios = None if name == "daemon" else ratios_to(d, values)
        result.rows.append(Row(name, "wall", "s", [m["wall"] for m in values], ratios))
    for name, values in raw.items():
        result.rows.append(Row(name, "throughput", "files/s", [m["files_per_s"] for m in values]))
    for name, values in raw.items():
        result.rows.append(Row(name, "CPU (user+sys)", "s", [m["cpu"] for m in values]))
    result.rows.append(Row("daemon", "  of which user (main process)", "s", [m["cpu_user"] for m in d]))
    result.rows.append(Row("daemon", "  of which system (main process)", "s", [m["cpu_sys"] for m in d]))
    result.rows.append(Row("daemon", "first rename -> last job.received", "s", [m["last_pickup"] for m in d]))
    result.rows.append(Row("daemon", f"time to rename {n:,} files (producer)", "s", [m["drop_s"] for m in d]))
    aria = raw.get("aria2c -i list -j 8")
    if aria:
        # files/s del daemon >= files/s de aria2c  <=>  razón de tiempos daemon/aria2c <= 1.
        ratio = median(ratios_to(d, aria))
        result.targets.append(Target(f"{n:,} small jobs: wall vs aria2c (files/s at least aria2c's)", ratio, 1.0,
                                     "x", detail=f"daemon {median([m['files_per_s'] for m in d]):.0f} files/s, "
                                     f"aria2c {median([m['files_per_s'] for m in aria]):.0f} files/s"))
    result.targets.append(Target(f"{n:,} small jobs: files/s (issue 18)", median([m["files_per_s"] for m in d]),
                                 2500.0, "files/s", at_most=False,
                                 detail="stretch: aria2c's rate (row above)" + _design_ceiling(raw)))
    result.raw = {"n": n, "measurements": raw}
    return result


def _design_ceiling(raw: dict[str, list[Measurement]]) -> str:
    """El techo de este diseño en esta máquina: la petición y los pasos de archivo de cada trabajo,
    solos, y con su registro de eventos (``bench/_small_parts.py``). Si ellos solos no llegan al
    objetivo, el daemon, que hace eso y además su análisis, sus comprobaciones y su cola, tampoco
    llega sin cambiar de forma."""
    shown = []
    for name, label in (("part: GET + the job's file steps", "file steps, 1 process"),
                        ("part: GET + file steps, 2 processes", "2 processes"),
                        ("part: GET + file steps + event log", "with the event log, 1 process"),
                        ("part: GET + file steps + event log, 2 processes", "2 processes"),
                        ("part: the same, events written once per job", "events batched per job, 1 process"),
                        ("part: the same, events once per job, 2 processes", "2 processes")):
        rates = sorted(m["files_per_s"] for m in raw.get(name, []))
        if rates:
            shown.append(f"{label} {median(rates):,.0f} files/s ({rates[0]:,.0f}-{rates[-1]:,.0f})")
    return f"; ceiling here, requests + {', '.join(shown)}" if shown else ""
