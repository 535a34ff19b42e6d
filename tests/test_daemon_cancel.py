"""Cancelar trabajos en cola y en curso, por las dos vías: un archivo ``<id>`` en spool/cancel/ y la
orden ``videonote-dl cancel ID``. Daemon real (subproceso) y servidor HTTP real en 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def cancel_by_file(daemon: DaemonProcess, job_id: str) -> None:
    (daemon.spool / "cancel").mkdir(parents=True, exist_ok=True)
    (daemon.spool / "cancel" / job_id).touch()


def cancel_by_cli(daemon: DaemonProcess, job_id: str) -> None:
    done = subprocess.run([sys.executable, "-m", "daemon", "cancel", job_id, "--config", str(daemon.config_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout


def assert_cancelled(daemon: DaemonProcess, job_id: str, was_running: bool) -> dict[str, Any]:
    folder, record = daemon.wait_record(job_id, 30)
    assert folder == "failed", record
    assert record["outcome"] == "cancelled", record
    assert record["error"]["kind"] == "cancelled"
    assert "path" not in record
    wait_until(lambda: daemon.events(job_id, "job.cancelled"), 10, what=f"job.cancelled of {job_id}")
    wait_until(lambda: f"videonote_dl_{job_id}" not in daemon.temp_dirs(), 10, what=f"temp dir of {job_id} gone")
    wait_until(lambda: not (daemon.spool / "cancel" / job_id).exists(), 10, what=f"cancel/{job_id} consumed")
    names = list(daemon.iter_event_names(job_id))
    assert "job.succeeded" not in names and "job.published" not in names
    if was_running:
        assert record["attempts"] >= 1
        assert "tempdir.created" in names and "tempdir.removed" in names
    else:
        assert record["attempts"] == 0
        assert "job.started" not in names and "tempdir.created" not in names
    return record


def test_cancel_queued_and_running_jobs_both_ways(tmp_path: Path, test_server: TestServer) -> None:
    hold = threading.Event()
    for job_id in ("run-file", "run-cli"):
        # Se envía una parte y el servidor se queda esperando: el trabajo está en pleno cuerpo.
        test_server.add(f"/{job_id}.bin", Behavior(data=b"r" * 512 * 1024, hold=hold, hold_after=128 * 1024))
    for job_id in ("queued-file", "queued-cli", "after"):
        test_server.add(f"/{job_id}.bin", Behavior(data=job_id.encode() * 100))
    try:
        with DaemonProcess(tmp_path, max_concurrent=1, lookahead=4) as daemon:
            daemon.drop_job({"id": "run-file", "url": test_server.url("/run-file.bin"), "priority": 10})
            wait_until(lambda: (daemon.temp_root / "videonote_dl_run-file" / "download.part").exists(), 30,
                       what="run-file receiving its body")
            daemon.drop_job({"id": "queued-file", "url": test_server.url("/queued-file.bin")})
            daemon.drop_job({"id": "queued-cli", "url": test_server.url("/queued-cli.bin")})
            daemon.drop_job({"id": "run-cli", "url": test_server.url("/run-cli.bin"), "priority": 5})
            for job_id in ("queued-file", "queued-cli", "run-cli"):
                wait_until(lambda job_id=job_id: daemon.events(job_id, "job.queued"), 30, what=f"{job_id} queued")

            cancel_by_file(daemon, "queued-file")
            assert_cancelled(daemon, "queued-file", was_running=False)
            cancel_by_cli(daemon, "queued-cli")
            assert_cancelled(daemon, "queued-cli", was_running=False)
            assert daemon.record("run-file") is None, "run-file must still be running"

            cancel_by_file(daemon, "run-file")
            assert_cancelled(daemon, "run-file", was_running=True)
            # El hueco pasa al siguiente por prioridad: run-cli.
            wait_until(lambda: (daemon.temp_root / "videonote_dl_run-cli" / "download.part").exists(), 30,
                       what="run-cli receiving its body")
            cancel_by_cli(daemon, "run-cli")
            assert_cancelled(daemon, "run-cli", was_running=True)

            # El daemon sigue sirviendo, y nada de lo cancelado llegó a la salida.
            daemon.drop_job({"id": "after", "url": test_server.url("/after.bin")})
            folder, record = daemon.wait_record("after")
            assert folder == "done", record
            assert sorted(p.name for p in daemon.output.iterdir()) == ["after.bin"]
            wait_until(lambda: not daemon.temp_dirs(), 10, what="no temp dir left")
            assert not daemon.active_files()
            assert not list((daemon.spool / "cancel").iterdir())
    finally:
        hold.set()
    assert daemon.proc is not None and daemon.proc.returncode == 0


def test_cancel_of_finished_job_is_refused_by_cli(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/quick.bin", Behavior(data=b"q" * 1000))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"id": "quick", "url": url})
        assert daemon.wait_record("quick")[0] == "done"
        done = subprocess.run([sys.executable, "-m", "daemon", "cancel", "quick", "--config",
                               str(daemon.config_path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "already finished" in done.stderr
        assert daemon.record("quick")[0] == "done"  # type: ignore[index]
