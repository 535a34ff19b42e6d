"""Las piezas del daemon, probadas en el mismo proceso: entrada, desenlaces, recuperación, descargadores.

Cada pieza con sus partes reales (un spool en disco, el gestor de descargas, el servidor HTTP de
las pruebas en 127.0.0.1); sin el proceso del daemon, sin señales ni vigilante.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import orjson
import yaml

from daemon.claimed_job import ClaimedJob, LiveJobs
from daemon.config import Settings, load_settings
from daemon.downloader_registry import DownloaderRegistry
from daemon.downloaders.download_manager import DownloadManager
from daemon.intake import Intake
from daemon.jobs import JobLimits, parse_job
from daemon.outcomes import Outcomes
from daemon.recovery import recover_orphaned_claims
from daemon.spool import Spool
from tests.support.http_server import Behavior, TestServer


def _settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "spool_dir": "spool", "temp_dir": "tmp", "output_dir": "out", "event_log": "events.jsonl",
        "status_file": "status.json", "ytdlp": {"enabled": False},
        "download": {"allow_private_networks": True, "backoff": "10ms", "retries": 1},
        # Sin vigilante inotify: los archivos recién dejados se reclaman sin esperar a producers.settle.
        "producers": {"settle": 0},
    }))
    return load_settings(config)


def _drop(spool: Spool, name: str, job: dict[str, object]) -> None:
    tmp = spool.tmp / f".{name}"
    tmp.write_text(yaml.safe_dump(job))
    os.rename(tmp, spool.incoming / name)


class _Parts:
    """Entrada + desenlaces + gestor, cableados como los cablea el daemon."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.spool.prepare()
        self.live: LiveJobs = {}
        self.changes = 0
        self.outcomes = Outcomes(self.spool, self.live, self._changed)
        self.registry = DownloaderRegistry(settings)
        self.manager = DownloadManager(self.registry.downloaders, settings.output_dir, temp_root=settings.temp_dir,
                                       on_outcome=self.outcomes.conclude,
                                       on_finished=lambda t: self.outcomes.finished(t, stopping=False),
                                       fsync=False)
        self.intake = Intake(lambda: settings, self.manager, self.outcomes, self.registry, self.live)

    def _changed(self) -> None:
        self.changes += 1

    async def close(self) -> None:
        await self.registry.close()
        self.spool.close()


def test_intake_claims_validates_and_runs_each_job_once(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(20_000)
    url = test_server.add("/a.bin", Behavior(data=data))
    settings = _settings(tmp_path)

    async def main() -> _Parts:
        parts = _Parts(settings)
        _drop(parts.spool, "a.yaml", {"url": url, "id": "a1", "sha256": hashlib.sha256(data).hexdigest()})
        _drop(parts.spool, "bad.yaml", {"url": "ftp://example.org/x"})
        _drop(parts.spool, "dup.yaml", {"url": url, "id": "a1"})
        assert await parts.intake.scan_once(lambda: True) == 3
        await parts.manager.wait_idle()
        assert await parts.intake.scan_once(lambda: True) == 0, "nothing left to claim"
        await parts.close()
        return parts

    parts = asyncio.run(main())
    record = orjson.loads((settings.spool_dir / "done" / "a1.json").read_bytes())
    assert record["outcome"] == "succeeded" and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (settings.spool_dir / "rejected").iterdir()) == [
        "bad.yaml", "bad.yaml.reason", "dup.yaml", "dup.yaml.reason"]
    assert parts.outcomes.counts == {"done": 1, "failed": 0, "rejected": 2, "cancelled": 0, "requeued": 0}
    assert len(test_server.requests_for("/a.bin")) == 1
    assert parts.live == {}


def test_intake_cancel_before_start_writes_one_cancelled_record(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/c.bin", Behavior(data=b"x" * 1000))
    settings = _settings(tmp_path)

    async def main() -> None:
        parts = _Parts(settings)
        _drop(parts.spool, "c.yaml", {"url": url, "id": "c1"})
        (parts.spool.cancel / "c1").touch()
        await parts.intake.scan_once(lambda: True)
        await parts.manager.wait_idle()
        await parts.close()

    asyncio.run(main())
    assert sorted(os.listdir(settings.spool_dir / "failed")) == ["c1.json"]
    record = orjson.loads((settings.spool_dir / "failed" / "c1.json").read_bytes())
    assert record["outcome"] == "cancelled" and record["error"]["kind"] == "cancelled"
    assert not (settings.spool_dir / "cancel" / "c1").exists(), "the marker is consumed"
    assert test_server.requests_for("/c.bin") == []


def test_outcomes_requeue_leftover_claims_empties_active(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spool = Spool(settings.spool_dir)
    spool.prepare()
    try:
        _drop(spool, "left.yaml", {"url": "https://example.org/a"})
        assert spool.claim("left.yaml")
        outcomes = Outcomes(spool, {}, lambda: None)
        outcomes.requeue_leftover_claims()
        assert os.listdir(spool.claimed) == []
        assert os.listdir(spool.incoming) == ["left.yaml"]
        assert outcomes.counts["requeued"] == 1
    finally:
        spool.close()


def test_outcomes_write_exactly_the_record_of_the_outcome(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    spool = Spool(settings.spool_dir)
    spool.prepare()
    try:
        job = parse_job(b"url: https://example.org/a.bin\nid: r1\n", "r1.yaml",
                        JobLimits(allowed_schemes=("https",), max_bytes=10**9, ytdlp_enabled=False))
        outcomes = Outcomes(spool, {}, lambda: None)
        path = outcomes.write_terminal(ClaimedJob(job, "r1.yaml", 0.0), "failed", None,
                                       {"kind": "storage", "message": "disk full"})
        assert path == settings.spool_dir / "failed" / "r1.json"
        assert orjson.loads(path.read_bytes())["error"]["kind"] == "storage"
        assert os.listdir(settings.spool_dir / "done") == []
    finally:
        spool.close()


def test_recovery_requeues_a_dead_daemons_claims_and_retires_finished_ones(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    dead = Spool(settings.spool_dir, instance="dead-1")
    dead.prepare()
    _drop(dead, "todo.yaml", {"url": "https://example.org/t.bin", "id": "todo"})
    _drop(dead, "fin.yaml", {"url": "https://example.org/f.bin", "id": "fin"})
    assert dead.claim("todo.yaml") and dead.claim("fin.yaml")
    data, _st = dead.read_claimed("fin.yaml")
    limits = JobLimits(allowed_schemes=("http", "https"), max_bytes=10**9, ytdlp_enabled=False)
    fin = parse_job(data, "fin.yaml", limits)
    dead.write_record("done", "fin", {"id": "fin", "outcome": "succeeded", "job_file_sha256": fin.file_sha256})
    dead.close()  # muere: suelta su cerrojo y deja sus reclamos en active/dead-1/

    live = Spool(settings.spool_dir, instance="live-1")
    live.prepare()
    try:
        outcomes = Outcomes(live, {}, lambda: None)
        recover_orphaned_claims(outcomes, limits, settings.temp_dir)
        assert os.listdir(live.incoming) == ["todo.yaml"]
        assert not (settings.spool_dir / "active" / "dead-1").exists()
        assert outcomes.counts["requeued"] == 1
    finally:
        live.close()


def test_registry_chooses_and_resolves_auto(tmp_path: Path) -> None:
    settings = _settings(tmp_path)

    async def main() -> None:
        registry = DownloaderRegistry(settings)
        assert sorted(registry.downloaders) == ["http"]  # yt-dlp desactivado en esta configuración
        limits = JobLimits(allowed_schemes=("http", "https"), max_bytes=10**9, ytdlp_enabled=True)
        auto = parse_job(b"url: https://example.org/a.bin\n", "a.yaml", limits)
        ytdlp = parse_job(b"url: https://example.org/a\ndownloader: ytdlp\n", "b.yaml", limits)
        assert registry.choose(auto) == "http"
        assert registry.choose(ytdlp) is None, "yt-dlp is not available: the job is rejected"
        await registry.close()

    asyncio.run(main())
