"""Registro de eventos: una línea JSON por evento, escrituras concurrentes, reapertura, secretos, nivel."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from daemon.downloaders import DownloadLifecycle, DownloadOptions, PermanentDownloadError
from daemon.events import (
    EventLogFile,
    bind_correlation_id,
    configure_events,
    get_logger,
    redact,
    reopen_event_log,
    set_log_level,
)
from tests.conftest import REPO_ROOT, TS_PATTERN, EventLog, check_event_line

_log = get_logger()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- formato -------------------------------------------------------------------------------
def test_one_json_object_per_line_with_the_documented_keys(event_log: EventLog) -> None:
    _log.info("job.started", correlation_id="clip-42", attempt=1, temp_dir="/x/videonote_dl_clip-42")
    _log.warning("reaper.error", path="/x", error="Permission denied")
    raw = event_log.path.read_text(encoding="utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first) == ["ts", "level", "event", "correlation_id", "attempt", "temp_dir"]
    assert TS_PATTERN.fullmatch(first["ts"])
    assert (first["level"], first["event"], first["correlation_id"], first["attempt"]) == (
        "info", "job.started", "clip-42", 1)
    second = json.loads(lines[1])
    assert second["level"] == "warning"
    assert "correlation_id" not in second


def test_non_json_values_are_written_as_text(event_log: EventLog) -> None:
    _log.info("tempdir.created", correlation_id="p1", temp_dir=Path("/srv/tmp/videonote_dl_p1"), reused=False)
    (event,) = event_log.read()
    assert event["temp_dir"] == "/srv/tmp/videonote_dl_p1"
    assert event["reused"] is False


def test_check_event_line_rejects_an_undocumented_event(event_vocabulary: frozenset[str]) -> None:
    good = '{"ts":"2026-11-23T10:00:00.123456Z","level":"info","event":"job.started"}'
    assert check_event_line(good, event_vocabulary)["event"] == "job.started"
    for bad in (
        '{"ts":"2026-11-23T10:00:00.123456Z","level":"info","event":"job.made_up"}',
        '{"ts":"2026-11-23T10:00:00Z","level":"info","event":"job.started"}',
        '{"level":"info","ts":"2026-11-23T10:00:00.123456Z","event":"job.started"}',
        '{"ts":"2026-11-23T10:00:00.123456Z","level":"loud","event":"job.started"}',
    ):
        with pytest.raises(AssertionError):
            check_event_line(bad, event_vocabulary)


def test_vocabulary_lists_the_events_the_core_emits(event_vocabulary: frozenset[str]) -> None:
    for name in ("tempdir.created", "tempdir.kept", "tempdir.removed", "tempdir.cleanup_failed",
                 "job.started", "job.succeeded", "job.failed", "job.cancelled", "job.interrupted",
                 "reaper.pass", "reaper.removed", "reaper.error"):
        assert name in event_vocabulary


_LOGGER_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}


def _event_names_in_code() -> dict[str, list[str]]:
    """Nombres de evento que el código emite: llamadas ``x.info("area.algo", ...)`` con nombre literal."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO_ROOT / "daemon").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LOGGER_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and "." in node.args[0].value
                and " " not in node.args[0].value
            ):
                where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
                found.setdefault(node.args[0].value, []).append(where)
    return found


def test_docs_list_exactly_the_events_the_code_emits(event_vocabulary: frozenset[str]) -> None:
    # docs/events.md es la única lista: ni eventos sin documentar ni filas que ya nadie emite.
    in_code = _event_names_in_code()
    undocumented = {name: where for name, where in in_code.items() if name not in event_vocabulary}
    assert undocumented == {}, "add these events to docs/events.md"
    assert sorted(event_vocabulary - in_code.keys()) == [], "docs/events.md lists events nothing emits"


def test_exception_method_is_an_error_with_its_traceback(event_log: EventLog) -> None:
    try:
        raise RuntimeError("cannot reach https://erin:tb-secret@example.org/")
    except RuntimeError:
        _log.exception("daemon.error", where="test")
    (event,) = event_log.read()
    assert event["level"] == "error"
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: cannot reach https://***@example.org/" in event["exception"]
    assert "tb-secret" not in event_log.path.read_text(encoding="utf-8")


def test_warn_and_critical_levels(event_log: EventLog) -> None:
    _log.warn("daemon.error", n=1)
    _log.critical("daemon.error", n=2)
    assert [e["level"] for e in event_log.read()] == ["warning", "critical"]


# --- id de correlación -----------------------------------------------------------------------
def test_correlation_id_bound_per_task(event_log: EventLog) -> None:
    async def job(cid: str, gate: asyncio.Barrier) -> None:
        bind_correlation_id(cid)
        await gate.wait()  # las dos tareas se intercalan antes de emitir
        _log.info("job.progress", bytes=1)
        await gate.wait()
        _log.info("job.progress", bytes=2)

    async def main() -> None:
        gate = asyncio.Barrier(2)
        await asyncio.gather(job("task-a", gate), job("task-b", gate))
        _log.info("reaper.pass", removed=0)  # fuera de las tareas: sin id

    asyncio.run(main())
    events = event_log.read()
    by_id: dict[str | None, list[int]] = {}
    for event in events:
        by_id.setdefault(event.get("correlation_id"), []).append(event.get("bytes", 0))
    assert by_id == {"task-a": [1, 2], "task-b": [1, 2], None: [0]}


def test_correlation_id_bound_in_a_thread_stays_in_that_thread(event_log: EventLog) -> None:
    def worker() -> None:
        bind_correlation_id("in-thread")
        _log.info("job.progress", where="thread")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    _log.info("job.progress", where="main")
    events = {e["where"]: e for e in event_log.read()}
    assert events["thread"]["correlation_id"] == "in-thread"
    assert "correlation_id" not in events["main"]


def test_unbinding_the_correlation_id(event_log: EventLog) -> None:
    async def main() -> None:
        bind_correlation_id("once")
        _log.info("job.started", n=1)
        bind_correlation_id(None)
        _log.info("job.started", n=2)

    asyncio.run(main())
    first, second = event_log.read()
    assert first["correlation_id"] == "once"
    assert "correlation_id" not in second


def test_correlation_id_follows_the_task_into_its_threads_and_an_explicit_none_wins(event_log: EventLog) -> None:
    def in_thread() -> None:
        _log.info("job.progress", where="thread")
        _log.info("job.progress", where="thread-none", correlation_id=None)

    async def main() -> None:
        bind_correlation_id("task-c")
        await asyncio.to_thread(in_thread)

    asyncio.run(main())
    events = {e["where"]: e for e in event_log.read()}
    assert events["thread"]["correlation_id"] == "task-c"
    assert "correlation_id" not in events["thread-none"]


def test_configure_events_leaves_an_applications_structlog_config_alone(tmp_path: Path) -> None:
    # Una aplicación que importa el paquete y configura structlog a su manera: el daemon no se la
    # quita, y sus propios eventos siguen yendo al registro de eventos.
    script = f"""
import structlog
from pathlib import Path
from daemon.events import configure_events, get_logger
seen = []
def keep(_logger, _method, event_dict):
    seen.append(event_dict["event"])
    raise structlog.DropEvent
structlog.configure(processors=[keep])
configure_events(Path({str(tmp_path / "events.jsonl")!r}), stderr=False)
structlog.get_logger().info("app.own")
get_logger().info("job.started", correlation_id="c1")
print(seen)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "['app.own']"
    (line,) = _lines(tmp_path / "events.jsonl")
    assert (line["event"], line["correlation_id"]) == ("job.started", "c1")


# --- escrituras concurrentes -------------------------------------------------------------------
_WRITER = r"""
import sys, threading
from pathlib import Path
from daemon.events import configure_events, get_logger

path = Path(sys.argv[1])
proc, threads, count, size = (int(a) for a in sys.argv[2:6])
configure_events(path, stderr=False)
log = get_logger()
start = threading.Barrier(threads)

def work(t):
    start.wait()
    for seq in range(count):
        log.info("job.progress", correlation_id=f"p{proc}-t{t}", seq=seq, pad=chr(97 + (seq % 26)) * size)

workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print("done", flush=True)
"""


def test_processes_and_threads_never_tear_lines(tmp_path: Path) -> None:
    # Varios procesos × hilos escriben eventos de ~5 KB (más que PIPE_BUF) en el mismo archivo.
    path = tmp_path / "shared.jsonl"
    processes, threads, count, size = 6, 4, 150, 5000
    workers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(p), str(threads), str(count), str(size)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(processes)
    ]
    for worker in workers:
        out, err = worker.communicate()
        assert worker.returncode == 0, err
        assert out.strip() == "done"
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == processes * threads * count
    seen = set()
    for line in lines:
        event = json.loads(line)  # una línea rota o intercalada no sería JSON
        assert event["event"] == "job.progress"
        assert event["pad"] == chr(97 + event["seq"] % 26) * size
        seen.add((event["correlation_id"], event["seq"]))
    assert len(seen) == processes * threads * count


def test_threads_writing_while_the_log_is_reopened(tmp_path: Path, event_log: EventLog) -> None:
    # Reabrir en bucle mientras otros hilos escriben: ningún evento se pierde ni se rompe.
    threads, count = 4, 300
    stop = threading.Event()

    def reopener() -> None:
        while not stop.is_set():
            reopen_event_log()

    def writer(t: int) -> None:
        for seq in range(count):
            _log.info("job.progress", correlation_id=f"t{t}", seq=seq)

    churn = threading.Thread(target=reopener)
    churn.start()
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    churn.join()
    events = event_log.read()
    assert sorted((e["correlation_id"], e["seq"]) for e in events) == sorted(
        (f"t{t}", s) for t in range(threads) for s in range(count))


# --- reapertura (logrotate) ----------------------------------------------------------------------
def test_reopen_after_rename_writes_to_the_new_file(event_log: EventLog) -> None:
    _log.info("job.started", correlation_id="before")
    rotated = event_log.path.with_name("events.jsonl.1")
    event_log.path.rename(rotated)
    _log.info("job.started", correlation_id="still-old-fd")  # sin reabrir, sigue en el archivo movido
    reopen_event_log()
    _log.info("job.started", correlation_id="after")
    assert [e["correlation_id"] for e in _lines(rotated)] == ["before", "still-old-fd"]
    assert [e["correlation_id"] for e in event_log.read()] == ["after"]


def test_reopen_recreates_a_deleted_log_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "events.jsonl"
    configure_events(path, stderr=False)
    _log.info("job.started", correlation_id="one")
    path.unlink()
    path.parent.rmdir()
    reopen_event_log()
    _log.info("job.started", correlation_id="two")
    assert [e["correlation_id"] for e in _lines(path)] == ["two"]


def test_reconfiguring_moves_already_cached_loggers_too(tmp_path: Path, event_log: EventLog) -> None:
    # Los loggers de módulo se cachean en su primer uso; configurar otro archivo debe llevarlos allí.
    _log.info("job.started", correlation_id="first")
    second = tmp_path / "second.jsonl"
    configure_events(second, level="debug", stderr=False)
    _log.info("job.started", correlation_id="second")
    assert [e["correlation_id"] for e in event_log.read()] == ["first"]
    assert [e["correlation_id"] for e in _lines(second)] == ["second"]


def test_configure_without_a_file_writes_nothing(tmp_path: Path, event_log: EventLog) -> None:
    configure_events(None, stderr=False)
    _log.info("job.started", correlation_id="nowhere")
    assert event_log.read() == []


# --- fallos de escritura -------------------------------------------------------------------------
def test_a_full_disk_drops_events_without_raising(capsys: pytest.CaptureFixture[str]) -> None:
    log_file = EventLogFile(Path("/dev/full"))
    try:
        log_file.write(b'{"event":"job.started"}\n')
        log_file.write(b'{"event":"job.started"}\n')
    finally:
        log_file.close()
    assert log_file.dropped == 2
    err = capsys.readouterr().err
    assert err.count("cannot write event log /dev/full") == 1  # un aviso, no uno por evento
    assert "downloads continue" in err


def test_logging_to_a_full_disk_does_not_break_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    configure_events(Path("/dev/full"), stderr=False)
    _log.info("job.started", correlation_id="x")  # no lanza
    assert "cannot write event log" in capsys.readouterr().err


# --- secretos ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:secret@example.org/a.mp4", "https://***@example.org/a.mp4"),
        ("http://token@example.org/", "http://***@example.org/"),
        ("GET https://u:p@h1/x then https://v:q@h2/y", "GET https://***@h1/x then https://***@h2/y"),
        ("https://example.org/a@b.mp4", "https://example.org/a@b.mp4"),
        ("mail me at ops@example.org", "mail me at ops@example.org"),
        ("https://example.org/x", "https://example.org/x"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_credentials_never_reach_the_log(event_log: EventLog) -> None:
    _log.info(
        "job.received",
        correlation_id="sec",
        url="https://alice:hunter2@example.org/clip.mp4",
        error={"message": "GET https://alice:hunter2@example.org/clip.mp4 failed", "nested": [
            "ftp://bob:pw-in-list@example.org/"]},
        headers={"Authorization": "Bearer tok-abc"},
        authorization="Basic c2VjcmV0",
        cookie="session=cookie-value",
        password="pw-plain",
        problem=RuntimeError("cannot reach https://carol:exc-secret@example.org/"),
    )
    raw = event_log.path.read_text(encoding="utf-8")
    for secret in ("hunter2", "alice", "pw-in-list", "tok-abc", "c2VjcmV0", "cookie-value", "pw-plain",
                   "exc-secret"):
        assert secret not in raw
    (event,) = event_log.read()
    assert event["url"] == "https://***@example.org/clip.mp4"
    assert event["error"]["message"] == "GET https://***@example.org/clip.mp4 failed"
    assert event["headers"] == "***"
    assert event["authorization"] == "***"


def test_secret_keys_stay_masked_after_many_plain_keys(event_log: EventLog) -> None:
    # La lista de claves ya vistas como no secretas tiene tope: con más claves distintas que eso,
    # una clave secreta (en cualquier mayúscula) se sigue enmascarando, y las demás se escriben.
    for batch in range(5):
        _log.info("job.received", correlation_id="keys", **{f"k{batch}_{i}": i for i in range(1000)})
    _log.info("job.received", correlation_id="keys", Cookie="session=c-secret", PASSWORD="p-secret", k0_1="shown")
    raw = event_log.path.read_text(encoding="utf-8")
    assert "c-secret" not in raw and "p-secret" not in raw
    last = event_log.read()[-1]
    assert (last["Cookie"], last["PASSWORD"], last["k0_1"]) == ("***", "***", "shown")
    assert event_log.read()[0]["k0_999"] == 999


def test_failed_download_with_credentials_in_the_error_is_redacted(temp_root: Path, event_log: EventLog) -> None:
    async def fail(_options: DownloadOptions, _progress: object) -> object:
        raise PermanentDownloadError("HTTP 403 from https://dave:pa55word@example.org/v.mp4")

    lifecycle = DownloadLifecycle("redact-me", DownloadOptions(url="https://dave:pa55word@example.org/v.mp4"))
    with pytest.raises(PermanentDownloadError):
        asyncio.run(lifecycle.execute(fail))  # type: ignore[arg-type]
    (failed,) = event_log.named("job.failed")
    assert failed["error"]["message"] == "HTTP 403 from https://***@example.org/v.mp4"
    assert "pa55word" not in event_log.path.read_text(encoding="utf-8")


# --- nivel ---------------------------------------------------------------------------------------
def test_set_log_level_filters_lower_levels(event_log: EventLog) -> None:
    set_log_level("info")
    _log.debug("job.progress", n=1)
    _log.info("job.started", n=2)
    set_log_level("warning")
    _log.info("job.started", n=3)
    _log.warning("job.cancelled", n=4)
    _log.error("job.failed", n=5)
    set_log_level("DEBUG")
    _log.debug("job.progress", n=6)
    assert [(e["level"], e["n"]) for e in event_log.read()] == [
        ("info", 2), ("warning", 4), ("error", 5), ("debug", 6)]


def test_configure_level_applies(tmp_path: Path) -> None:
    path = tmp_path / "warn.jsonl"
    configure_events(path, level="warning", stderr=False)
    _log.info("job.started", n=1)
    _log.error("job.failed", n=2)
    assert [e["n"] for e in _lines(path)] == [2]


# --- stderr --------------------------------------------------------------------------------------
def test_readable_line_on_stderr(event_log: EventLog, capsys: pytest.CaptureFixture[str]) -> None:
    configure_events(event_log.path, level="debug", stderr=True)
    _log.info("job.started", correlation_id="clip-42", attempt=1, url="https://u:pw@example.org/x\nnext")
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # una sola línea, aunque un valor lleve saltos
    assert err.startswith("INFO    job.started [clip-42] attempt=1")
    assert "pw" not in err
    assert len(event_log.read()) == 1


def test_stderr_line_lists_every_own_key_with_or_without_a_correlation_id(
        event_log: EventLog, capsys: pytest.CaptureFixture[str]) -> None:
    # Las claves propias van tras ts, level, event y el id (si lo hay): ni se pierde la primera
    # cuando no hay id, ni se cuela el id entre ellas cuando viene del contexto.
    configure_events(event_log.path, level="debug", stderr=True)
    _log.warning("daemon.error", where="scan", error="boom")
    bind_correlation_id("ctx-7")
    try:
        _log.info("job.queued", priority=3, queued=1)
    finally:
        bind_correlation_id(None)
    first, second = capsys.readouterr().err.splitlines()
    assert first == "WARNING daemon.error where=scan error=boom"
    assert second == "INFO    job.queued [ctx-7] priority=3 queued=1"


def test_stderr_off_writes_nothing_there(event_log: EventLog, capsys: pytest.CaptureFixture[str]) -> None:
    _log.info("job.started", correlation_id="quiet")
    assert capsys.readouterr().err == ""
    assert len(event_log.read()) == 1
