"""Métricas Prometheus de un daemon real: /metrics por TCP y por socket unix, tablero y alertas de docs/."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.metrics import METRIC_NAMES
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "docs" / "metrics" / "grafana-dashboard.json"
RULES = REPO / "docs" / "metrics" / "videonote-dl.rules.yml"
_METRIC = re.compile(r"\bvideonote_dl_[a-z0-9_]+")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Un daemon con métricas por TCP: un trabajo rápido, uno con progreso, uno que falla y uno rechazado."""
    base = tmp_path_factory.mktemp("metrics")
    port = _free_port()
    with TestServer() as server:
        quick = server.add("/quick.bin", Behavior(data=b"q" * 200_000))
        slow = server.add("/slow.bin", Behavior(data=b"s" * 3_000_000, rate=1_000_000, chunk=50_000))
        gone = server.add("/gone.bin", Behavior(status=404))
        daemon = DaemonProcess(base, metrics={"listen": f"127.0.0.1:{port}"},
                               download={"progress_interval": "200ms"})
        with daemon:
            url = f"http://127.0.0.1:{port}/metrics"
            before = urllib.request.urlopen(url, timeout=10).read().decode()
            daemon.drop_job({"url": quick, "id": "m-quick"})
            daemon.drop_job({"url": slow, "id": "m-slow"})
            daemon.drop_job({"url": gone, "id": "m-gone"})
            daemon.drop_job("not: [valid", name="m-bad.yaml")
            for job_id in ("m-quick", "m-slow", "m-gone"):
                daemon.wait_record(job_id)
            wait_until(daemon.rejected, 20, what="m-bad rejected")
            response = urllib.request.urlopen(url, timeout=10)
            text = response.read().decode()
            yield {"before": before, "text": text, "samples": _samples(text),
                   "content_type": response.headers["Content-Type"], "daemon": daemon,
                   "progress_events": len(daemon.events("m-slow", "job.progress")),
                   "listening": daemon.events(name="metrics.listening")}


def test_metrics_count_jobs_bytes_and_durations(scrape: dict[str, Any]) -> None:
    s = scrape["samples"]
    assert scrape["content_type"].startswith("text/plain; version=0.0.4")
    assert scrape["listening"] and scrape["listening"][0]["path"] == "/metrics"
    assert _value(s, "videonote_dl_jobs_total", outcome="succeeded") == 2
    assert _value(s, "videonote_dl_jobs_total", outcome="failed") == 1
    assert _value(s, "videonote_dl_jobs_total", outcome="rejected") == 1
    assert _value(s, "videonote_dl_jobs_total", outcome="cancelled") == 0
    # Exacto: el trabajo lento llega por job.progress, el rápido (sin progreso) por job.published,
    # y ninguno se cuenta dos veces.
    assert scrape["progress_events"] >= 2
    assert _value(s, "videonote_dl_bytes_total", downloader="http") == 3_200_000
    assert _value(s, "videonote_dl_job_duration_seconds_count", outcome="succeeded") == 2
    assert _value(s, "videonote_dl_job_duration_seconds_count", outcome="failed") == 1
    assert _value(s, "videonote_dl_job_duration_seconds_sum", outcome="succeeded") >= 2.0  # el lento: ~3 s
    assert _value(s, "videonote_dl_running_jobs") == 0
    assert _value(s, "videonote_dl_queue_depth") == 0
    assert _value(s, "videonote_dl_max_concurrent") == 4
    assert _value(s, "videonote_dl_event_log_write_errors_total") == 0
    assert _value(s, "videonote_dl_build_info", version="0.1.0", python=_python()) == 1


def _python() -> str:
    import platform

    return platform.python_version()


def test_every_declared_metric_is_served_from_the_start(scrape: dict[str, Any]) -> None:
    names = {family.name for family in text_string_to_metric_families(scrape["before"])}
    samples = {sample.name for family in text_string_to_metric_families(scrape["before"]) for sample in family.samples}
    for name in METRIC_NAMES:
        assert name in samples or name in names or f"{name}_count" in samples, name
    # sin ningún trabajo aún, los contadores por resultado ya existen a cero (rate() funciona desde el inicio)
    assert _value(_samples(scrape["before"]), "videonote_dl_jobs_total", outcome="failed") == 0
    assert "_created" not in scrape["text"]


def _used_metrics(text: str) -> set[str]:
    return set(_METRIC.findall(text))


def _exposed(scrape: dict[str, Any]) -> set[str]:
    return {name for name, _labels in scrape["samples"]}


def test_grafana_dashboard_parses_and_queries_only_existing_metrics(scrape: dict[str, Any]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10 and all(exprs)
    used = set().union(*(_used_metrics(e) for e in exprs))
    missing = used - _exposed(scrape)
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {sorted(missing)}"
    # lo que el issue pide en un tablero
    for needed in ("videonote_dl_jobs_total", "videonote_dl_bytes_total", "videonote_dl_job_duration_seconds_bucket",
                   "videonote_dl_queue_depth", "videonote_dl_running_jobs", "videonote_dl_retries_total",
                   "videonote_dl_reaper_removals_total", "videonote_dl_ytdlp_helper_restarts_total",
                   "videonote_dl_event_log_write_errors_total", "videonote_dl_build_info"):
        assert needed in used, needed
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_query_only_existing_metrics(scrape: dict[str, Any]) -> None:
    import yaml

    rules = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = set().union(*(_used_metrics(e) for e in exprs))
    assert used and not used - _exposed(scrape), sorted(used - _exposed(scrape))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool absent (Debian package: prometheus)")
def test_alert_rules_pass_promtool() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _get_over_unix(path: Path, target: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_metrics_over_a_unix_socket_and_off_by_default(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/u.bin", Behavior(data=b"u" * 1000))
    with DaemonProcess(tmp_path, metrics={"listen": "run/metrics.sock"}) as daemon:
        sock = tmp_path / "run" / "metrics.sock"
        wait_until(sock.exists, 10, what="metrics socket")
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        daemon.drop_job({"url": url, "id": "u-1"})
        daemon.wait_record("u-1")
        reply = _get_over_unix(sock, "/metrics")
        assert reply.startswith("HTTP/1.1 200") or reply.startswith("HTTP/1.0 200"), reply[:200]
        assert 'videonote_dl_jobs_total{outcome="succeeded"} 1.0' in reply
        assert 'videonote_dl_bytes_total{downloader="http"} 1000.0' in reply
    assert not sock.exists()  # se retira al parar
    with DaemonProcess(tmp_path / "off") as daemon:
        assert daemon.events(name="metrics.listening") == []


def test_a_taken_port_is_reported_and_downloads_go_on(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/t.bin", Behavior(data=b"t" * 1000))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with DaemonProcess(tmp_path, metrics={"listen": f"127.0.0.1:{port}"}) as daemon:
            errors = [e for e in daemon.events(name="daemon.error") if e.get("where") == "metrics"]
            assert errors and f"127.0.0.1:{port}" in errors[0]["error"] and "metrics.listen" in errors[0]["error"]
            daemon.drop_job({"url": url, "id": "t-1"})
            assert daemon.wait_record("t-1")[0] == "done"
