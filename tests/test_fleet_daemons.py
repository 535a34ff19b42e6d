"""Varios daemons reales sobre un spool: pares muertos, reparto del trabajo y prioridad en la flota.

- Un daemon muerto para siempre (kill -9) mientras otro vive: el vivo devuelve a incoming/ los
  reclamos del muerto en menos de 2 x ``rescan_interval`` y termina su trabajo.
- Tres daemons y 600 trabajos con prioridades al azar: cada uno hace su parte (±15 %) y, en el
  orden real de inicio (los tres registros mezclados), ningún trabajo de prioridad más alta
  empieza más tarde que uno más baja, salvo en la ventana de un escaneo concurrente.
- ``watch: poll``: sin inotify, los trabajos llegan por el reescaneo periódico.

``videonote-dl verify --event-log`` (uno por daemon) comprueba al final que cada trabajo acabó una
sola vez y que las secuencias de eventos, mezcladas, son válidas.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

RESCAN = 1.0


def _fleet(tmp_path: Path, count: int, **overrides: Any) -> list[DaemonProcess]:
    """``count`` daemons con spool y salida compartidos; temporales, registro y estado propios."""
    shared = {"spool_dir": str(tmp_path / "spool"), "output_dir": str(tmp_path / "out"),
              "rescan_interval": f"{RESCAN:g}s"}
    return [DaemonProcess(tmp_path / f"d{n}", **shared, **overrides) for n in range(count)]


def _verify(daemons: list[DaemonProcess]) -> str:
    args = [sys.executable, "-m", "daemon", "verify", "--config", str(daemons[0].config_path)]
    for daemon in daemons:
        args += ["--event-log", str(daemon.event_log)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result.stdout


def _drop_all(spool: Path, jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Como un productor, pero todos a la vez: se escriben en tmp/ y luego se renombran seguidos.
    Devuelve cuándo llegó cada uno a incoming/."""
    (spool / "tmp").mkdir(parents=True, exist_ok=True)
    (spool / "incoming").mkdir(parents=True, exist_ok=True)
    for job in jobs:
        (spool / "tmp" / f"{job['id']}.yaml").write_text(yaml.safe_dump(job))
    arrived = {}
    for job in jobs:
        os.rename(spool / "tmp" / f"{job['id']}.yaml", spool / "incoming" / f"{job['id']}.yaml")
        arrived[job["id"]] = time.time()
    return arrived


def test_live_daemon_requeues_a_dead_peers_claims(tmp_path: Path, test_server: TestServer) -> None:
    hold = threading.Event()
    data = os.urandom(512 * 1024)
    url = test_server.add("/held.bin", Behavior(data=data, hold=hold, hold_after=64 * 1024, hold_times=1))
    a, b = _fleet(tmp_path, 2)
    try:
        a.start()
        a.drop_job({"id": "held", "url": url})
        wait_until(lambda: a.events("held", "job.started"), 30, what="held started in A")
        b.start()
        assert b.events("held") == [], "B must not have touched A's job"
        dead_instance = a.events(name="daemon.starting")[0]["instance"]
        assert (a.spool / "active" / dead_instance / "held.yaml").exists()
        a.kill9()
        killed_at = time.time()
        recovered = wait_until(lambda: b.events(name="spool.peer_recovered"), 10, what="peer recovered by B")
        requeued = wait_until(lambda: b.events("held", "job.requeued"), 10, what="held requeued by B")
        assert recovered[0]["instance"] == dead_instance and recovered[0]["files"] == 1
        delay = _ts(requeued[0]) - killed_at
        print(f"dead peer's claim requeued {delay:.3f}s after the kill (rescan_interval {RESCAN}s)")
        assert delay < 2 * RESCAN
        hold.set()
        folder, record = b.wait_record("held", 30)
        assert folder == "done" and record["sha256"] == hashlib.sha256(data).hexdigest()
        assert not (a.spool / "active" / dead_instance).exists()
        assert b.stop() == 0
        out = _verify([a, b])
        assert "OK: 1 jobs" in out, out
    finally:
        hold.set()
        for daemon in (a, b):
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill9()


def _inotify_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += "inotify" in os.readlink(fd)
        except FileNotFoundError:  # un descriptor que se cerró mientras se listaba
            continue
    return count


def _ts(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def test_three_daemons_share_600_jobs_and_keep_priority_order(tmp_path: Path, test_server: TestServer) -> None:
    jobs_n, per_daemon = 600, 4
    rng = random.Random(14)
    jobs = []
    for n in range(jobs_n):
        job_id = f"j{n:03d}"
        test_server.add(f"/f/{job_id}.bin", Behavior(data=job_id.encode() * 100, stall=0.12))
        jobs.append({"id": job_id, "url": test_server.url(f"/f/{job_id}.bin"), "priority": rng.randint(0, 9)})
    priority = {job["id"]: job["priority"] for job in jobs}
    daemons = _fleet(tmp_path, 3, max_concurrent=per_daemon)
    try:
        for daemon in daemons:
            daemon.start(wait_ready=False)
        for daemon in daemons:
            wait_until(lambda daemon=daemon: daemon.count_events("daemon.ready"), 30, what="daemon ready")
        began = time.monotonic()
        arrived = _drop_all(daemons[0].spool, jobs)
        wait_until(lambda: len(os.listdir(daemons[0].spool / "done")) == jobs_n, 240, interval=0.2,
                   what="600 records")
        took = time.monotonic() - began
        for daemon in daemons:
            assert daemon.stop() == 0
        starts: list[tuple[float, str, int]] = []
        for n, daemon in enumerate(daemons):
            starts += [(_ts(e), e["correlation_id"], n) for e in daemon.events(name="job.started")
                       if e.get("attempt") == 1]
        starts.sort()
        assert sorted(job_id for _ts_, job_id, _n in starts) == sorted(priority)
        shares = Counter(n for _ts_, _id, n in starts)
        print(f"600 jobs in {took:.1f}s; per daemon: {dict(sorted(shares.items()))}")
        for n in range(3):
            assert abs(shares[n] - jobs_n / 3) <= 0.15 * jobs_n / 3, shares
        # Prioridad en toda la flota: cuando un trabajo empieza, ninguno de más prioridad que ya
        # esperaba en incoming/ empieza después. WINDOW cubre el reloj de eventos de tres procesos
        # y dos daemons que escanean a la vez.
        window = 0.3
        started_at = {job_id: ts for ts, job_id, _n in starts}
        inversions = [
            (job_id, priority[job_id], other, priority[other], round(started_at[other] - ts, 3))
            for ts, job_id, _n in starts
            for other in priority
            if priority[other] > priority[job_id] and arrived[other] < ts - window
            and started_at[other] > ts + window
        ]
        assert not inversions, inversions[:10]
        # Y no por casualidad: pasada la llegada, el orden de inicio baja de 9 a 0.
        levels = [priority[j] for t, j, _n in starts if t > max(arrived.values()) + window]
        assert levels[0] == 9 and levels[-1] == 0
        # Ningún daemon acapara: con lookahead 0, lo que espera en su cola es sólo el recién llegado.
        for daemon in daemons:
            assert max(e["queued"] for e in daemon.events(name="job.queued")) <= 1
        out = _verify(daemons)
        assert f"OK: {jobs_n} jobs" in out, out
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill9()


def test_poll_mode_claims_by_rescan_only(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/p.bin", Behavior(data=b"poll" * 1000))
    with DaemonProcess(tmp_path, watch="poll", rescan_interval="1s") as daemon:
        mode = daemon.events(name="spool.watch_mode")
        assert mode and mode[0]["watch"] == "poll" and mode[0]["configured"] == "poll"
        # Sin inotify: ningún descriptor inotify abierto en el proceso.
        assert _inotify_fds(daemon.pid) == 0
        daemon.drop_job({"id": "polled", "url": url})
        folder, _record = daemon.wait_record("polled", 15)
        assert folder == "done"
    with DaemonProcess(tmp_path / "inotify", rescan_interval="1s") as daemon:
        assert daemon.events(name="spool.watch_mode")[0]["watch"] == "inotify"
        assert _inotify_fds(daemon.pid) >= 1  # la comprobación de arriba puede fallar
