"""Escenario 1: un archivo de 1 GiB. Trabajo del daemon (del rename del archivo de trabajo al
archivo publicado, sha256 calculado y verificado) frente a ``curl -o``, ``aria2c`` y ``wget``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson

from bench.common import Measurement, Row, ScenarioResult, Target, median, ratios_to, run_paired
from bench.context import BenchContext
from bench.daemon_runner import REPO, BenchDaemon, job_yaml
from bench.infra import run_tool

SIZE = 1024**3
MB = 1_000_000


def _check_file(path: Path, size: int, who: str) -> None:
    actual = path.stat().st_size if path.exists() else -1
    if actual != size:
        raise RuntimeError(f"{who} wrote {actual} bytes to {path}, expected {size}")


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 1 y devuelve su resultado."""
    size = SIZE if not ctx.smoke else 64 * 1024**2
    rel = "big/1GiB.bin" if size == SIZE else "big/small-big.bin"
    url, served = ctx.served_file(rel, size)
    sha = ctx.sha256_of(rel)
    rounds = ctx.rounds(5)
    base = ctx.scratch("s1")
    out = base / "tools"
    out.mkdir()
    daemon = BenchDaemon(base / "daemon", "s1", max_concurrent=4)
    daemon.start(profile="s1" if ctx.profile else None)
    raw: dict[str, list[Measurement]] = {}

    def via_daemon(rnd: int) -> Measurement:
        cid = f"big-r{rnd}"
        cpu0 = daemon.cpu_seconds()
        [t0] = daemon.drop([(f"{cid}.yaml", job_yaml(url, cid, sha256=sha, filename=f"{cid}.bin"))])
        daemon.wait_events("job.recorded", [cid], timeout=300)
        cpu1 = daemon.cpu_seconds()
        record = orjson.loads((daemon.done / f"{cid}.json").read_bytes())
        if record.get("sha256") != sha or record.get("size") != size:
            raise RuntimeError(f"daemon record for {cid} has sha256 {record.get('sha256')} size {record.get('size')}")
        published = Path(record["path"])
        _check_file(published, size, "the daemon")
        os.unlink(published)
        ev = daemon.events
        return {
            "wall": ev.ts("job.published", cid) - t0,  # type: ignore[operator]
            "to_record": ev.ts("job.recorded", cid) - t0,  # type: ignore[operator]
            "pickup": ev.ts("job.started", cid) - t0,  # type: ignore[operator]
            "cpu": cpu1 - cpu0,
        }

    def tool(name: str, argv_for: object) -> tuple[str, object]:
        def measure(rnd: int) -> Measurement:
            target = out / f"{name}-r{rnd}.bin"
            argv = argv_for(target)  # type: ignore[operator]
            result = run_tool(argv, cwd=out)
            if result.returncode != 0:
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr}")
            _check_file(target, size, name)
            os.unlink(target)
            return {"wall": result.wall, "cpu": result.cpu}

        return name, measure

    def part(name: str, mode: str) -> tuple[str, object]:
        """Una parte del trabajo del daemon, sola (``bench/_body_parts.py``), medida dentro de su proceso."""
        def measure(rnd: int) -> Measurement:
            target, measured = out / f"part-{mode}-r{rnd}.bin", out / f"part-{mode}-r{rnd}.json"
            tail = [str(size)] if mode == "sha256" else [str(served)] if mode == "sha256_file" else [url, str(target)]
            result = run_tool([sys.executable, "-m", "bench._body_parts", mode, str(measured), *tail], cwd=REPO)
            if result.returncode != 0:
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr}")
            got = orjson.loads(measured.read_bytes())
            if got["size"] != size:
                raise RuntimeError(f"{name} handled {got['size']} bytes, expected {size}")
            measured.unlink()
            target.unlink(missing_ok=True)
            return {"wall": got["wall"], "cpu": got["cpu"]}

        return name, measure

    contenders: list[tuple[str, object]] = [("daemon", via_daemon)]
    # Lo que cuesta cada parte por separado (aiohttp como en el daemon, un solo hilo): el suelo del
    # daemon es la mayor de (recibir + escribir) y (sha256), si las dos se solapan del todo.
    contenders += [part("part: aiohttp receive", "receive"), part("part: receive + write", "write"),
                   part("part: sha256 in memory", "sha256"),
                   part("part: sha256 of the file in the page cache (mmap)", "sha256_file"),
                   part("part: receive + write + sha256, one thread", "write_sha256")]
    t = ctx.tools
    if t.get("curl"):
        contenders.append(tool("curl -o", lambda p: [t["curl"], "-sS", "-o", str(p), url]))
    if t.get("aria2c"):
        contenders.append(tool("aria2c", lambda p: [
            t["aria2c"], "-q", "--allow-overwrite=true", "--auto-file-renaming=false", "-d", str(p.parent),
            "-o", p.name, url]))
    if t.get("wget"):
        contenders.append(tool("wget", lambda p: [t["wget"], "-q", "-O", str(p), url]))
    started = time.time()
    try:
        raw = run_paired(contenders, rounds, between=lambda: time.sleep(0.2))  # type: ignore[arg-type]
    finally:
        daemon.stop()
        daemon.save_events("s1")
    result = ScenarioResult(
        1, "one 1 GiB file",
        "One 1 GiB file served by nginx from tmpfs. daemon: time from the rename of the job file into "
        "incoming/ to the `job.published` event (download, sha256 computed and checked against the job's "
        "`sha256:`, published by link into the output dir); tools: process wall time. All write to tmpfs. "
        "`part:` rows time one part of the daemon's work alone, inside their own process "
        "(`bench/_body_parts.py`: aiohttp as the daemon uses it, one thread): the daemon's floor is the "
        "larger of receive + write and sha256, when the two overlap fully. The daemon hashes the file behind "
        "the splice, from the page cache by `mmap`: the page-cache row is that hash alone, on the served file.",
        runs=rounds, duration_s=time.time() - started,
    )
    d = raw["daemon"]
    for name, values in raw.items():
        walls = [m["wall"] for m in values]
        ratios = None if name == "daemon" else ratios_to(d, values)
        result.rows.append(Row(name, "wall", "s", walls, ratios))
    for name, values in raw.items():
        result.rows.append(Row(name, "throughput", "MB/s", [size / MB / m["wall"] for m in values]))
    for name, values in raw.items():
        result.rows.append(Row(name, "CPU (user+sys)", "s", [m["cpu"] for m in values],
                               note="daemon: whole process tree" if name == "daemon" else
                               "in process" if name.startswith("part:") else ""))
    result.rows.append(Row("daemon", "rename -> job.started", "s", [m["pickup"] for m in d]))
    result.rows.append(Row("daemon", "rename -> job.recorded", "s", [m["to_record"] for m in d]))
    curl_ratios = next((r.ratios for r in result.rows if r.name == "curl -o" and r.ratios), None)
    result.targets.append(Target("1 GiB job (sha256 incl.) wall vs curl -o", median(curl_ratios) if curl_ratios
                                 else None, 1.1, "x", detail="median of per-round ratios" + _hash_floor(raw)))
    if size != SIZE:
        result.notes.append(f"smoke run: {size // 1024**2} MiB instead of 1 GiB")
    result.raw = {"size": size, "sha256": sha, "measurements": raw}
    return result


def _hash_floor(raw: dict[str, list[Measurement]]) -> str:
    """El suelo del objetivo en esta máquina: el sha256 solo frente a ``curl -o``, ronda a ronda; en
    memoria (el mejor caso) y del archivo en la caché de páginas (lo que hace el daemon). El daemon no
    puede terminar antes de resumir el último byte, así que si el sha256 solo ya pasa del límite, el
    objetivo no se alcanza aquí sin dejar de comprobar el hash."""
    curl = raw.get("curl -o")
    if not curl:
        return ""
    found = []
    for name, label in (("part: sha256 in memory", "in memory"),
                        ("part: sha256 of the file in the page cache (mmap)", "from the page cache")):
        hashed = raw.get(name)
        if hashed:
            ratios = sorted(h["wall"] / c["wall"] for h, c in zip(hashed, curl, strict=True))
            found.append(f"{label} {median(ratios):.2f}x curl ({ratios[0]:.2f}-{ratios[-1]:.2f})")
    return f"; floor here, sha256 alone: {', '.join(found)}" if found else ""
