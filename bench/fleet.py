"""Cifras de la flota: varios daemons reales sobre un spool, en este host.

    .venv/bin/python -m bench.fleet [--rounds N]

1. Reparto: 3 daemons (max_concurrent 4, lookahead 0) y 600 trabajos de ~120 ms (servidor de
   pruebas en loopback): trabajos por daemon (desviación máxima respecto de 1/3) y tiempo total.
2. Par muerto: kill -9 de un daemon con una descarga en curso; segundos hasta que su par vivo la
   devuelve a incoming/ (``job.requeued``), con ``rescan_interval: 1s``.
3. Orden de reclamo con 20.000 archivos en incoming/: la primera lectura de prioridades (por
   archivo) y una pasada ya en caché.

Cada cifra: mediana de las rondas, con mínimo y máximo.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.claim_order import ClaimOrder
from daemon.spool import Spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def _fleet(base: Path, count: int, **overrides: Any) -> list[DaemonProcess]:
    shared = {"spool_dir": str(base / "spool"), "output_dir": str(base / "out"), "rescan_interval": "1s"}
    return [DaemonProcess(base / f"d{n}", **shared, **overrides) for n in range(count)]


def share_round(base: Path, server: TestServer) -> tuple[float, float]:
    """(desviación máxima del reparto en %, segundos para 600 trabajos)."""
    rng = random.Random()
    daemons = _fleet(base, 3, max_concurrent=4)
    spool = base / "spool"
    try:
        for d in daemons:
            d.start(wait_ready=False)
        for d in daemons:
            wait_until(lambda d=d: d.count_events("daemon.ready"), 30, what="ready")
        (spool / "tmp").mkdir(parents=True, exist_ok=True)
        for n in range(600):
            job = {"id": f"b{n:03d}", "url": server.url(f"/b/{n % 50}.bin"), "priority": rng.randint(0, 9)}
            (spool / "tmp" / f"b{n:03d}.yaml").write_text(yaml.safe_dump(job))
        began = time.monotonic()
        for n in range(600):
            os.rename(spool / "tmp" / f"b{n:03d}.yaml", spool / "incoming" / f"b{n:03d}.yaml")
        wait_until(lambda: len(os.listdir(spool / "done")) == 600, 300, interval=0.05, what="600 records")
        took = time.monotonic() - began
        shares = Counter({n: d.count_events("job.recorded") for n, d in enumerate(daemons)})
        deviation = max(abs(v - 200) / 200 * 100 for v in shares.values())
        print(f"  shares {dict(shares)}; {took:.2f}s")
        return deviation, took
    finally:
        for d in daemons:
            d.stop()


def dead_peer_round(base: Path, server: TestServer) -> float:
    hold = threading.Event()
    url = server.add(f"/held-{base.name}.bin", Behavior(data=b"h" * 256 * 1024, hold=hold, hold_after=64 * 1024))
    a, b = _fleet(base, 2)
    try:
        a.start()
        a.drop_job({"id": "held", "url": url})
        wait_until(lambda: a.events("held", "job.started"), 30, what="started")
        b.start()
        time.sleep(random.uniform(0, 1))  # la muerte cae en cualquier punto del ciclo de barrido
        a.kill9()
        killed = time.time()
        requeued = wait_until(lambda: b.events("held", "job.requeued"), 30, what="requeued")
        return _ts(requeued[0]) - killed
    finally:
        hold.set()
        b.stop()


def claim_order_round(base: Path) -> tuple[float, float]:
    """(µs por archivo en la primera lectura de prioridades, ms de una pasada en caché) con 20.000."""
    spool = Spool(base / "spool")
    spool.prepare()
    try:
        for i in range(20000):
            (spool.incoming / f"c{i:05d}.yaml").write_text(f"url: http://127.0.0.1/x/{i}\npriority: {i % 7}\n")
        order = ClaimOrder(spool.incoming)
        entries = spool.scan_incoming()
        t0 = time.perf_counter()
        order.order(entries, 4)
        t1 = time.perf_counter()
        order.order(spool.scan_incoming(), 4)
        t2 = time.perf_counter()
        return (t1 - t0) / 20000 * 1e6, (t2 - t1) * 1000
    finally:
        spool.close()


def _line(name: str, values: list[float], unit: str) -> str:
    return (f"{name}: median {statistics.median(values):.3f}{unit} (min {min(values):.3f}, max {max(values):.3f}, "
            f"{len(values)} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-", dir="/var/tmp"))
    server = TestServer().start()
    for n in range(50):
        server.add(f"/b/{n}.bin", Behavior(data=os.urandom(4096), stall=0.12))
    try:
        shares, took, delays, peeks, cached = [], [], [], [], []
        for r in range(args.rounds):
            deviation, seconds = share_round(root / f"share{r}", server)
            shares.append(deviation)
            took.append(seconds)
            delays.append(dead_peer_round(root / f"peer{r}", server))
            per_file, pass_ms = claim_order_round(root / f"order{r}")
            peeks.append(per_file)
            cached.append(pass_ms)
        print(_line("3 daemons x 600 jobs: largest deviation from an even share", shares, "%"))
        print(_line("3 daemons x 600 jobs: wall time", took, "s"))
        print(_line("dead peer's claim requeued after kill -9 (rescan_interval 1s)", delays, "s"))
        print(_line("claim order, first priority read of 20000 files", peeks, "us/file"))
        print(_line("claim order, cached pass over 20000 files (scan + sort)", cached, "ms"))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
