"""La orden ``videonote-dl`` contra un daemon real: submit --wait, status, events, show, retry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pexpect
import pytest

from daemon.cli_inspect import cmd_show
from daemon.config import default_settings
from daemon.config_reference import render_config_reference
from daemon.error_kinds import ERROR_KINDS
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

REPO = Path(__file__).resolve().parents[1]


def cli(daemon: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args, "--config", str(daemon.config_path)],
        capture_output=True, text=True, timeout=timeout,
    )


def test_submit_wait_reports_success_and_failure(tmp_path: Path, test_server: TestServer) -> None:
    data = os.urandom(200_000)
    good = test_server.add("/good.bin", Behavior(data=data))
    bad = test_server.add("/gone.bin", Behavior(status=404))
    with DaemonProcess(tmp_path) as daemon:
        ok = cli(daemon, "submit", good, "--id", "good-1", "--wait")
        assert ok.returncode == 0, ok.stderr
        assert "done:" in ok.stdout and str(daemon.output / "good.bin") in ok.stdout
        failed = cli(daemon, "submit", bad, "--id", "bad-1", "--wait")
        assert failed.returncode == 1
        assert "HTTP 404" in failed.stdout + failed.stderr
        usage = cli(daemon, "submit", "ftp://example.org/x", "--id", "bad-2")
        assert usage.returncode == 2 and "scheme" in usage.stderr


def test_status_shows_running_job_progress(tmp_path: Path, test_server: TestServer) -> None:
    slow = test_server.add("/slow.bin", Behavior(data=b"s" * 2_000_000, rate=200_000, chunk=20_000))
    with DaemonProcess(tmp_path, download={"progress_interval": "200ms"}) as daemon:
        daemon.drop_job({"url": slow, "id": "slow-1"})

        def running_with_bytes() -> str | None:
            out = cli(daemon, "status").stdout
            line = next((ln for ln in out.splitlines() if "slow-1" in ln), "")
            return out if "running" in line and "%" in line and " 0 B " not in line else None

        out = wait_until(running_with_bytes, 30, interval=0.3, what="status showing slow-1 progress")
        assert "daemon: running" in out
        assert "max_concurrent 4" in out
    stopped = cli(daemon, "status")
    assert stopped.returncode == 6 and "NOT running" in stopped.stdout


def test_events_filter_and_follow_across_rotation(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/e.bin", Behavior(data=b"e" * 1000))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": url, "id": "ev-1"})
        daemon.wait_record("ev-1")
        out = cli(daemon, "events", "--job", "ev-1", "--event", "job.s*").stdout.splitlines()
        assert out and all("[ev-1]" in line for line in out)
        assert {line.split()[3] for line in out} == {"job.started", "job.succeeded"}
        as_json = cli(daemon, "events", "--job", "ev-1", "--json").stdout.splitlines()
        assert as_json[0].startswith("{") and '"correlation_id":"ev-1"' in as_json[0]
        # ``daemon.ready`` sigue a READY=1 (tras averiguar ffmpeg, deno y yt-dlp): se espera, no se supone.
        wait_until(lambda: daemon.count_events("daemon.ready"), 60, what="daemon.ready")
        assert cli(daemon, "events", "--since", "1h", "--event", "daemon.ready").stdout.strip()
        assert cli(daemon, "events", "--since", "nonsense").returncode == 2
        follower = subprocess.Popen(
            [sys.executable, "-m", "daemon", "events", "--follow", "--event", "job.succeeded",
             "--config", str(daemon.config_path)], stdout=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(1.0)  # que el seguidor abra el archivo antes de rotarlo
            rotated = daemon.event_log.with_name("events.jsonl.1")
            os.rename(daemon.event_log, rotated)
            daemon.signal(1)  # SIGHUP: el daemon reabre el registro
            wait_until(daemon.event_log.exists, 10, what="event log reopened")
            daemon.drop_job({"url": url, "id": "ev-2", "filename": "e2.bin"})
            daemon.wait_record("ev-2")
            assert follower.stdout is not None
            lines = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = follower.stdout.readline()
                lines.append(line)
                if "[ev-2]" in line:
                    break
            assert any("[ev-2]" in line for line in lines), lines
            assert any("[ev-1]" in line for line in lines)
        finally:
            follower.terminate()
            follower.wait(10)


def test_show_and_retry_a_failed_job(tmp_path: Path, test_server: TestServer) -> None:
    route = Behavior(status=404)
    url = test_server.add("/later.bin", route)
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": url, "id": "late-1"})
        folder, _ = daemon.wait_record("late-1")
        assert folder == "failed"
        shown = cli(daemon, "show", "late-1")
        assert shown.returncode == 0
        assert "job late-1: failed" in shown.stdout and "HTTP 404" in shown.stdout
        assert "to fix:" in shown.stdout and "job.failed" in shown.stdout
        route.status, route.data = 200, b"now it exists"
        retried = cli(daemon, "retry", "late-1")
        assert retried.returncode == 0, retried.stderr
        new_id = retried.stdout.strip()
        assert new_id == "late-1-r1"
        folder, record = daemon.wait_record(new_id)
        assert folder == "done" and Path(record["path"]).read_bytes() == b"now it exists"
        assert (daemon.spool / "failed" / "late-1.json").exists()  # el historial se conserva
        assert cli(daemon, "retry", new_id).returncode == 1
        assert cli(daemon, "show", "no-such-job").returncode == 3


def test_progress_bar_moves_and_finishes_in_a_real_pty(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/pty.bin", Behavior(data=b"p" * 3_000_000, rate=600_000, chunk=30_000))
    with DaemonProcess(tmp_path, download={"progress_interval": "200ms"}) as daemon:
        child = pexpect.spawn(
            sys.executable, ["-m", "daemon", "submit", url, "--id", "pty-1", "--wait",
                             "--config", str(daemon.config_path)],
            encoding="utf-8", timeout=60, dimensions=(24, 120),
        )
        percents = []
        while True:
            index = child.expect([r"\[[#-]{30}\]\s+(\d+\.\d)%", r"done: (\S+)", pexpect.EOF])
            if index == 0:
                percents.append(float(child.match.group(1)))
            else:
                break
        assert index == 1, child.before
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        assert len(set(percents)) >= 2, percents  # la barra se movió
        assert percents == sorted(percents)
        assert percents[-1] == 100.0


def test_config_reference_matches_the_code() -> None:
    documented = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert documented == render_config_reference(), (
        "docs/config.md is out of date: run `videonote-dl check-config --reference > docs/config.md`"
    )


@pytest.mark.parametrize("args", [["--help"], ["submit", "--help"], ["events", "--help"]])
def test_help_exits_zero(args: list[str]) -> None:
    assert subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True).returncode == 0


def test_usage_error_exit_code_is_2() -> None:
    assert subprocess.run([sys.executable, "-m", "daemon", "frobnicate"], capture_output=True).returncode == 2


@pytest.mark.parametrize("kind", [*ERROR_KINDS, "kind_from_the_future"])
def test_show_prints_a_fix_for_every_error_kind(tmp_path: Path, kind: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Un registro fallido de cada tipo de la lista cerrada: ``show`` imprime su pista (y una
    genérica para un tipo que esta versión no conoce, en vez de callarse)."""
    settings = replace(default_settings(tmp_path), spool_dir=tmp_path / "spool", event_log=tmp_path / "events.jsonl")
    (settings.spool_dir / "failed").mkdir(parents=True)
    record = {"outcome": "failed", "job": {"id": "k-1", "url": "https://example.org/x"}, "attempts": 1,
              "error": {"kind": kind, "message": "it broke", "transient": False}}
    (settings.spool_dir / "failed" / "k-1.json").write_bytes(orjson.dumps(record))
    assert cmd_show(settings, "k-1") == 0
    out = capsys.readouterr().out
    assert f"(kind {kind})" in out
    fix = ERROR_KINDS[kind].fix if kind in ERROR_KINDS else "unknown error kind 'kind_from_the_future'"
    assert f"  to fix:   {fix}" in out
