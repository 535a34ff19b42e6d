"""Coste de la disciplina de fsync: trabajos pequeños en disco real (no tmpfs), y fsyncs por trabajo.

    python -m bench.fsync_cost --jobs 200 --rounds 5 [--base-src DIR] [--dir /var/tmp]

Corre el daemon real con spool, temporales y salida en ``--dir`` (un disco, no tmpfs), entrega
``--jobs`` trabajos de 16 KiB servidos en 127.0.0.1 y mide del primer envío al último registro
(como el escenario 2 de ``make bench``). Con ``--base-src`` (un árbol con otro ``daemon/``, p. ej.
``git archive <commit> daemon | tar -x -C DIR``) alterna rondas de las dos versiones. Con
``--strace`` cuenta las llamadas fsync/fdatasync del daemon (strace -f -c) en una ronda aparte.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

FILE_SIZE = 16 * 1024


def _round(base: Path, server: TestServer, jobs: int, src: Path | None, strace_out: Path | None) -> float:
    shutil.rmtree(base, ignore_errors=True)
    daemon = DaemonProcess(base, max_concurrent=8, rescan_interval="1s", log_level="info")
    env = {"PYTHONPATH": str(src)} if src is not None else {}
    if strace_out is not None:
        # strace envuelve al intérprete: mismo daemon, con la cuenta de llamadas al salir.
        daemon_cmd = [shutil.which("strace") or "strace", "-f", "-c", "-o", str(strace_out), "-e",
                      "trace=fsync,fdatasync", sys.executable]
        proc_env = {**os.environ, **env}
        daemon.stderr_path = base / "stderr.log"
        daemon._stderr = open(daemon.stderr_path, "wb")  # noqa: SIM115
        daemon.proc = subprocess.Popen([*daemon_cmd, "-m", "daemon", "run", "--config", str(daemon.config_path)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=daemon._stderr,
                                       env=proc_env, cwd=src)
        wait_until(lambda: daemon.count_events("daemon.ready") > 0, 30, what="daemon ready")
    else:
        # ``python -m daemon`` importa primero desde el directorio actual: el del árbol elegido.
        here = os.getcwd()
        os.chdir(src or here)
        try:
            daemon.start(env=env)
        finally:
            os.chdir(here)
    started = time.perf_counter()
    for n in range(jobs):
        daemon.drop_job({"url": server.url(f"/f{n}.bin"), "id": f"f{n}"})
    done = daemon.spool / "done"
    wait_until(lambda: sum(1 for _ in os.scandir(done)) >= jobs, 300, interval=0.01, what="all records")
    elapsed = time.perf_counter() - started
    if strace_out is not None:
        # SIGTERM al daemon (hijo de strace), no a strace: strace escribe la cuenta cuando él sale.
        pid = json.loads(daemon.status_file.read_bytes())["pid"]
        os.kill(pid, signal.SIGTERM)
        assert daemon.proc is not None
        daemon.proc.wait(120)
        daemon._stderr.close()
    else:
        assert daemon.stop() == 0
    return elapsed


def _fsyncs(strace_out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in strace_out.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            counts[match.group(2)] = int(match.group(1))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.fsync_cost")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="a folder on a real disk")
    parser.add_argument("--base-src", type=Path, help="tree with the daemon/ to compare against")
    parser.add_argument("--strace", action="store_true", help="also count fsync calls per job with strace")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fsync-cost-", dir=args.dir))
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(work)], capture_output=True, text=True).stdout.strip()
    print(f"working on {work} ({fstype})")
    versions: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.base_src is not None:
        versions.append((f"base {args.base_src}", args.base_src.resolve()))
    times: dict[str, list[float]] = {name: [] for name, _ in versions}
    try:
        with TestServer() as server:
            for n in range(args.jobs):
                server.add(f"/f{n}.bin", Behavior(data=os.urandom(FILE_SIZE)))
            for _ in range(args.rounds):
                for name, src in versions:
                    times[name].append(_round(work / "run", server, args.jobs, src, None))
            for name, values in times.items():
                print(f"{name}: {args.jobs} jobs of 16 KiB in median {statistics.median(values):.3f} s "
                      f"(min {min(values):.3f}, max {max(values):.3f}; {len(values)} rounds); "
                      f"{statistics.median(values) / args.jobs * 1000:.2f} ms/job")
            if args.strace:
                for name, src in versions:
                    out = work / "strace.txt"
                    _round(work / "run", server, args.jobs, src, out)
                    counts = _fsyncs(out)
                    total = sum(counts.values())
                    print(f"{name}: fsync calls {counts} = {total / args.jobs:.2f} per job")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
