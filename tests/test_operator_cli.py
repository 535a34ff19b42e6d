"""Los primeros minutos de un operador: ayuda, códigos de salida, permisos, tuberías, estado fresco y parada."""

from __future__ import annotations

import argparse
import grp
import itertools
import os
import pwd
import re
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from daemon.cli import EXAMPLES, _parser
from daemon.exit_codes import EXIT_CODES, render_exit_codes
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

REPO = Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# --- ayuda y códigos de salida --------------------------------------------------------------
def test_every_argument_has_a_description_and_every_command_an_example() -> None:
    commands = _subparsers()
    assert set(commands) == set(EXAMPLES)
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"`{name}` argument {action.dest} has no help text"
        assert sub.epilog and f"example:\n  videonote-dl {name}" in sub.epilog, name
        help_text = sub.format_help()
        assert EXAMPLES[name] in help_text


def test_exit_codes_are_in_the_main_help_and_in_the_readme() -> None:
    done = subprocess.run([sys.executable, "-m", "daemon", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for code, _meaning in EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+\S", done.stdout, re.MULTILINE), code
    readme = (REPO / "README.md").read_text()
    assert "<!-- exit-codes -->\n" + render_exit_codes() in readme


def _cli(config: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


# --- permisos: un productor real sin privilegios ----------------------------------------------
def _spare_groups() -> tuple[grp.struct_group, grp.struct_group]:
    nobody = pwd.getpwnam("nobody")
    spare = [g for g in grp.getgrall()
             if g.gr_gid not in (0, nobody.pw_gid) and "nobody" not in g.gr_mem and g.gr_gid < 60000]
    if len(spare) < 2:
        pytest.skip("needs two system groups that user nobody is not in")
    return spare[0], spare[1]


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """Una carpeta que ``nobody`` puede atravesar (tmp_path es 0700)."""
    base = Path(tempfile.mkdtemp(prefix="videonote-perm-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _python_for_nobody() -> tuple[str, str]:
    """Un intérprete que ``nobody`` puede ejecutar (el del venv puede vivir bajo /root, 0700) y el
    PYTHONPATH que le da este checkout y las dependencias del venv (misma versión de Python)."""
    site = Path(sysconfig.get_paths()["purelib"])
    for candidate in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        nobody = pwd.getpwnam("nobody")
        try:
            probe = subprocess.run([candidate, "-c", "import orjson, structlog, yaml, aiohttp"], capture_output=True,
                                   env={**os.environ, "PYTHONPATH": f"{REPO}:{site}"}, cwd="/tmp",
                                   user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate, f"{REPO}:{site}"
    pytest.skip("no Python interpreter that user nobody may run with this venv's packages")


def _as_nobody(config: Path, *args: str, groups: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    nobody = pwd.getpwnam("nobody")
    python, path = _python_for_nobody()
    env = {**os.environ, "HOME": "/tmp", "PYTHONPATH": path}
    return subprocess.run([python, "-m", "daemon", *args, "--config", str(config)], capture_output=True, text=True,
                          timeout=60, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=groups or [], env=env,
                          cwd="/tmp")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as another user")
def test_permission_problems_name_the_group_and_the_fix(shared_base: Path, test_server: TestServer) -> None:
    producers, operators = _spare_groups()
    url = test_server.add("/p.bin", Behavior(data=b"p" * 1000))
    with DaemonProcess(shared_base) as daemon:
        daemon.drop_job({"url": url, "id": "p-1"})
        assert daemon.wait_record("p-1")[0] == "done"
        for name in ("tmp", "incoming"):
            os.chown(daemon.spool / name, 0, producers.gr_gid)
            os.chmod(daemon.spool / name, 0o3770)
        os.chown(daemon.event_log, 0, operators.gr_gid)
        os.chmod(daemon.event_log, 0o640)
        cfg = daemon.config_path

        refused = _as_nobody(cfg, "submit", url, "--id", "p-2")
        assert refused.returncode == 4, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, lines  # un mensaje por problema, sin traza
        assert f"group '{producers.gr_name}'" in lines[0]
        assert f"sudo usermod -aG {producers.gr_name} nobody" in lines[0]
        assert f"config {cfg}" in lines[0]

        accepted = _as_nobody(cfg, "submit", url, "--id", "p-2", groups=[producers.gr_gid])
        assert accepted.returncode == 0, accepted.stderr
        assert daemon.wait_record("p-2")[0] == "done"

        events = _as_nobody(cfg, "events", "--job", "p-1")
        assert events.returncode == 4
        assert f"group '{operators.gr_name}'" in events.stderr and "usermod -aG" in events.stderr
        assert str(daemon.event_log) in events.stderr

        # Un productor lee el registro del trabajo aunque no el registro de eventos: show funciona.
        shown = _as_nobody(cfg, "show", "p-1")
        assert shown.returncode == 0, shown.stderr
        assert "job p-1: succeeded" in shown.stdout and "events:   not shown" in shown.stdout
        assert f"group '{operators.gr_name}'" in shown.stderr

        status = _as_nobody(cfg, "status")
        assert status.returncode in (0, 6)  # el estado es 0644 aquí: se lee


def test_retry_of_a_succeeded_job_names_its_done_record(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/r.bin", Behavior(data=b"r" * 1000))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": url, "id": "r-1"})
        daemon.wait_record("r-1")
        done = _cli(daemon.config_path, "retry", "r-1")
        assert done.returncode == 1
        assert str(daemon.spool / "done" / "r-1.json") in done.stderr and "failed/" not in done.stderr
        missing = _cli(daemon.config_path, "retry", "nope")
        assert missing.returncode == 3 and "no failed record" in missing.stderr
        # --- una tubería cerrada: salida 141, sin traza -------------------------------------
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            piped = subprocess.run([sys.executable, "-m", "daemon", "show", "r-1", "--config", str(daemon.config_path)],
                                   stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(write_end)
        assert piped.returncode == 141
        assert piped.stderr == ""
        head = subprocess.run(f"{sys.executable} -m daemon events --config {daemon.config_path} | head -1",
                              shell=True, capture_output=True, text=True, timeout=60)
        assert head.stdout.count("\n") == 1 and "Traceback" not in head.stderr


# --- status --watch: nunca más de ~1 s de retraso --------------------------------------------
def test_status_file_is_refreshed_every_second_while_downloading(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/w.bin", Behavior(data=b"w" * 8_000_000, rate=1_000_000, chunk=50_000))
    with DaemonProcess(tmp_path) as daemon:
        daemon.drop_job({"url": url, "id": "w-1"})

        def running() -> dict | None:
            # Con bytes ya recibidos: el primer trabajo ``auto`` decide su descargador (la tabla de
            # extractores, en un proceso hijo) ya en marcha, y con la máquina cargada eso tarda segundos.
            status = orjson.loads(daemon.status_file.read_bytes())
            return status if status["running"] and status["running"][0]["bytes"] > 0 else None

        wait_until(running, 20, interval=0.05, what="w-1 running")
        writes: list[tuple[float, int]] = []  # (cuándo se vio una foto nueva, bytes de w-1)
        last = None
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            status = orjson.loads(daemon.status_file.read_bytes())
            if status["updated_at"] != last and status["running"]:
                last = status["updated_at"]
                writes.append((time.monotonic(), status["running"][0]["bytes"]))
            time.sleep(0.05)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(writes)]
        assert len(writes) >= 3 and max(gaps) < 1.4, gaps
        assert writes[-1][1] > writes[0][1]  # el progreso avanza en el archivo de estado
        daemon.wait_record("w-1")
        watch = subprocess.run([sys.executable, "-m", "daemon", "status", "--config", str(daemon.config_path)],
                               capture_output=True, text=True, timeout=60)
        assert re.search(r"last update \S+ \((\d+ms|[0-9.]+s) ago\)", watch.stdout), watch.stdout


# --- parada en una terminal: qué espera, cuánto, y que una segunda señal para ya ---------------
def test_first_sigint_says_what_it_waits_for_and_the_second_stops_now(tmp_path: Path,
                                                                      test_server: TestServer) -> None:
    hold = threading.Event()
    url = test_server.add("/h.bin", Behavior(data=b"h" * 3_000_000, hold=hold, hold_after=1_200_000))
    daemon = DaemonProcess(tmp_path, shutdown_grace="1m")
    try:
        with daemon:
            daemon.drop_job({"url": url, "id": "h-1"})
            wait_until(lambda: daemon.events("h-1", "job.started"), 20, what="h-1 started")
            daemon.signal(signal.SIGINT)
            wait_until(lambda: "Press Ctrl-C again" in daemon.stderr_text(), 10, what="first stop message")
            text = daemon.stderr_text()
            assert "SIGINT: stopping; waiting up to 1m (shutdown_grace) for 1 running download(s)" in text
            first = daemon.events(name="daemon.stop_requested")
            assert first and first[0]["immediate"] is False and first[0]["grace_s"] == 60.0
            assert daemon.proc is not None and daemon.proc.poll() is None  # sigue esperando la descarga
            started = time.monotonic()
            daemon.signal(signal.SIGINT)
            assert daemon.proc.wait(15) == 0
            assert time.monotonic() - started < 10  # no esperó el minuto de gracia
            assert "SIGINT again: stopping now; 1 running download(s) are interrupted and requeued" in \
                daemon.stderr_text()
            assert [e["immediate"] for e in daemon.events(name="daemon.stop_requested")] == [False, True]
            assert daemon.events("h-1", "job.requeued")
            assert (daemon.spool / "incoming" / "h-1.yaml").exists()
    finally:
        hold.set()


def test_bash_completion_knows_every_command() -> None:
    text = (REPO / "systemd" / "videonote-dl.bash-completion").read_text()
    listed = set(re.search(r'local commands="([^"]+)"', text).group(1).split())  # type: ignore[union-attr]
    assert listed == set(_subparsers())
