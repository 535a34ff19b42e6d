"""Escenario 6: una pasada del recolector (``daemon.reaper.reap_temp_root``, en este proceso) sobre
10.000 directorios rancios (con un archivo de 1 KiB cada uno, mtime de hace 2 h) y sobre 10.000
directorios vivos (igual de viejos, pero cada uno con su ``flock`` tomado por otro proceso).

Los eventos van al registro de eventos (tmpfs) y su eco legible a un archivo (como al journal).
Referencia emparejada: ``systemd-tmpfiles --clean`` con la misma regla (edad por mtime, respeta
``flock``), si está instalado.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import RAW_DIR, Measurement, Row, ScenarioResult, Target, median, run_paired
from bench.context import BenchContext
from bench.daemon_runner import REPO
from bench.infra import Procs, raise_nofile, run_tool

AGE = 2 * 3600
MAX_AGE = 3600.0


def _make_dirs(root: Path, n: int, prefix: str) -> None:
    """``n`` directorios ``videonote_dl_<prefix><i>`` con un archivo de 1 KiB, todos con mtime viejo."""
    root.mkdir(parents=True, exist_ok=True)
    old = time.time() - AGE
    payload = os.urandom(1024)
    for i in range(n):
        d = root / f"videonote_dl_{prefix}{i:05d}"
        d.mkdir(mode=0o700)
        (d / "download.part").write_bytes(payload)
        os.utime(d / "download.part", (old, old))
        os.utime(d, (old, old))


class _EventSink:
    """Configura los eventos como en el daemon: JSON al registro y eco legible a "stderr", que
    durante la pasada apunta a un archivo en tmpfs (en producción, el journal)."""

    def __init__(self, base: Path) -> None:
        from daemon.events import configure_events

        self.echo = base / "stderr-echo.log"
        configure_events(base / "events.jsonl", "info", stderr=True)

    @staticmethod
    def close() -> None:
        """Cierra el registro de eventos (si no, el tmpfs no se podría desmontar)."""
        from daemon.events import configure_events

        configure_events(None, "info", stderr=False)

    def __enter__(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        fd = os.open(self.echo, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    def __exit__(self, *_exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _profiled(name: str, func: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    func()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    (RAW_DIR / f"profile-{name}.txt").write_text(text.getvalue())


def run(ctx: BenchContext) -> ScenarioResult:
    """Mide el escenario 6 y devuelve su resultado."""
    from daemon.reaper import reap_temp_root

    n = 1000 if ctx.smoke else 10000
    rounds = ctx.rounds(5)
    base = ctx.scratch("s6")
    stale_root, live_root, ref_root = base / "stale", base / "live", base / "ref"
    sink = _EventSink(base)
    raise_nofile(n + 256)
    _make_dirs(live_root, n, "live")
    holder = Procs.popen([sys.executable, "-m", "bench._lock_holder", str(live_root)], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert holder.stdout is not None
    line = holder.stdout.readline().decode()
    if not line.startswith("LOCKED"):
        raise RuntimeError(f"the lock holder failed: {line!r}")
    tmpfiles = shutil.which("systemd-tmpfiles")
    conf = base / "tmpfiles.conf"
    # "mM:" = edad sólo por mtime, de archivos y de directorios (como el recolector); los
    # directorios bloqueados con flock se saltan.
    conf.write_text(f"d {ref_root} 0700 root root mM:{int(MAX_AGE)}s\n")

    def stale(_rnd: int) -> Measurement:
        _make_dirs(stale_root, n, "stale")
        with sink:
            t0 = time.perf_counter()
            report = reap_temp_root(stale_root, MAX_AGE)
            elapsed = time.perf_counter() - t0
        if len(report.removed) != n or any(stale_root.iterdir()):
            raise RuntimeError(f"reaper removed {len(report.removed)} of {n} stale dirs ({report.errors} errors)")
        return {"wall": elapsed}

    def live(_rnd: int) -> Measurement:
        with sink:
            t0 = time.perf_counter()
            report = reap_temp_root(live_root, MAX_AGE)
            elapsed = time.perf_counter() - t0
        if report.locked != n or report.removed:
            raise RuntimeError(f"reaper saw {report.locked} locked and removed {len(report.removed)} of {n} live dirs")
        return {"wall": elapsed}

    def reference(_rnd: int) -> Measurement:
        _make_dirs(ref_root, n, "ref")
        result = run_tool([tmpfiles, "--clean", str(conf)])  # type: ignore[list-item]
        left = sum(1 for _ in ref_root.iterdir())
        if left:
            shutil.rmtree(ref_root)
        return {"wall": result.wall, "left": float(left)}

    contenders: list[tuple[str, Callable[[int], Measurement]]] = [
        ("reaper: stale", stale), ("reaper: live (locked)", live)]
    if tmpfiles:
        contenders.append(("systemd-tmpfiles --clean: stale", reference))
    started = time.time()
    try:
        raw = run_paired(contenders, rounds)
        if ctx.profile:
            _make_dirs(stale_root, n, "stale")
            with sink:
                _profiled("s6-stale", lambda: reap_temp_root(stale_root, MAX_AGE))
                _profiled("s6-live", lambda: reap_temp_root(live_root, MAX_AGE))
    finally:
        sink.close()
        if holder.stdin is not None:
            holder.stdin.close()
        Procs.kill_group(holder)
    result = ScenarioResult(
        6, "reaper pass over 10,000 dirs",
        f"`daemon.reaper.reap_temp_root` called in-process over {n:,} stale `videonote_dl_*` dirs (one 1 KiB "
        f"file each, mtime 2 h ago, max_age 1 h: all removed, one `reaper.removed` event each) and over {n:,} "
        "equally old dirs each held under flock by another process (all skipped). Events go to the event log "
        "and their readable echo to a file, both on tmpfs.",
        runs=rounds, duration_s=time.time() - started,
    )
    stale_vals = [m["wall"] for m in raw["reaper: stale"]]
    live_vals = [m["wall"] for m in raw["reaper: live (locked)"]]
    ref = raw.get("systemd-tmpfiles --clean: stale")
    ref_ok = bool(ref) and all(m["left"] == 0 for m in ref)  # type: ignore[union-attr]
    result.rows.append(Row("reaper: stale", f"pass over {n:,}", "s", stale_vals,
                           [s / m["wall"] for s, m in zip(stale_vals, ref, strict=True)] if ref_ok else None,  # type: ignore[arg-type]
                           "vs systemd-tmpfiles" if ref_ok else ""))
    result.rows.append(Row("reaper: live (locked)", f"pass over {n:,}", "s", live_vals))
    if ref:
        note = "" if ref_ok else f"left {median([m['left'] for m in ref]):.0f} dirs: not a like-for-like reference"
        result.rows.append(Row("systemd-tmpfiles --clean: stale", f"pass over {n:,}", "s", [m["wall"] for m in ref],
                               note=note))
    result.targets += [
        Target(f"reaper: {n:,} stale dirs removed", median(stale_vals), 2.0, "s"),
        Target(f"reaper: pass over {n:,} live dirs", median(live_vals), 0.5, "s"),
    ]
    result.raw = {"n": n, "measurements": raw}
    return result
