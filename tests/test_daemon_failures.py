"""Cada tipo de fallo termina como está diseñado: el daemon real como subproceso, un servidor HTTP
real en 127.0.0.1 y el registro terminal, los eventos y el directorio temporal de cada trabajo.

Un mismo daemon (y servidor) atiende a casi todas las pruebas del módulo, como en producción: un
fallo de un trabajo no debe afectar a los demás. Las pruebas que necesitan otra configuración
(redes privadas prohibidas, raíz de salida inservible) arrancan el suyo.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    srv = TestServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path_factory.mktemp("failures"), max_concurrent=8)
    with proc:
        yield proc
    assert proc.proc is not None and proc.proc.returncode == 0, proc.stderr_text()


def run_job(daemon: DaemonProcess, job: dict[str, Any], timeout: float = 60.0) -> tuple[str, dict[str, Any]]:
    """Deja el trabajo, espera su registro terminal y que su directorio temporal desaparezca."""
    daemon.drop_job(job)
    folder, record = daemon.wait_record(job["id"], timeout)
    assert_temp_dir_gone(daemon, job["id"])
    return folder, record


def assert_temp_dir_gone(daemon: DaemonProcess, job_id: str) -> None:
    wait_until(lambda: f"videonote_dl_{job_id}" not in daemon.temp_dirs(), 10,
               what=f"removal of the temp dir of {job_id}")
    wait_until(lambda: "tempdir.removed" in list(daemon.iter_event_names(job_id)), 10,
               what=f"tempdir.removed of {job_id}")


def names(daemon: DaemonProcess, job_id: str) -> list[str]:
    return list(daemon.iter_event_names(job_id))


def published(daemon: DaemonProcess) -> list[str]:
    return sorted(str(p.relative_to(daemon.output)) for p in daemon.output.rglob("*")) if daemon.output.exists() \
        else []


# --- reintentos -----------------------------------------------------------------------------------
def test_retry_then_success(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(200_000)
    url = server.add("/flaky.bin", Behavior(data=data, fail_statuses=[503, 503]))
    folder, record = run_job(daemon, {"id": "flaky", "url": url})
    assert folder == "done", record
    assert record["outcome"] == "succeeded" and record["attempts"] == 3
    assert record["sha256"] == sha(data)
    assert (daemon.output / "flaky.bin").read_bytes() == data
    assert len(server.requests_for("/flaky.bin")) == 3
    trail = names(daemon, "flaky")
    assert trail.count("job.retrying") == 2 and trail.count("job.started") == 3
    assert [e["attempt"] for e in daemon.events("flaky", "job.started")] == [1, 2, 3]
    retry_errors = [e["error"] for e in daemon.events("flaky", "job.retrying")]
    assert all(err["kind"] == "http_status" and err["status"] == 503 for err in retry_errors)


def test_retry_then_failure(daemon: DaemonProcess, server: TestServer) -> None:
    url = server.add("/down.bin", Behavior(data=b"x", fail_statuses=[503] * 10))
    folder, record = run_job(daemon, {"id": "down", "url": url, "retries": 2})
    assert folder == "failed", record
    assert record["outcome"] == "failed" and record["attempts"] == 3
    assert record["error"]["kind"] == "http_status" and record["error"]["status"] == 503
    assert record["error"]["transient"] is True
    assert len(server.requests_for("/down.bin")) == 3
    trail = names(daemon, "down")
    assert trail.count("job.retrying") == 2 and "job.failed" in trail and "job.published" not in trail


def test_immediate_failure_on_404(daemon: DaemonProcess, server: TestServer) -> None:
    folder, record = run_job(daemon, {"id": "gone", "url": server.url("/no-such-file.bin"), "retries": 5})
    assert folder == "failed", record
    assert record["attempts"] == 1
    assert record["error"]["kind"] == "http_status" and record["error"]["status"] == 404
    assert record["error"]["transient"] is False
    assert len(server.requests_for("/no-such-file.bin")) == 1
    assert "job.retrying" not in names(daemon, "gone")


def test_429_retry_after_is_honoured(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(10_000)
    url = server.add("/limited.bin", Behavior(data=data, fail_statuses=[429], retry_after="1"))
    folder, record = run_job(daemon, {"id": "limited", "url": url})
    assert folder == "done", record
    assert record["attempts"] == 2
    first, second = server.requests_for("/limited.bin")
    # La espera la marca el servidor (1 s), no el backoff de 50 ms de la configuración.
    assert second.time - first.time >= 0.95
    (retrying,) = daemon.events("limited", "job.retrying")
    assert retrying["delay_s"] >= 1.0 and retrying["error"]["retry_after"] == 1.0


# --- cuerpos cortados, reanudación ----------------------------------------------------------------
def test_reset_mid_body_resumes_with_range(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(4 * MiB)
    url = server.add("/reset.bin", Behavior(data=data, reset_after=2 * MiB, reset_times=1, rate=16 * MiB))
    folder, record = run_job(daemon, {"id": "reset", "url": url})
    assert folder == "done", record
    assert record["attempts"] == 2 and record["sha256"] == sha(data)
    first, second = server.requests_for("/reset.bin")
    assert "Range" not in first.headers
    range_header = second.headers["Range"]
    assert range_header.startswith("bytes=") and range_header.endswith("-")
    assert 0 < int(range_header[6:-1]) <= 2 * MiB
    assert (daemon.output / "reset.bin").read_bytes() == data


def test_server_ignoring_range_starts_over(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(3 * MiB)
    url = server.add("/norange.bin", Behavior(data=data, reset_after=MiB, reset_times=1, rate=16 * MiB,
                                              ignore_range=True))
    folder, record = run_job(daemon, {"id": "norange", "url": url})
    assert folder == "done", record
    assert server.requests_for("/norange.bin")[1].headers.get("Range", "").startswith("bytes=")
    assert record["sha256"] == sha(data) and record["size"] == len(data)
    assert (daemon.output / "norange.bin").read_bytes() == data


def test_body_shorter_than_content_length_is_retried(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(MiB)
    url = server.add("/short.bin", Behavior(data=data, short_by=512, short_times=1))
    folder, record = run_job(daemon, {"id": "short", "url": url})
    assert folder == "done", record
    assert record["attempts"] == 2 and record["sha256"] == sha(data)
    (retrying,) = daemon.events("short", "job.retrying")
    assert retrying["error"]["kind"] == "incomplete_body"


def test_body_longer_than_content_length_keeps_the_declared_length(daemon: DaemonProcess,
                                                                   server: TestServer) -> None:
    data = os.urandom(MiB)
    url = server.add("/long.bin", Behavior(data=data, extra_bytes=4096))
    folder, record = run_job(daemon, {"id": "long", "url": url})
    assert folder == "done", record
    assert record["size"] == len(data) and record["sha256"] == sha(data)
    assert (daemon.output / "long.bin").stat().st_size == len(data)


def test_stalled_server_times_out_each_attempt(daemon: DaemonProcess, server: TestServer) -> None:
    url = server.add("/stall.bin", Behavior(data=b"x" * 1000, stall=5.0))
    folder, record = run_job(daemon, {"id": "stall", "url": url, "timeout": "1s", "retries": 1})
    assert folder == "failed", record
    assert record["attempts"] == 2
    assert record["error"]["kind"] == "timeout" and record["error"]["transient"] is True
    assert [e["error"]["kind"] for e in daemon.events("stall", "job.retrying")] == ["timeout"]


# --- fallos permanentes -----------------------------------------------------------------------------
def test_wrong_sha256_fails_and_publishes_nothing(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(300_000)
    url = server.add("/badsum.bin", Behavior(data=data))
    before = published(daemon)
    folder, record = run_job(daemon, {"id": "badsum", "url": url, "sha256": sha(b"something else")})
    assert folder == "failed", record
    assert record["error"]["kind"] == "checksum_mismatch"
    assert record["error"]["actual"] == sha(data) and record["error"]["expected"] == sha(b"something else")
    assert record["attempts"] == 1
    assert "path" not in record
    assert not any("badsum" in name or ".videonote-dl-" in name for name in published(daemon))
    assert [n for n in published(daemon) if n not in before and "badsum" in n] == []
    assert "job.published" not in names(daemon, "badsum")


def test_redirect_loop_fails(daemon: DaemonProcess, server: TestServer) -> None:
    url = server.add("/loop", Behavior(redirect_to="/loop"))
    folder, record = run_job(daemon, {"id": "loop", "url": url})
    assert folder == "failed", record
    assert record["error"]["kind"] == "too_many_redirects" and record["attempts"] == 1
    assert len(server.requests_for("/loop")) == 11  # la original y 10 saltos (download.max_redirects)


def test_content_length_over_max_bytes_fails_without_reading_the_body(daemon: DaemonProcess,
                                                                      server: TestServer) -> None:
    """El servidor anuncia 5 GB y no envía nada: leer el cuerpo acabaría en timeout, no en too_large."""
    release = threading.Event()

    def headers_only(handler: http.server.BaseHTTPRequestHandler, _hit: int) -> bool:
        handler.send_response(200)
        handler.send_header("Content-Length", str(5 * 10**9))
        handler.end_headers()
        handler.wfile.flush()
        release.wait(60)
        handler.close_connection = True
        return True

    url = server.add("/huge.bin", Behavior(handler=headers_only))
    try:
        folder, record = run_job(daemon, {"id": "huge", "url": url, "max_bytes": "1MiB", "timeout": "30s"})
    finally:
        release.set()
    assert folder == "failed", record
    assert record["error"]["kind"] == "too_large" and record["attempts"] == 1
    assert record["error"]["size"] == 5 * 10**9 and record["error"]["limit"] == MiB
    assert "job.progress" not in names(daemon, "huge")


def test_growing_body_past_max_bytes_fails(daemon: DaemonProcess, server: TestServer) -> None:
    url = server.add("/grow.bin", Behavior(data=os.urandom(4 * MiB), no_content_length=True))
    folder, record = run_job(daemon, {"id": "grow", "url": url, "max_bytes": "1MiB"})
    assert folder == "failed", record
    assert record["error"]["kind"] == "too_large" and record["attempts"] == 1
    assert not (daemon.output / "grow.bin").exists()


# --- publicación ------------------------------------------------------------------------------------
def test_existing_file_is_never_overwritten(daemon: DaemonProcess, server: TestServer) -> None:
    daemon.output.mkdir(parents=True, exist_ok=True)
    (daemon.output / "clip.bin").write_bytes(b"the operator's own file")
    first, second = os.urandom(70_000), os.urandom(80_000)
    url1 = server.add("/a/clip.bin", Behavior(data=first))
    url2 = server.add("/b/clip.bin", Behavior(data=second))
    folder, record = run_job(daemon, {"id": "dup-1", "url": url1})
    assert folder == "done", record
    assert record["renamed"] is True and record["path"] == str(daemon.output / "clip-1.bin")
    folder, record = run_job(daemon, {"id": "dup-2", "url": url2, "filename": "clip.bin"})
    assert folder == "done", record
    assert record["renamed"] is True and record["path"] == str(daemon.output / "clip-2.bin")
    assert (daemon.output / "clip.bin").read_bytes() == b"the operator's own file"
    assert (daemon.output / "clip-1.bin").read_bytes() == first
    assert (daemon.output / "clip-2.bin").read_bytes() == second
    (published_event,) = daemon.events("dup-1", "job.published")
    assert published_event["renamed"] is True


def test_output_dir_under_a_regular_file_fails_as_storage(daemon: DaemonProcess, server: TestServer) -> None:
    """Un archivo donde debería estar la carpeta: falla también para root (los permisos no cuentan)."""
    daemon.output.mkdir(parents=True, exist_ok=True)
    (daemon.output / "blocked").write_bytes(b"not a folder")
    data = os.urandom(50_000)
    url = server.add("/stored.bin", Behavior(data=data))
    folder, record = run_job(daemon, {"id": "nostore", "url": url, "output_dir": "blocked/sub"})
    assert folder == "failed", record
    assert record["error"]["kind"] == "storage" and record["attempts"] == 1
    assert (daemon.output / "blocked").read_bytes() == b"not a folder"
    # El daemon sigue sirviendo.
    folder, record = run_job(daemon, {"id": "afterstore", "url": url, "output_dir": "fine"})
    assert folder == "done", record
    assert (daemon.output / "fine" / "stored.bin").read_bytes() == data


def test_credentials_in_url_never_written(daemon: DaemonProcess, server: TestServer) -> None:
    data = os.urandom(40_000)
    server.add("/members/clip.bin", Behavior(data=data))
    url = f"http://alice:hunter2-pw@127.0.0.1:{server.port}/members/clip.bin"
    folder, record = run_job(daemon, {"id": "creds", "url": url, "filename": "members.bin"})
    assert folder == "done", record
    assert server.requests_for("/members/clip.bin")[0].headers["Authorization"].startswith("Basic ")
    assert b"hunter2" not in daemon.event_log.read_bytes()
    assert b"hunter2" not in (daemon.spool / "done" / "creds.json").read_bytes()
    assert "hunter2" not in daemon.stderr_text()
    assert record["job"]["url"].startswith("http://***@127.0.0.1:")
    # También cuando falla: el mensaje de error y el registro de fallo no llevan la contraseña.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nadie escucha: conexión rechazada
    bad_url = f"http://alice:hunter2-pw@127.0.0.1:{dead_port}/x.bin"
    folder, record = run_job(daemon, {"id": "creds-fail", "url": bad_url, "retries": 1})
    assert folder == "failed", record
    assert record["error"]["kind"] == "connection"
    assert b"hunter2" not in (daemon.spool / "failed" / "creds-fail.json").read_bytes()
    assert b"hunter2" not in daemon.event_log.read_bytes()
    assert "hunter2" not in daemon.stderr_path.read_text(errors="replace")


def test_retry_policy_backoff_is_exponential_with_jitter_and_honours_retry_after() -> None:
    from daemon.downloaders.download_manager import RetryPolicy

    policy = RetryPolicy(retries=5, backoff=1.0, max_backoff=10.0)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)):
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert len(delays) > 1, "no jitter"
    assert policy.delay(1, retry_after=30.0) == 30.0  # el servidor manda si pide más
    assert policy.delay(3, retry_after=0.1) >= 2.0


# --- configuraciones propias ------------------------------------------------------------------------
def test_private_networks_refused_by_default_at_connect_time(tmp_path: Path, server: TestServer) -> None:
    server.add("/internal.bin", Behavior(data=b"internal data"))
    before = len(server.requests)
    proc = DaemonProcess(tmp_path)
    # Sin la clave: vale el valor por defecto embebido (DaemonProcess la pone a true).
    del proc.config["download"]["allow_private_networks"]
    proc.config_path.write_text(yaml.safe_dump(proc.config))
    assert "allow_private_networks" not in proc.config_path.read_text()
    with proc:
        for job_id, host in (("ssrf-ip", "127.0.0.1"), ("ssrf-name", "localhost")):
            proc.drop_job({"id": job_id, "url": f"http://{host}:{server.port}/internal.bin", "retries": 3})
        for job_id in ("ssrf-ip", "ssrf-name"):
            folder, record = proc.wait_record(job_id)
            assert folder == "failed", record
            assert record["error"]["kind"] == "private_address" and record["attempts"] == 1
            assert_temp_dir_gone(proc, job_id)
    assert len(server.requests) == before  # el servidor no recibió ni una petición
    assert proc.proc is not None and proc.proc.returncode == 0


def test_private_networks_default_is_false(tmp_path: Path) -> None:
    """La configuración embebida (sin la clave) prohíbe las redes privadas."""
    from daemon.config import load_settings

    config = tmp_path / "config.yaml"
    config.write_text("spool_dir: spool\n")
    assert load_settings(config).download.allow_private_networks is False


def test_output_root_replaced_by_a_file_fails_as_storage(tmp_path: Path, server: TestServer) -> None:
    data = os.urandom(30_000)
    url = server.add("/root-storage.bin", Behavior(data=data))
    with DaemonProcess(tmp_path) as proc:
        shutil.rmtree(proc.output)
        proc.output.write_bytes(b"a file where the output root should be")
        proc.drop_job({"id": "rootfile", "url": url})
        folder, record = proc.wait_record("rootfile")
        assert folder == "failed", record
        assert record["error"]["kind"] == "storage"
        assert_temp_dir_gone(proc, "rootfile")
        proc.output.unlink()
        proc.drop_job({"id": "rootback", "url": url})
        folder, record = proc.wait_record("rootback")
        assert folder == "done", record
        assert (proc.output / "root-storage.bin").read_bytes() == data
    assert proc.proc is not None and proc.proc.returncode == 0

# Los discos llenos (temporales, registro de eventos) y los fallos de E/S inyectados están en
# tests/reliability/test_io_faults.py.
