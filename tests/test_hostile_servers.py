"""Corpus de servidores hostiles o rotos: la contrapartida de tests/data/bad_jobs del lado servidor.

Cada fila de ``CASES`` toma un servidor del catálogo (tests/support/misbehaviours.py), lo corre
con el HttpDownloader real dentro del DownloadManager real (reintentos, sha256, publicación) y
comprueba que termina como está diseñado: o se publican exactamente los bytes esperados (nunca
un empalme de dos versiones, nunca un nombre crudo del servidor), o falla con un solo ``kind``
de la lista cerrada, el mismo en el evento ``job.failed`` y en el resultado, sin dejar nada en
la salida ni en el directorio temporal.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.downloaders.base import DownloadOptions
from daemon.downloaders.download_manager import DownloadManager, DownloadTask, RetryPolicy
from daemon.downloaders.http_downloader import HttpDownloader
from daemon.error_kinds import ERROR_KINDS
from daemon.names import bare_name_problem
from tests.conftest import EventLog
from tests.support import misbehaviours as mb
from tests.support.daemon_proc import DaemonProcess
from tests.support.http_server import TestServer

OK = "ok"
JOB_HEADERS = {"Authorization": "Bearer tok-1", "Cookie": "s=1", "Proxy-Authorization": "Basic eA==",
               "X-Api-Key": "S", "X-Trace": "t-1"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Run:
    """Lo que dejó un caso: la tarea terminada, lo publicado y los servidores."""

    task: DownloadTask
    scene: mb.Scene
    output: Path
    temp_root: Path
    duration: float

    def requests(self, path: str, server: str = "server") -> list[Any]:
        return getattr(self.scene, server).requests_for(path)


Check = Callable[[Run], None]


@dataclass(frozen=True)
class Case:
    """Una fila: servidor del catálogo, opciones del trabajo y el desenlace esperado."""

    name: str
    expect: str  # OK o un kind de ERROR_KINDS
    data: bytes | None = None  # bytes publicados si OK
    filename: str | None = None  # nombre publicado esperado si OK
    serve: str | None = None  # entrada del catálogo (por defecto, ``name``)
    attempts: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    check: Check | None = None
    ca: bool = False  # confiar en la CA de pruebas (download.ca_bundle)


# --- comprobaciones extra de algunos casos ---------------------------------------------------
def _restarted(text: str) -> Check:
    def check(run: Run) -> None:
        assert run.task.result is not None and text in run.task.result.extra.get("restarted", ""), run.task.result
        assert run.task.result.resumed is False
    return check


def _resumed(run: Run) -> None:
    assert run.task.result is not None and run.task.result.resumed is True
    assert run.task.result.extra.get("restarted") is None


def _resumed_at_cdn(run: Run) -> None:
    _resumed(run)
    first, second = run.requests("/cdn/file.bin", "other")
    assert "Range" not in first.headers and second.headers.get("Range", "").startswith("bytes=")
    assert not {k for k in JOB_HEADERS if k in second.headers} - {"X-Trace"}


def _ranges(path: str, expected: list[bool]) -> Check:
    def check(run: Run) -> None:
        assert [("Range" in r.headers) for r in run.requests(path)] == expected
    return check


def _headers_only_at_origin(first: str, other: str, forwarded: tuple[str, ...] = ("X-Trace",)) -> Check:
    def check(run: Run) -> None:
        (at_origin, *_) = run.requests(first)
        assert {k: at_origin.headers.get(k) for k in JOB_HEADERS} == JOB_HEADERS
        (at_other,) = run.requests(other, "other")
        leaked = {k for k in JOB_HEADERS if k in at_other.headers} - set(forwarded)
        assert not leaked, f"job headers reached another origin: {leaked}"
        for name in forwarded:
            assert at_other.headers.get(name) == JOB_HEADERS[name]
    return check


def _same_origin_keeps_headers(run: Run) -> None:
    (target,) = run.requests("/d/same-target.bin")
    assert {k: target.headers.get(k) for k in JOB_HEADERS} == JOB_HEADERS


def _back_home(run: Run) -> None:
    assert run.requests("/d/back-home.bin")[0].headers.get("X-Api-Key") == "S"
    (bounce,) = run.requests("/x/bounce", "other")
    assert "X-Api-Key" not in bounce.headers and "Authorization" not in bounce.headers


def _no_authorization_at_other(path: str) -> Check:
    def check(run: Run) -> None:
        (request,) = run.requests(path, "other")
        assert "Authorization" not in request.headers
        assert run.task.result is not None and "stolen-pw" not in (run.task.result.final_url or "")
    return check


def _nothing_reached_other(run: Run) -> None:
    assert run.scene.other.requests == []


def _identity_requested(run: Run) -> None:
    assert run.requests("/b/data.gz.bin")[0].headers.get("Accept-Encoding") == "identity"


def _fast(seconds: float) -> Check:
    def check(run: Run) -> None:
        assert run.duration < seconds, f"took {run.duration:.1f}s"
    return check


def _message(text: str) -> Check:
    def check(run: Run) -> None:
        assert run.task.error is not None and text in run.task.error["message"], run.task.error
    return check


def _valid_name(suffix: str) -> Check:
    def check(run: Run) -> None:
        assert run.task.published_path is not None and run.task.published_path.name.endswith(suffix)
    return check


R2 = {"attempts": 2}
STALL = {"timeout": 0.6}
HEADERS = {"headers": JOB_HEADERS, "forward_headers": ("X-Trace", "Authorization")}

CASES: list[Case] = [
    # --- rangos: nunca un empalme ---
    Case("resume_control", OK, mb.V1, attempts=2, check=_resumed),
    Case("resume_behind_cross_origin_redirect", OK, mb.V1, attempts=2, options=HEADERS, check=_resumed_at_cdn),
    Case("if_range_ignored_new_etag", OK, mb.V2, attempts=2, check=_restarted("ETag changed")),
    Case("if_range_ignored_new_last_modified", OK, mb.V2, attempts=2, check=_restarted("Last-Modified")),
    Case("range_206_wrong_start", OK, mb.V1, attempts=2, check=_restarted("starts at byte 1000")),
    Case("range_206_wrong_total", OK, mb.V1, attempts=2, check=_restarted("for a file of 200000 bytes")),
    Case("range_206_unknown_total", OK, mb.V1, attempts=2, check=_restarted("/*")),
    Case("range_206_length_disagrees", OK, mb.V1, attempts=2, check=_restarted("Content-Length disagrees")),
    Case("range_answered_200", OK, mb.V1, attempts=2, check=_ranges("/r/answered-200.bin", [False, True])),
    Case("range_answered_416", OK, mb.V1, attempts=2, check=_restarted("416")),
    Case("weak_etag_only", OK, mb.V1, attempts=2, check=_ranges("/r/weak.bin", [False, False])),
    Case("partial_206_to_plain_get", "incomplete_body", attempts=2),
    # --- cuerpos ---
    Case("body_shorter_than_length", "incomplete_body", attempts=2),
    Case("body_longer_than_length", OK, mb.V1),
    Case("chunked_bad_size_line", "bad_response"),
    Case("chunked_bad_size_line_later", "bad_response"),
    Case("chunked_truncated", "incomplete_body"),
    Case("chunked_valid", OK, mb.V1),
    Case("chunked_and_content_length", "bad_response"),
    Case("two_content_lengths", "bad_response"),
    Case("negative_content_length", "bad_response"),
    Case("gzip_encoded", OK, mb.GZIPPED, "data.gz.bin", options={"sha256": sha(mb.GZIPPED)},
         check=_identity_requested),
    Case("gzip_sha256_of_decoded_bytes", "checksum_mismatch", serve="gzip_encoded",
         options={"sha256": sha(mb.V1[:50_000])}),
    Case("br_encoded", OK, mb.V2[:30_000], options={"sha256": sha(mb.V2[:30_000])}),
    Case("content_type_lies", OK, mb.V1, "really-binary.bin"),
    Case("closed_after_headers", "incomplete_body"),
    Case("reset_before_headers", "connection", attempts=2),
    # --- protocolo ---
    Case("huge_header", "bad_response"),
    Case("endless_headers", "bad_response"),
    Case("interim_100_then_200", OK, mb.V1[:5000]),
    Case("interim_103_then_200", OK, mb.V1[:5000]),
    Case("only_1xx_then_close", "connection"),
    Case("status_204", "http_status", check=_message("no file")),
    Case("status_304", "http_status"),
    Case("not_http", "bad_response"),
    Case("garbage_status_line", "bad_response"),
    # --- redirecciones ---
    Case("redirect_loop", "too_many_redirects", options={"max_redirects": 5}),
    Case("redirect_chain_over_max", "too_many_redirects", options={"max_redirects": 3}),
    Case("redirect_chain_at_max", OK, mb.V1, "at3", options={"max_redirects": 3}),
    Case("redirect_file", "scheme_not_allowed", check=_message("file:")),
    Case("redirect_data", "scheme_not_allowed"),
    Case("redirect_javascript", "scheme_not_allowed"),
    Case("redirect_ftp", "scheme_not_allowed"),
    Case("redirect_private", "private_address",
         options={"allow_private_networks": False, "allowed_networks": ("127.0.0.1/32",)},
         check=_nothing_reached_other),
    Case("redirect_cross_origin", OK, mb.V1, options=HEADERS,
         check=_headers_only_at_origin("/d/cross", "/x/elsewhere.bin")),
    Case("redirect_same_origin", OK, mb.V1, options=HEADERS, check=_same_origin_keeps_headers),
    Case("redirect_back_to_origin", OK, mb.V1, options=HEADERS, check=_back_home),
    Case("redirect_relative", OK, mb.V1, "target.bin"),
    Case("redirect_protocol_relative", OK, mb.V1, options=HEADERS,
         check=_headers_only_at_origin("/d/protocol-relative", "/x/pr.bin")),
    Case("redirect_credentials_in_location", OK, mb.V1, check=_no_authorization_at_other("/x/creds.bin")),
    Case("redirect_malformed_location", "bad_response"),
    Case("redirect_without_location", "http_status"),
    # --- nombres del servidor ---
    Case("name_traversal", OK, mb.V1[:1000], "passwd"),
    Case("name_absolute", OK, mb.V1[:1000], "evil"),
    Case("name_backslashes", OK, mb.V1[:1000], "x.exe"),
    Case("name_nul", OK, mb.V1[:1000], "a_b.bin"),
    Case("name_bidi", OK, mb.V1[:1000], "evil_gpj.exe"),
    Case("name_invisible", OK, mb.V1[:1000], "clip__.mp4"),
    Case("name_newline_escape", OK, mb.V1[:1000], "a___[31mred.txt"),
    Case("name_overlong", OK, mb.V1[:1000], "é" * 98 + ".mp4"),
    Case("name_empty", OK, mb.V1[:1000], "from-url-when-empty.bin"),
    Case("name_only_dots", OK, mb.V1[:1000], "from-url-when-dots.bin"),
    Case("name_internal_collision", OK, mb.V1[:1000], "download.meta.json"),
    Case("name_not_utf8", OK, mb.V1[:1000], check=_valid_name(".txt")),
    Case("name_unknown_charset", OK, mb.V1[:1000], "plain.bin"),
    # --- servidores callados ---
    Case("stall_before_headers", "timeout", options=STALL, check=_fast(10)),
    Case("stall_between_chunks", "timeout", options=STALL, check=_fast(10)),
    Case("stall_after_body_with_length", OK, mb.V1, options=STALL, check=_fast(3)),
    Case("stall_after_body_without_length", "timeout", options=STALL, check=_fast(10)),
    Case("stall_mid_body_then_resume", OK, mb.V1, attempts=2, options=STALL, check=_resumed),
    # --- TLS ---
    Case("tls_self_signed", "tls", serve="tls_server", check=_message("certificate")),
    Case("tls_with_ca_bundle", OK, mb.V1, "secure.bin", serve="tls_server", ca=True),
    Case("tls_wrong_host_name", "tls", ca=True, check=_message("certificate")),
    Case("plain_http_to_tls_port", "connection"),
]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Certificado autofirmado para 127.0.0.1 (hecho con el openssl del sistema)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
        check=True, capture_output=True, timeout=60,
    )
    return str(cert), str(key)


@pytest.fixture
def scene(tls_files: tuple[str, str]) -> Iterator[mb.Scene]:
    servers = [TestServer().start(), TestServer(host="127.0.0.2").start(), TestServer(tls=tls_files).start()]
    scene = mb.Scene(*servers)
    try:
        yield scene
    finally:
        scene.release.set()
        for server in servers:
            server.stop()


def run_case(case: Case, scene: mb.Scene, tmp_path: Path, ca_bundle: Path | None) -> Run:
    url = mb.CATALOGUE[case.serve or case.name](scene)
    options = {"allow_private_networks": True, "timeout": 10.0, **case.options}
    temp_root, output = tmp_path / "tmp", tmp_path / "out"
    output.mkdir()

    async def main() -> DownloadTask:
        downloader = HttpDownloader(fsync=False, ca_bundle=ca_bundle)
        manager = DownloadManager({"http": downloader}, output, max_concurrent=1, temp_root=temp_root, fsync=False)
        try:
            task = manager.submit(case.name, DownloadOptions(url=url, **options),
                                  retry=RetryPolicy(retries=case.attempts - 1, backoff=0.0, max_backoff=0.0))
            await manager.wait_idle()
        finally:
            await downloader.close()
        return task

    started = time.monotonic()
    task = asyncio.run(main())
    return Run(task, scene, output, temp_root, time.monotonic() - started)


def test_the_corpus_is_big_and_every_entry_is_used() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES), "duplicate case names"
    used = {case.serve or case.name for case in CASES}
    assert used == set(mb.CATALOGUE), f"unused: {set(mb.CATALOGUE) - used}, unknown: {used - set(mb.CATALOGUE)}"
    assert {case.expect for case in CASES} - {OK} <= set(ERROR_KINDS)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_server(case: Case, scene: mb.Scene, tmp_path: Path, event_log: EventLog,
                        tls_files: tuple[str, str]) -> None:
    run = run_case(case, scene, tmp_path, Path(tls_files[0]) if case.ca else None)
    task = run.task
    published = sorted(p.name for p in run.output.iterdir())
    failed_events = event_log.named("job.failed")
    if case.expect == OK:
        assert task.state == "succeeded", task.error
        assert task.published_path is not None and published == [task.published_path.name]
        assert task.published_path.read_bytes() == case.data, "published bytes differ (a splice?)"
        assert task.result is not None and task.result.sha256 == sha(case.data or b"")
        assert bare_name_problem(task.published_path.name) is None, task.published_path.name
        if case.filename is not None:
            assert task.published_path.name == case.filename
        assert failed_events == []
    else:
        assert task.state == "failed" and task.error is not None, (task.state, task.result)
        assert task.error["kind"] == case.expect, task.error
        assert task.error["kind"] in ERROR_KINDS
        assert task.error["transient"] is (ERROR_KINDS[case.expect].transient is True) or \
            ERROR_KINDS[case.expect].transient is None
        assert "Traceback" not in task.error["message"] and task.error["message"]
        # Un solo kind: el mismo en el evento que en lo que se registra.
        assert [e["error"]["kind"] for e in failed_events] == [case.expect]
        assert published == [], f"a failed job published {published}"
        assert len([e for e in event_log.named("job.started")]) <= case.attempts
    assert not list(run.temp_root.glob("videonote_dl_*")), "temp dir left behind"
    if case.check is not None:
        case.check(run)


def test_the_issue_reproductions_through_the_real_daemon(tmp_path: Path, scene: mb.Scene,
                                                         tls_files: tuple[str, str]) -> None:
    """Los cuatro hallazgos del issue, con el daemon real (subproceso, spool, registros, eventos),
    más download.ca_bundle: lo publicado, el kind del registro y el del evento ``job.failed``."""
    jobs = {
        "splice": {"url": mb.if_range_ignored_new_etag(scene)},
        "leak": {"url": mb.redirect_cross_origin(scene), "headers": {"X-Api-Key": "S", "X-Trace": "t-1"},
                 "forward_headers": ["X-Trace"]},
        "to-file": {"url": mb.redirect_file(scene)},
        "bidi": {"url": mb.name_bidi(scene)},
        "own-ca": {"url": mb.tls_server(scene)},
        "wrong-host": {"url": mb.tls_wrong_host_name(scene)},
    }
    expected_ok = {"splice": ("new-etag.bin", mb.V2), "leak": ("elsewhere.bin", mb.V1),
                   "bidi": ("evil_gpj.exe", mb.V1[:1000]), "own-ca": ("secure.bin", mb.V1)}
    expected_failed = {"to-file": "scheme_not_allowed", "wrong-host": "tls"}
    with DaemonProcess(tmp_path / "d", download={"ca_bundle": tls_files[0], "retries": 2}) as daemon:
        for job_id, job in jobs.items():
            daemon.drop_job({"id": job_id, **job})
        records = {job_id: daemon.wait_record(job_id) for job_id in jobs}
        for job_id, (name, data) in expected_ok.items():
            folder, record = records[job_id]
            assert folder == "done", record
            assert Path(record["path"]).name == name and Path(record["path"]).read_bytes() == data
        for job_id, kind in expected_failed.items():
            folder, record = records[job_id]
            assert folder == "failed" and record["error"]["kind"] == kind, record
            (event,) = daemon.events(job_id, "job.failed")
            assert event["error"]["kind"] == kind
        assert "file:" in records["to-file"][1]["error"]["message"]
        assert sorted(p.name for p in daemon.output.iterdir()) == sorted(name for name, _ in expected_ok.values())
    (leaked,) = scene.other.requests_for("/x/elsewhere.bin")
    assert "X-Api-Key" not in leaked.headers and leaked.headers.get("X-Trace") == "t-1"
