"""De extremo a extremo: el daemon real como subproceso y un servidor HTTP real en 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def test_dropped_job_is_published_with_full_event_trail(tmp_path, test_server: TestServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    url = test_server.add("/clip.bin", Behavior(data=data, rate=2 * 1024 * 1024, chunk=256 * 1024))
    with DaemonProcess(tmp_path, download={"progress_interval": "200ms"}) as daemon:
        daemon.drop_job({"url": url, "id": "clip-42"})
        folder, record = daemon.wait_record("clip-42")
        assert folder == "done", record
        published = daemon.output / "clip.bin"
        assert published.read_bytes() == data
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["path"] == str(published) and record["size"] == len(data)
        wait_until(lambda: not daemon.temp_dirs(), 5, what="temp dir removal")
        wait_until(lambda: "job.succeeded" in list(daemon.iter_event_names("clip-42")), 5)
        names = list(daemon.iter_event_names("clip-42"))
        core = [n for n in names if n in ("job.received", "job.queued", "job.started", "job.succeeded")]
        assert core == ["job.received", "job.queued", "job.started", "job.succeeded"]
        assert names.index("job.started") < names.index("job.progress") < names.index("job.succeeded")
        assert "tempdir.created" in names and "tempdir.removed" in names
        assert not daemon.active_files()
    assert daemon.proc is not None and daemon.proc.returncode == 0
