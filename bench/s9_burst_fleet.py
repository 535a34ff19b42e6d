"""Escenario 9: ráfagas de trabajos pequeños, con un daemon y con tres sobre el mismo spool.

Con el reclamo acotado (``lookahead``, issue F) "tiempo hasta el último ``job.received``" ya no
mide lo que medía: un daemon sólo reclama sus huecos libres más ``lookahead``. Aquí se mide lo que
pide la issue 18 para una ráfaga: nada perdido, el primer ``job.started`` poco después del último
rename, y la ráfaga entera terminada al ritmo de los trabajos pequeños:

- ``1 daemon, burst``: 10.000 trabajos de 16 KiB (nginx, tmpfs) renombrados a incoming/ de golpe;
- ``3 daemons, burst``: lo mismo con tres daemons que comparten spool y salida (el coste del
  reclamo acotado y de las carreras de rename entre daemons);
- ``3 daemons, 1,000 small``: el escenario 2 (1.000 x 16 KiB) con los tres daemons;
- ``N daemons (one per core)``: la ráfaga y los 1.000 con un daemon por núcleo, la forma que
  recomienda docs/operations.md (con 2 núcleos, tres daemons se reparten dos y pagan más CPU por
  trabajo); se omite si la máquina tiene 1 o 3 núcleos (ya está medida).

Cada daemon: ``max_concurrent: 8``, ``lookahead`` por defecto, su propio registro de eventos y
directorio temporal. Perdidos: ids sin registro en done/ más fallidos y rechazados; incoming/ y
active/ deben quedar vacíos.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Measurement, Row, ScenarioResult, Target, median, run_paired, wait_until
from bench.context import BenchContext
from bench.daemon_runner import BenchDaemon, job_yaml

FILE_SIZE = 16 * 1024
MAX_CONCURRENT = 8
FIRST_START_LIMIT_S = 0.050
RATE_FLOOR = 2500.0
# Cada comprobación recorre incoming/ y done/ (10.000 entradas en una ráfaga): hecha cada 20 ms le
# quitaba a los daemons una parte de los 2 núcleos. Los tiempos salen de los eventos, no de cuándo
# se nota el final, así que una espera más larga no cambia lo medido.
POLL_S = 0.25


class _Fleet:
    """``count`` daemons sobre un spool y una salida compartidos (cada uno con su log y su tmp)."""

    def __init__(self, base: Path, label: str, count: int, profile: bool) -> None:
        shared = base / "shared"
        self.spool, self.output = shared / "spool", shared / "out"
        self.daemons: list[BenchDaemon] = []
        self._did_work: list[bool] = [False] * count
        for n in range(count):
            d = BenchDaemon(base / f"d{n}", f"{label}-{n}", max_concurrent=MAX_CONCURRENT,
                            spool_dir=str(self.spool), output_dir=str(self.output))
            d.spool, d.incoming, d.tmp, d.done, d.output = (self.spool, self.spool / "incoming", self.spool / "tmp",
                                                            self.spool / "done", self.output)
            self.daemons.append(d)
        for n, d in enumerate(self.daemons):
            d.start(profile=f"s9-{label}-{n}" if profile else None)

    def warm_up(self, urls: list[str]) -> None:
        """Rondas de calentamiento hasta que cada daemon haya hecho algún trabajo: el primero de
        cada uno paga cargas perezosas (la tabla de extractores de ``auto``), como en el escenario 2."""
        for attempt in range(10):
            self.measure(urls[:16 * len(self.daemons)], f"warm{attempt}")
            if all(self._did_work):
                return
        raise RuntimeError("a daemon of the fleet never got a job to warm up")

    def stop(self) -> None:
        for d in self.daemons:
            d.stop(timeout=120)

    def cpu(self) -> float:
        return sum(d.cpu_seconds() for d in self.daemons)

    def measure(self, urls: list[str], tag: str) -> Measurement:
        """Entrega un trabajo por URL de golpe y espera a todos sus registros."""
        n = len(urls)
        ids = [f"{tag}-{i:05d}" for i in range(n)]
        first = self.daemons[0]
        pairs = first.prepare_jobs([(f"{cid}.yaml", job_yaml(url, cid, filename=f"{cid}.bin"))
                                    for cid, url in zip(ids, urls, strict=True)])
        cpu0 = self.cpu()
        times = first.deliver(pairs)
        done = self.spool / "done"

        def finished() -> bool:
            for d in self.daemons:
                d.alive_or_raise()
            left = sum(1 for _ in os.scandir(self.spool / "incoming"))
            return left == 0 and sum(1 for _ in os.scandir(done)) + self._count("failed") >= n

        with contextlib.suppress(TimeoutError):  # lo que falte se cuenta como perdido
            wait_until(finished, 600, interval=POLL_S, what=f"{n} records")
        time.sleep(0.05)
        cpu1 = self.cpu()
        started: list[float] = []
        recorded: list[float] = []
        for d in self.daemons:
            d.events.poll()
            started += d.events.ids("job.started").values()
            recorded += [ts for cid, ts in d.events.ids("job.recorded").items() if cid in set(ids)]
        records = {name[:-5] for name in os.listdir(done) if name.endswith(".json")}
        lost = sum(1 for cid in ids if cid not in records) + self._count("failed") + self._count("rejected")
        active = self.spool / "active"
        leftover = sum(len(os.listdir(p)) for p in active.iterdir() if p.is_dir()) if active.is_dir() else 0
        per_daemon = [sum(1 for c in d.events.ids("job.recorded") if c in records) for d in self.daemons]
        self._did_work = [a or b > 0 for a, b in zip(self._did_work, per_daemon, strict=True)]
        shares = sorted(per_daemon, reverse=True)
        wall = max(recorded) - times[0] if recorded else float("nan")
        for d in self.daemons:
            d.clear_outputs()
            d.events.skip_to_end()
        return {"files_per_s": n / wall, "wall": wall, "first_start": min(started) - times[-1],
                "lost": float(lost), "left_over": float(leftover), "cpu": cpu1 - cpu0,
                "cpu_per_job_ms": (cpu1 - cpu0) / n * 1000, "drop_s": times[-1] - times[0],
                "largest_share": shares[0] / n if shares else float("nan")}

    def _count(self, folder: str) -> int:
        path = self.spool / folder
        return sum(1 for e in os.scandir(path) if e.name.endswith(".json") or folder == "rejected") \
            if path.is_dir() else 0


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 9 y devuelve su resultado."""
    burst_n = 500 if ctx.smoke else 10000
    small_n = 50 if ctx.smoke else 1000
    rounds = ctx.rounds(5)
    urls = ctx.small_files(burst_n, FILE_SIZE)
    base = ctx.scratch("s9")
    cores = os.cpu_count() or 1
    counts = [1, 3] + ([cores] if cores not in (1, 3) else [])
    fleets = {count: _Fleet(base / f"n{count}", f"n{count}", count, ctx.profile) for count in counts}
    for fleet in fleets.values():
        fleet.warm_up(urls)
    started = time.time()
    contenders: list[tuple[str, Callable[[int], Measurement]]] = []
    bursts: list[str] = []
    smalls: list[str] = []
    for count, fleet in fleets.items():
        label = _fleet_label(count, cores)
        bursts.append(f"{label}, burst")
        contenders.append((bursts[-1], _measuring(fleet, urls, f"b{count}")))
        if count > 1:
            smalls.append(f"{label}, {small_n:,} small")
            contenders.append((smalls[-1], _measuring(fleet, urls[:small_n], f"s{count}")))
    try:
        raw = run_paired(contenders, rounds, between=lambda: time.sleep(0.2))
    finally:
        for fleet in fleets.values():
            fleet.stop()
    result = ScenarioResult(
        9, "bursts of small jobs, 1 and 3 daemons on one spool (and one per core)",
        f"{burst_n:,} distinct 16 KiB files (nginx, tmpfs) as {burst_n:,} job files written to spool/tmp/ and "
        "renamed into incoming/ at once, to one daemon and to three daemons sharing the spool and the output "
        f"(each max_concurrent {MAX_CONCURRENT}, default lookahead, own event log and temp dir), and to one "
        f"daemon per core ({cores} here) when that is neither 1 nor 3; and {small_n:,} such jobs to each fleet. "
        "Throughput: jobs / (first rename -> last `job.recorded`). "
        "First start: the earliest `job.started` minus the producer's time of the last rename (negative when "
        "the first download starts while the producer is still renaming). Lost: ids without a record in done/ "
        "plus failed and rejected jobs; incoming/ and active/ must end empty.",
        runs=rounds, duration_s=time.time() - started,
    )
    for name in bursts + smalls:
        m = raw[name]
        label = f"{small_n:,} jobs" if name in smalls else f"{burst_n:,} jobs"
        result.rows += [
            Row(name, f"throughput ({label})", "files/s", [x["files_per_s"] for x in m]),
            Row(name, "first rename -> last job.recorded", "s", [x["wall"] for x in m]),
            Row(name, "last rename -> first job.started", "s", [x["first_start"] for x in m]),
            Row(name, "CPU per job (all daemons, user+sys)", "ms", [x["cpu_per_job_ms"] for x in m]),
            Row(name, "jobs lost, failed or rejected", "jobs", [x["lost"] for x in m]),
            Row(name, "left in active/ at the end", "files", [x["left_over"] for x in m]),
        ]
        if not name.startswith("1 "):
            result.rows.append(Row(name, "largest daemon's share", "", [x["largest_share"] for x in m]))
    for name in bursts:
        m = raw[name]
        result.targets += [
            Target(f"{name}: jobs lost (worst run)", max(x["lost"] + x["left_over"] for x in m), 0, "jobs"),
            Target(f"{name}: last rename -> first job.started", median([x["first_start"] for x in m]),
                   FIRST_START_LIMIT_S, "s", detail=f"median of {len(m)} runs"),
            Target(f"{name}: whole burst, files/s", median([x["files_per_s"] for x in m]), RATE_FLOOR,
                   "files/s", at_most=False, detail=f"median of {len(m)} runs"),
        ]
    result.raw = raw
    return result


def _measuring(fleet: _Fleet, urls: list[str], tag: str) -> Callable[[int], Measurement]:
    return lambda rnd: fleet.measure(urls, f"{tag}-r{rnd}")


def _fleet_label(count: int, cores: int) -> str:
    if count == 1:
        return "1 daemon"
    return f"{count} daemons (one per core)" if count == cores and count != 3 else f"{count} daemons"
