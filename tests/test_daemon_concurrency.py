"""Concurrencia y orden: el límite ``max_concurrent`` y la prioridad, vistos desde el registro de eventos
del daemon real (subproceso) contra un servidor HTTP real en 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

TERMINAL = {"job.succeeded", "job.failed", "job.cancelled", "job.interrupted"}


def running_profile(events: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """Máximo de trabajos en curso a la vez (de job.started al evento terminal) y arranques por id."""
    running: set[str] = set()
    started: dict[str, int] = {}
    peak = 0
    for event in sorted(events, key=lambda e: e["ts"]):  # orden estable: los empates quedan como en el archivo
        job_id = event.get("correlation_id")
        if event["event"] == "job.started":
            running.add(job_id)
            started[job_id] = started.get(job_id, 0) + 1
            peak = max(peak, len(running))
        elif event["event"] in TERMINAL:
            assert job_id in running, f"{event['event']} for {job_id} without job.started"
            running.discard(job_id)
    assert not running, f"jobs never finished: {sorted(running)}"
    return peak, started


def test_running_profile_counts_overlaps() -> None:
    """La propia medida puede fallar: tres trabajos solapados cuentan 3."""
    events = [
        {"ts": "1", "event": "job.started", "correlation_id": "a"},
        {"ts": "2", "event": "job.started", "correlation_id": "b"},
        {"ts": "3", "event": "job.started", "correlation_id": "c"},
        {"ts": "4", "event": "job.succeeded", "correlation_id": "a"},
        {"ts": "5", "event": "job.failed", "correlation_id": "b"},
        {"ts": "6", "event": "job.succeeded", "correlation_id": "c"},
    ]
    assert running_profile(events) == (3, {"a": 1, "b": 1, "c": 1})


def test_200_jobs_at_once_respect_max_concurrent(tmp_path: Path, test_server: TestServer) -> None:
    max_concurrent = 5
    count = 200
    payloads: dict[str, bytes] = {}
    for n in range(count):
        job_id = f"bulk-{n:03d}"
        payloads[job_id] = os.urandom(24 * 1024 + n)
        # Lento a propósito (~0,1 s por archivo): los trabajos se solapan de verdad.
        test_server.add(f"/bulk/{job_id}.bin", Behavior(data=payloads[job_id], chunk=8 * 1024, rate=240 * 1024))
    with DaemonProcess(tmp_path, max_concurrent=max_concurrent) as daemon:
        for job_id in payloads:
            daemon.drop_job({"id": job_id, "url": test_server.url(f"/bulk/{job_id}.bin")})
        wait_until(lambda: all(daemon.record(job_id) for job_id in payloads), 90, interval=0.2,
                   what="200 terminal records")
        for job_id, data in payloads.items():
            folder, record = daemon.wait_record(job_id)
            assert folder == "done", record
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
            assert (daemon.output / f"{job_id}.bin").read_bytes() == data
        wait_until(lambda: not daemon.temp_dirs(), 10, what="no temp dir left")
        wait_until(lambda: daemon.count_events("tempdir.removed") >= count, 10)
        assert not daemon.active_files()
        assert not list((daemon.spool / "incoming").iterdir())
        events = daemon.events()
    # Orden por ts: los eventos de hilos auxiliares pueden salir en el archivo unos µs desordenados;
    # job.started y los terminales salen todos del bucle del daemon, así que su orden por ts es el real.
    peak, started = running_profile([e for e in events if e.get("correlation_id") in payloads])
    assert peak <= max_concurrent, f"{peak} downloads ran at once with max_concurrent {max_concurrent}"
    assert peak == max_concurrent, f"never reached the limit ({peak}): the test did not load the daemon"
    assert set(started) == set(payloads)
    assert sum(1 for e in events if e["event"] == "job.succeeded") == count


@pytest.mark.parametrize("lookahead", [0, 3])
def test_higher_priority_dropped_later_starts_first(tmp_path: Path, test_server: TestServer, lookahead: int) -> None:
    """Con ``lookahead: 0`` esperan en incoming/ (se reclaman por prioridad); con 3, en la cola."""
    release = threading.Event()
    first = os.urandom(256 * 1024)
    test_server.add("/prio/first.bin", Behavior(data=first, hold=release, hold_after=64 * 1024))
    for name in ("low-1", "low-2", "high"):
        test_server.add(f"/prio/{name}.bin", Behavior(data=name.encode() * 1000))
    try:
        with DaemonProcess(tmp_path, max_concurrent=1, lookahead=lookahead) as daemon:
            daemon.drop_job({"id": "first", "url": test_server.url("/prio/first.bin")})
            wait_until(lambda: daemon.events("first", "job.started"), 30, what="first job started")
            # Llegan en este orden mientras «first» ocupa el único hueco.
            for job_id, priority in (("low-1", 0), ("low-2", 0), ("high", 5)):
                daemon.drop_job({"id": job_id, "url": test_server.url(f"/prio/{job_id}.bin"), "priority": priority})
                if lookahead:
                    wait_until(lambda job_id=job_id: daemon.events(job_id, "job.queued"), 30,
                               what=f"{job_id} queued")
            if not lookahead:
                time.sleep(1.5)  # más que rescan_interval: un escaneo pasó y no reclamó nada
                assert sorted(p.name for p in (daemon.spool / "incoming").iterdir()) == [
                    "high.yaml", "low-1.yaml", "low-2.yaml"]
            assert daemon.record("first") is None, "the first job must still be running here"
            assert not daemon.events("high", "job.started")
            release.set()
            for job_id in ("first", "low-1", "low-2", "high"):
                folder, record = daemon.wait_record(job_id)
                assert folder == "done", record
            order = [e["correlation_id"] for e in daemon.events(name="job.started")]
            wait_until(lambda: not daemon.temp_dirs(), 10, what="no temp dir left")
    finally:
        release.set()
    assert order == ["first", "high", "low-1", "low-2"]
