"""Cifras del issue 17: coste del observador de métricas por evento, latencia de /metrics y antigüedad
del archivo de estado durante una descarga. ``python -m bench.operator_figures [--rounds N]``.

Cada cifra es la mediana de N rondas, con mínimo y máximo.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from daemon.events import add_event_observer, configure_events, get_logger, remove_event_observer
from daemon.metrics import DaemonMetrics, MetricsState
from daemon.status import status_age
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def _summary(name: str, values: list[float], unit: str) -> str:
    return (f"{name}: median {statistics.median(values):.2f} {unit} "
            f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} rounds)")


def event_cost(rounds: int, events: int = 50_000) -> tuple[list[float], list[float]]:
    """µs por evento job.progress, sin y con el observador de métricas."""
    folder = Path(tempfile.mkdtemp())
    configure_events(folder / "events.jsonl", "info", stderr=False)
    log = get_logger()
    metrics = DaemonMetrics(lambda: MetricsState(), "bench")
    without, with_metrics = [], []
    for _ in range(rounds):
        for observed, out in ((False, without), (True, with_metrics)):
            if observed:
                add_event_observer(metrics.observe)
            started = time.perf_counter()
            for i in range(events):
                log.info("job.progress", correlation_id="bench-1", bytes=i * 1024, total=None, percent=None, speed=1)
            out.append((time.perf_counter() - started) / events * 1e6)
            if observed:
                remove_event_observer(metrics.observe)
    return without, with_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_figures(rounds: int) -> tuple[list[float], list[float], list[float]]:
    """(ms por extracción de /metrics, antigüedad mediana y máxima del estado en segundos) por ronda."""
    scrape_ms: list[float] = []
    age_median: list[float] = []
    age_max: list[float] = []
    base = Path(tempfile.mkdtemp())
    port = _free_port()
    with TestServer() as server, DaemonProcess(base, metrics={"listen": f"127.0.0.1:{port}"}) as daemon:
        for n in range(rounds):
            url = server.add(f"/r{n}.bin", Behavior(data=b"x" * 4_000_000, rate=1_000_000, chunk=50_000))
            daemon.drop_job({"url": url, "id": f"round-{n}"})
            wait_until(lambda: orjson.loads(daemon.status_file.read_bytes())["running"], 20, interval=0.02)
            ages = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                ages.append(status_age(orjson.loads(daemon.status_file.read_bytes())) or 0.0)
                time.sleep(0.05)
            age_median.append(statistics.median(ages))
            age_max.append(max(ages))
            daemon.wait_record(f"round-{n}")
            samples = []
            for _ in range(20):
                started = time.perf_counter()
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
                samples.append((time.perf_counter() - started) * 1000)
            scrape_ms.append(statistics.median(samples))
    return scrape_ms, age_median, age_max


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    without, with_metrics = event_cost(args.rounds)
    print(_summary("event cost without metrics", without, "us/event"))
    print(_summary("event cost with metrics observer", with_metrics, "us/event"))
    scrape_ms, age_median, age_max = daemon_figures(args.rounds)
    print(_summary("GET /metrics (median of 20 per round)", scrape_ms, "ms"))
    print(_summary("status.json age while downloading, median per round", age_median, "s"))
    print(_summary("status.json age while downloading, max per round", age_max, "s"))


if __name__ == "__main__":
    main()
