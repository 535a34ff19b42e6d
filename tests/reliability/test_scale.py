"""Carga y concurrencia: ráfagas grandes, varios daemons sobre un spool, recargas y paradas bajo carga."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def _drop_many(daemon: DaemonProcess, jobs: list[tuple[str, str]]) -> None:
    """Escribe todos los archivos en tmp/ y luego los entrega con rename, tan rápido como se pueda."""
    tmp, incoming = daemon.spool / "tmp", daemon.spool / "incoming"
    tmp.mkdir(parents=True, exist_ok=True)
    incoming.mkdir(parents=True, exist_ok=True)
    for job_id, url in jobs:
        (tmp / f"{job_id}.yaml").write_text(f"url: {url}\nid: {job_id}\n")
    for job_id, _url in jobs:
        os.rename(tmp / f"{job_id}.yaml", incoming / f"{job_id}.yaml")


def _max_running(daemon: DaemonProcess) -> int:
    """Máximo de descargas simultáneas según los eventos (job.started abre, terminal cierra)."""
    running: set[str] = set()
    peak = 0
    for event in daemon.events():
        name, cid = event["event"], event.get("correlation_id")
        if name == "job.started":
            running.add(cid)
            peak = max(peak, len(running))
        elif name in ("job.succeeded", "job.failed", "job.cancelled", "job.interrupted"):
            running.discard(cid)
    return peak


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_burst_of_5000_small_jobs(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(4096)
    url = test_server.add("/small.bin", Behavior(data=data))
    with DaemonProcess(tmp_path, max_concurrent=8, log_level="warning") as daemon:
        jobs = [(f"s{n}", f"{url}?n={n}") for n in range(5000)]
        _drop_many(daemon, jobs)
        wait_until(lambda: len(list((daemon.spool / "done").iterdir())) >= 5000, 300, interval=0.5,
                   what="5000 records in done/")
        peak_kib = _peak_rss_kib(daemon.pid)
        print(f"\npeak RSS of the daemon after 5,000 jobs: {peak_kib / 1024:.1f} MiB")
    settings = load_settings(daemon.config_path)
    result = verify_spool(settings, expected={job_id: hashlib.sha256(data).hexdigest() for job_id, _ in jobs},
                          check_events=False)
    assert result.ok, result.problems[:10]
    assert len(list(daemon.output.iterdir())) == 5000
    assert peak_kib < 400 * 1024  # acotada: no crece con cada trabajo de forma desmedida


def test_200_jobs_never_exceed_max_concurrent(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/m.bin", Behavior(data=os.urandom(100_000), rate=2_000_000, chunk=16_384))
    with DaemonProcess(tmp_path, max_concurrent=5) as daemon:
        _drop_many(daemon, [(f"m{n}", f"{url}?n={n}") for n in range(200)])
        wait_until(lambda: len(list((daemon.spool / "done").iterdir())) >= 200, 120, interval=0.3,
                   what="200 records")
        peak = _max_running(daemon)
    assert 1 < peak <= 5, peak


@pytest.mark.slow
def test_three_daemons_share_one_spool(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(2048)
    url = test_server.add("/shared.bin", Behavior(data=data))
    shared = {"spool_dir": str(tmp_path / "spool"), "output_dir": str(tmp_path / "out")}
    daemons = [DaemonProcess(tmp_path / f"d{n}", max_concurrent=4, log_level="warning", **shared)
               for n in range(3)]
    for daemon in daemons:
        daemon.start()
    try:
        jobs = [(f"x{n}", f"{url}?n={n}") for n in range(1000)]
        _drop_many(daemons[0], jobs)
        wait_until(lambda: len(list((tmp_path / "spool" / "done").iterdir())) >= 1000, 240, interval=0.5,
                   what="1000 records")
    finally:
        codes = [daemon.stop() for daemon in daemons]
    assert codes == [0, 0, 0]
    hits: dict[str, int] = {}
    for request in test_server.requests_for("/shared.bin"):
        hits[request.path] = hits.get(request.path, 0) + 1
    assert len(hits) == 1000 and set(hits.values()) == {1}, "a job was downloaded twice or never"
    workers = {orjson_load(p)["daemon"]["instance"] for p in (tmp_path / "spool" / "done").iterdir()}
    assert len(workers) >= 2, "the work was not shared"
    for daemon in daemons:
        settings = load_settings(daemon.config_path)
        assert not daemon.temp_dirs()
    result = verify_spool(settings, expected={j: hashlib.sha256(data).hexdigest() for j, _ in jobs},
                          check_events=False)
    assert result.ok, result.problems[:10]


def orjson_load(path: Path) -> dict:
    import orjson

    return orjson.loads(path.read_bytes())


@pytest.mark.slow
def test_reload_storm_then_stop_under_load_loses_nothing(tmp_path: Path, test_server: TestServer) -> None:
    payloads = {n: os.urandom(300_000) for n in range(50)}
    for n, data in payloads.items():
        test_server.add(f"/r{n}.bin", Behavior(data=data, rate=400_000, chunk=32_768))
    daemon = DaemonProcess(tmp_path, max_concurrent=50, shutdown_grace="1s")
    daemon.start()
    for n in range(50):
        daemon.drop_job({"url": test_server.url(f"/r{n}.bin"), "id": f"r{n}"})
    stop = threading.Event()

    def hup_storm() -> None:
        while not stop.is_set():
            daemon.signal(signal.SIGHUP)
            time.sleep(0.2)

    storm = threading.Thread(target=hup_storm)
    storm.start()
    time.sleep(2.0)
    stop.set()
    storm.join()
    assert daemon.stop() == 0
    assert daemon.count_events("config.reloaded") >= 5
    daemon.start()  # lo devuelto a incoming/ termina en el siguiente arranque
    wait_until(lambda: all(daemon.record(f"r{n}") for n in range(50)), 120, interval=0.3, what="all 50 records")
    assert daemon.stop() == 0
    expected = {f"r{n}": hashlib.sha256(data).hexdigest() for n, data in payloads.items()}
    result = verify_spool(load_settings(daemon.config_path), expected=expected)
    assert result.ok, result.problems[:10]
