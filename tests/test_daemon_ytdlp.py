"""yt-dlp a través del daemon real: el trabajo llega a done/ con los bytes correctos y sin temporales."""

from __future__ import annotations

import hashlib
import subprocess

from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer
from tests.test_ytdlp import tiny_mp4


def test_ytdlp_job_through_the_daemon(tmp_path, test_server: TestServer) -> None:
    media = tiny_mp4(200_000)
    media_url = test_server.add("/v/clip.mp4", Behavior(data=media, content_type="video/mp4"))
    page = f'<html><body><video controls><source src="{media_url}" type="video/mp4"></video></body></html>'
    page_url = test_server.add("/page.html", Behavior(data=page.encode(), content_type="text/html"))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": media_url, "id": "yt-direct", "downloader": "ytdlp"})
        daemon.drop_job({"url": page_url, "id": "yt-page", "downloader": "ytdlp"})
        for job_id in ("yt-direct", "yt-page"):
            folder, record = daemon.wait_record(job_id, timeout=120)
            assert folder == "done", record
            assert record["downloader"] == "ytdlp"
            assert record["sha256"] == hashlib.sha256(media).hexdigest()
            assert record["extra"]["ytdlp_version"]
        wait_until(lambda: not daemon.temp_dirs(), 10, what="temp dirs removed")
        started = daemon.events(name="ytdlp.started")
        assert {e["correlation_id"] for e in started} == {"yt-direct", "yt-page"}
    # Ningún proceso yt-dlp sobrevive al daemon.
    leftover = subprocess.run(["pgrep", "-f", "videonote_dl_yt-"], capture_output=True, text=True).stdout
    assert not leftover.strip(), leftover
