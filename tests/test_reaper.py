"""El recolector: borra lo rancio y desbloqueado, respeta cerrojos de otros procesos, nunca sigue enlaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.downloaders import IsolatedDownload
from daemon.reaper import reap_temp_root
from daemon.temp_manager import TempManager
from tests.conftest import EventLog

OLD = 0.0  # mtime de 1970: rancio para cualquier max_age razonable

# Proceso aparte que toma el flock del directorio, avisa por stdout y espera a que lo maten.
_HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
while True:
    time.sleep(3600)
"""


def _stale_dir(root: Path, name: str, files: dict[str, bytes] | None = None) -> Path:
    path = root / name
    path.mkdir(parents=True, mode=0o700)
    for file_name, data in (files or {}).items():
        (path / file_name).write_bytes(data)
    os.utime(path, (OLD, OLD))
    return path


@pytest.fixture
def lock_holder() -> Iterator[list[subprocess.Popen[str]]]:
    """Procesos que sujetan cerrojos; se matan al terminar la prueba."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _hold_lock(path: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # espera bloqueante, sin plazos
    return proc


# --- lo básico ---------------------------------------------------------------------------------
def test_old_unlocked_dir_is_removed_with_its_events(temp_root: Path, event_log: EventLog) -> None:
    path = _stale_dir(temp_root, "videonote_dl_old", {"a.bin": b"x" * 1000, "b.bin": b"y" * 24})
    (path / "sub").mkdir()
    (path / "sub" / "c.bin").write_bytes(b"z" * 100)
    os.utime(path, (OLD, OLD))
    report = reap_temp_root(temp_root, max_age=3600)
    assert not path.exists()
    assert [(e.name, e.correlation_id, e.kind, e.bytes_freed) for e in report.removed] == [
        ("videonote_dl_old", "old", "dir", 1124)]
    assert report.removed[0].age > 3600
    assert report.bytes_freed == 1124
    (removed,) = event_log.named("reaper.removed")
    assert removed["correlation_id"] == "old"
    assert removed["path"] == str(path)
    assert removed["bytes_freed"] == 1124
    assert removed["kind"] == "dir"
    assert removed["age_s"] > 3600
    assert removed["dry_run"] is False
    (summary,) = event_log.named("reaper.pass")
    assert (summary["removed"], summary["bytes_freed"], summary["errors"]) == (1, 1124, 0)
    assert summary["temp_root"] == str(temp_root)


def test_young_dir_is_kept(temp_root: Path, event_log: EventLog) -> None:
    young = temp_root / "videonote_dl_young"
    young.mkdir(parents=True)
    report = reap_temp_root(temp_root, max_age=3600)
    assert young.is_dir()
    assert (report.young, len(report.removed)) == (1, 0)
    assert event_log.named("reaper.pass")[0]["young"] == 1


def test_now_parameter_decides_the_age(temp_root: Path) -> None:
    path = temp_root / "videonote_dl_timed"
    path.mkdir(parents=True)
    os.utime(path, (1000.0, 1000.0))
    assert reap_temp_root(temp_root, max_age=100, now=1050.0).young == 1
    assert path.is_dir()
    assert len(reap_temp_root(temp_root, max_age=100, now=1101.0).removed) == 1
    assert not path.exists()


def test_only_videonote_entries_are_touched(temp_root: Path) -> None:
    other = _stale_dir(temp_root, "someone_elses_dir", {"f": b"1"})
    other_file = temp_root / "notes.txt"
    other_file.write_text("mine")
    os.utime(other_file, (OLD, OLD))
    instance = _stale_dir(temp_root, "videonote_abc_x1y2", {"f": b"1"})
    report = reap_temp_root(temp_root, max_age=60)
    assert other.is_dir() and other_file.read_text() == "mine"
    assert not instance.exists()
    assert [(e.name, e.correlation_id) for e in report.removed] == [("videonote_abc_x1y2", None)]


def test_a_stale_loose_file_is_unlinked(temp_root: Path) -> None:
    loose = temp_root / "videonote_dl_file"
    temp_root.mkdir(parents=True, exist_ok=True)
    loose.write_bytes(b"x")
    os.utime(loose, (OLD, OLD))
    report = reap_temp_root(temp_root, max_age=60)
    assert not loose.exists()
    assert [e.kind for e in report.removed] == ["file"]


def test_missing_root_is_an_empty_pass(tmp_path: Path) -> None:
    report = reap_temp_root(tmp_path / "nope", max_age=0)
    assert (report.removed, report.errors) == ([], 0)


# --- cerrojos ---------------------------------------------------------------------------------
def test_dir_locked_by_another_process_is_left_alone(
    temp_root: Path, lock_holder: list[subprocess.Popen[str]], event_log: EventLog
) -> None:
    path = _stale_dir(temp_root, "videonote_dl_live", {"part.bin": b"half"})
    holder = _hold_lock(path, lock_holder)
    report = reap_temp_root(temp_root, max_age=0)
    assert (path / "part.bin").read_bytes() == b"half"
    assert (report.locked, len(report.removed)) == (1, 0)
    assert event_log.named("reaper.removed") == []
    assert event_log.named("reaper.pass")[0]["locked"] == 1
    # el mismo directorio, ya sin dueño vivo, sí se borra: era el cerrojo lo que lo protegía
    holder.kill()
    holder.wait()
    report = reap_temp_root(temp_root, max_age=0)
    assert not path.exists()
    assert [e.correlation_id for e in report.removed] == ["live"]


def test_dir_locked_by_a_live_isolated_download_in_this_process(temp_root: Path) -> None:
    with IsolatedDownload("in-proc") as path:
        os.utime(path, (OLD, OLD))
        report = reap_temp_root(temp_root, max_age=0)
        assert path.is_dir()
        assert report.locked == 1
    assert not path.exists()


def test_skip_ids_protects_live_jobs(temp_root: Path) -> None:
    live = _stale_dir(temp_root, "videonote_dl_running", {"f": b"1"})
    dead = _stale_dir(temp_root, "videonote_dl_dead", {"f": b"1"})
    report = reap_temp_root(temp_root, max_age=0, skip_ids={"running"})
    assert live.is_dir() and not dead.exists()
    assert report.live == 1
    assert [e.correlation_id for e in report.removed] == ["dead"]


def test_dry_run_removes_nothing_but_reports_everything(temp_root: Path, event_log: EventLog) -> None:
    stale = _stale_dir(temp_root, "videonote_dl_dry", {"f": b"12345"})
    report = reap_temp_root(temp_root, max_age=0, dry_run=True)
    assert (stale / "f").read_bytes() == b"12345"
    assert report.dry_run is True
    assert [(e.correlation_id, e.bytes_freed) for e in report.removed] == [("dry", 5)]
    (removed,) = event_log.named("reaper.removed")
    assert removed["dry_run"] is True
    assert event_log.named("reaper.pass")[0]["dry_run"] is True


# --- enlaces simbólicos -----------------------------------------------------------------------------
@pytest.fixture
def precious(tmp_path: Path) -> Path:
    """Un directorio valioso fuera de la raíz temporal."""
    path = tmp_path / "precious"
    (path / "deep").mkdir(parents=True)
    (path / "keep.txt").write_text("keep me")
    (path / "deep" / "also.txt").write_text("me too")
    (path / "big.bin").write_bytes(b"B" * (1 << 20))
    return path


def _assert_intact(precious: Path) -> None:
    assert (precious / "keep.txt").read_text() == "keep me"
    assert (precious / "deep" / "also.txt").read_text() == "me too"
    assert (precious / "big.bin").stat().st_size == 1 << 20


def test_symlink_inside_a_stale_dir_is_not_followed(temp_root: Path, precious: Path) -> None:
    stale = _stale_dir(temp_root, "videonote_dl_trap", {"own.bin": b"x" * 10})
    (stale / "to-dir").symlink_to(precious)
    (stale / "to-file").symlink_to(precious / "keep.txt")
    nested = stale / "nested"
    nested.mkdir()
    (nested / "deeper-link").symlink_to(precious / "deep")
    os.utime(stale, (OLD, OLD))
    report = reap_temp_root(temp_root, max_age=60)
    assert not stale.exists()
    _assert_intact(precious)
    # los bytes liberados son los del directorio rancio (y sus enlaces), no los del destino
    (entry,) = report.removed
    assert 10 <= entry.bytes_freed < 4096


def test_stale_top_level_symlink_is_unlinked_not_followed(
    temp_root: Path, precious: Path, event_log: EventLog
) -> None:
    temp_root.mkdir(parents=True, exist_ok=True)
    link = temp_root / "videonote_dl_evil"
    link.symlink_to(precious)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    os.utime(precious, (OLD, OLD))  # el destino también parece viejo: da igual
    report = reap_temp_root(temp_root, max_age=60)
    assert not link.is_symlink() and not link.exists()
    _assert_intact(precious)
    assert [(e.kind, e.bytes_freed) for e in report.removed] == [("symlink", 0)]
    assert event_log.named("reaper.removed")[0]["kind"] == "symlink"


def test_young_top_level_symlink_is_left(temp_root: Path, precious: Path) -> None:
    temp_root.mkdir(parents=True, exist_ok=True)
    link = temp_root / "videonote_dl_fresh-link"
    link.symlink_to(precious)
    os.utime(precious, (OLD, OLD))  # sólo cuenta la edad del enlace, no la del destino
    report = reap_temp_root(temp_root, max_age=3600)
    assert link.is_symlink()
    assert report.young == 1
    _assert_intact(precious)


def test_symlinked_temp_root_is_refused(tmp_path: Path, precious: Path) -> None:
    _stale_dir(precious, "videonote_dl_inside-precious")
    link_root = tmp_path / "root-link"
    link_root.symlink_to(precious)
    # Las rutas de la configuración ya vienen resueltas; un enlace en su lugar es sospechoso: se
    # rechaza (OSError) o, como mucho, no borra nada.
    try:
        report = reap_temp_root(link_root, max_age=0)
    except OSError:
        pass
    else:
        assert report.removed == []
    assert (precious / "videonote_dl_inside-precious").is_dir()
    _assert_intact(precious)


# --- carreras y errores ----------------------------------------------------------------------------
def test_entries_deleted_during_the_pass_are_counted_as_vanished(temp_root: Path) -> None:
    # Muchos directorios rancios; otro hilo borra los últimos de la lista mientras el recolector
    # trabaja por los primeros. La pasada no lanza y cuenta los desaparecidos.
    count, stolen = 400, 150
    for i in range(count):
        _stale_dir(temp_root, f"videonote_dl_n{i:04d}", {"a": b"1", "b": b"2"})
    order = os.listdir(temp_root)  # el mismo orden que verá el recolector (readdir)
    first, victims = temp_root / order[0], [temp_root / name for name in reversed(order[-stolen:])]
    started = threading.Event()
    deleted: list[Path] = []

    def thief() -> None:
        started.set()
        while first.exists():  # espera a que el recolector haya empezado (ya borró el primero)
            pass
        for victim in victims:
            shutil.rmtree(victim, ignore_errors=True)
            deleted.append(victim)

    thread = threading.Thread(target=thief)
    thread.start()
    started.wait()
    report = reap_temp_root(temp_root, max_age=60)
    thread.join()
    assert report.errors == 0
    assert len(report.removed) + report.vanished + report.young == count
    assert report.vanished >= 1
    assert len(deleted) == stolen
    assert os.listdir(temp_root) == []


def test_two_reapers_at_once_never_fail(temp_root: Path) -> None:
    # Dos pasadas concurrentes (dos daemons, o daemon + `videonote-dl reap`): el flock que toma
    # cada una antes de borrar evita que se pisen; entre las dos se borra todo exactamente una vez.
    count = 300
    for i in range(count):
        _stale_dir(temp_root, f"videonote_dl_r{i:04d}", {"f": b"1" * 10})
    reports = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        reports.append(reap_temp_root(temp_root, max_age=60))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.errors == 0 for r in reports)
    # cada pasada cuenta cada entrada que listó una sola vez: la borró, la encontró bloqueada por la
    # otra, ya no estaba, o la vio «joven» (la otra acababa de vaciarla y eso cambia su mtime). Lo
    # que la otra borró mientras se listaba puede no aparecer en el listado (readdir concurrente).
    for r in reports:
        assert len(r.removed) + r.vanished + r.locked + r.young <= count
    removed = [e.name for r in reports for e in r.removed]
    assert sorted(removed) == sorted(f"videonote_dl_r{i:04d}" for i in range(count))  # cada uno, una vez
    assert os.listdir(temp_root) == []


def test_permission_error_is_an_event_not_a_crash(temp_root: Path, event_log: EventLog) -> None:
    stuck = _stale_dir(temp_root, "videonote_dl_stuck", {"immutable.bin": b"x"})
    fine = _stale_dir(temp_root, "videonote_dl_fine", {"f": b"x"})
    target = stuck / "immutable.bin"
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        os.utime(stuck, (OLD, OLD))
        report = reap_temp_root(temp_root, max_age=60)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert report.errors == 1
    assert not fine.exists()  # la pasada siguió con el resto
    assert stuck.is_dir()
    (error,) = event_log.named("reaper.error")
    assert error["level"] == "warning"
    assert error["correlation_id"] == "stuck"
    assert error["error"]
    assert event_log.named("reaper.pass")[0]["errors"] == 1


# --- por TempManager --------------------------------------------------------------------------------
def test_cleanup_old_temp_directories_uses_the_configured_root(temp_root: Path) -> None:
    stale = _stale_dir(temp_root, "videonote_dl_via-tm", {"f": b"x"})
    live = _stale_dir(temp_root, "videonote_dl_live-tm")
    report = TempManager.cleanup_old_temp_directories(max_age=60, skip_ids={"live-tm"})
    assert not stale.exists() and live.is_dir()
    assert [e.correlation_id for e in report.removed] == ["via-tm"]
    dry = TempManager.cleanup_old_temp_directories(max_age=0, dry_run=True)
    assert live.is_dir() and [e.correlation_id for e in dry.removed] == ["live-tm"]
