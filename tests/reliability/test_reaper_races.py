"""Carreras contra el recolector de temporales.

- Un trabajo vivo con su cerrojo y las fechas (mtime) retrasadas días nunca se recoge: ni por el
  recolector del daemon (que además lo sabe vivo) ni por otro proceso que sólo ve el ``flock``
  (otra instancia, ``videonote-dl reap``). Cuando el que tiene el cerrojo muere, sí se recoge: la
  prueba comprueba que era el cerrojo lo que lo protegía.
- Un directorio rancio cambiado por un enlace simbólico una y otra vez (en bucle acotado, desde
  otro proceso) mientras el recolector pasa sin parar: nada fuera de la raíz temporal se borra
  ni se modifica.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.reaper import reap_temp_root
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer

TWO_DAYS = 2 * 24 * 3600


def _backdate(path: Path, seconds: float = TWO_DAYS) -> None:
    """Retrasa el mtime de ``path`` y de todo lo que contiene (sin seguir enlaces)."""
    when = time.time() - seconds
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def _tree(root: Path) -> dict[str, str]:
    """Foto de un árbol: ruta relativa -> tipo y contenido (o destino del enlace)."""
    snapshot: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                snapshot[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                snapshot[rel] = "dir"
            else:
                snapshot[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def _reaper_passes(daemon: DaemonProcess) -> list[dict[str, object]]:
    return daemon.events(name="reaper.pass")


# --- un trabajo vivo con mtimes retrasados ---------------------------------------------------
@pytest.mark.timeout(120)
def test_a_live_job_with_backdated_mtimes_is_never_reaped(tmp_path: Path, test_server: TestServer) -> None:
    hold = threading.Event()
    data = os.urandom(3 * 1024 * 1024)
    url = test_server.add("/live.bin", Behavior(data=data, hold=hold, hold_after=2 * 1024 * 1024 + 100,
                                                hold_times=1, hold_timeout=90))
    daemon = DaemonProcess(tmp_path / "d", reaper={"interval": "100ms", "max_age": "1s"},
                           ytdlp={"enabled": False})
    live_dir = daemon.temp_root / "videonote_dl_live"
    try:
        with daemon:
            daemon.drop_job({"url": url, "id": "live"})
            wait_until(lambda: (live_dir / "download.part").exists(), 30, what="the live download on disk")
            for _round in range(5):
                _backdate(live_dir)
                passes = len(_reaper_passes(daemon))
                wait_until(lambda passes=passes: len(_reaper_passes(daemon)) >= passes + 2, 30,
                           what="two reaper passes of the daemon")
                assert live_dir.is_dir()
                # Otro proceso sin la lista de trabajos vivos: sólo el flock lo protege.
                report = reap_temp_root(daemon.temp_root, max_age=0)
                assert report.removed == [] and report.locked == 1 and report.errors == 0, report
            cli = subprocess.run([sys.executable, "-m", "daemon", "reap", "--config", str(daemon.config_path)],
                                 capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0, cli.stderr
            assert live_dir.is_dir() and (live_dir / "download.part").exists()
            assert daemon.events(name="reaper.removed") == []
            assert all(int(str(p["live"])) + int(str(p["locked"])) >= 1 for p in _reaper_passes(daemon)[-5:])
            hold.set()
            folder, record = daemon.wait_record("live")
            assert folder == "done", record
            assert Path(record["path"]).read_bytes() == data  # nada se borró bajo la descarga
            wait_until(lambda: not live_dir.exists(), 30, what="the temp dir removed by the job itself")
    finally:
        hold.set()
    assert daemon.stop() == 0
    report = verify_spool(load_settings(daemon.config_path), expected={"live": hashlib.sha256(data).hexdigest()})
    assert report.ok, report.problems


_LOCK_HOLDER = r"""
import os, sys
from pathlib import Path
from daemon.dirlock import DirLock

path = Path(sys.argv[1])
path.mkdir(mode=0o700)
(path / "download.part").write_bytes(b"x" * 4096)
lock = DirLock(path)
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.mark.timeout(120)
def test_a_dir_locked_by_another_process_survives_until_the_holder_dies(tmp_path: Path) -> None:
    # Otra instancia (otro proceso) tiene el cerrojo de un directorio que este daemon no conoce.
    daemon = DaemonProcess(tmp_path / "d", reaper={"interval": "100ms", "max_age": "1s"},
                           ytdlp={"enabled": False})
    other = daemon.temp_root / "videonote_dl_other-instance"
    daemon.temp_root.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(other)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with daemon:
            for _round in range(3):
                _backdate(other)
                passes = len(_reaper_passes(daemon))
                wait_until(lambda passes=passes: len(_reaper_passes(daemon)) >= passes + 2, 30,
                           what="two reaper passes")
                assert other.is_dir() and (other / "download.part").exists()
            assert any(int(str(p["locked"])) == 1 for p in _reaper_passes(daemon))
            assert daemon.events(name="reaper.removed") == []
            # El dueño muere (kill -9): el cerrojo se suelta y la siguiente pasada sí lo recoge.
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            _backdate(other)
            wait_until(lambda: not other.exists(), 30, what="the orphaned dir reaped")
            (removed,) = daemon.events(name="reaper.removed")
            assert removed["correlation_id"] == "other-instance"
            assert removed["kind"] == "dir" and removed["bytes_freed"] == 4096
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# --- un directorio rancio cambiado por un enlace en bucle --------------------------------------------
_SWAPPER = r"""
import os, sys, shutil, time
from pathlib import Path

root, victim, parent = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rounds, deep = int(sys.argv[4]), sys.argv[5] == "deep"
old = time.time() - 2 * 24 * 3600
names = [root / "videonote_dl_race", root / "videonote_race_x"]
swaps = 0

def stale_dir(path):
    # Un directorio rancio con contenido, enlaces que apuntan fuera y un subdirectorio.
    os.mkdir(path)
    (path / "download.part").write_bytes(b"p" * 1000)
    os.symlink(victim, path / "escape")
    os.symlink(os.path.join(victim, "keep.txt"), path / "escape-file")
    os.mkdir(path / "sub")
    (path / "sub" / "inner").write_bytes(b"i" * 100)
    for p in (path / "sub" / "inner", path / "sub", path / "download.part", path):
        os.utime(p, (old, old))

for i in range(rounds):
    target = victim if i % 2 == 0 else parent
    for name in names:
        aside = root / f".aside-{name.name}"
        try:
            stale_dir(name)
        except OSError:
            pass
        if deep:
            try:
                # Un subdirectorio cambiado por un enlace mientras el recolector baja por el árbol.
                os.rename(name / "sub", root / ".aside-sub")
                os.symlink(target, name / "sub")
                shutil.rmtree(root / ".aside-sub", ignore_errors=True)
            except OSError:
                pass
        try:
            # El directorio entero cambiado por un enlace (viejo) hacia fuera de la raíz.
            os.rename(name, aside)
            os.symlink(target, name)
            os.utime(name, (old, old), follow_symlinks=False)
            swaps += 1
        except OSError:
            pass
        try:
            os.unlink(name)
            os.rename(aside, name)
        except OSError:
            pass
        shutil.rmtree(aside, ignore_errors=True)
print(swaps, flush=True)
"""


def _victim(base: Path) -> Path:
    victim = base / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("must survive\n")
    (victim / "sub" / "deep.bin").write_bytes(os.urandom(2048))
    # Nombres que el recolector recogería si llegara a mirar aquí.
    (victim / "videonote_dl_bait").mkdir()
    (victim / "videonote_dl_bait" / "download.part").write_bytes(b"bait")
    (victim / "sub" / "inner").write_bytes(b"not the one in the temp dir")
    _backdate(victim)
    return victim


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["top", "deep"])
def test_stale_dir_swapped_for_a_symlink_never_escapes_the_temp_root(tmp_path: Path, mode: str) -> None:
    # "top": el directorio entero se cambia por un enlace; "deep": además, un subdirectorio suyo.
    base = tmp_path / "area"
    root = base / "temp_root"
    root.mkdir(parents=True)
    victim = _victim(base)
    (base / "sentinel.txt").write_text("beside the temp root\n")
    before = {"victim": _tree(victim), "sentinel": (base / "sentinel.txt").read_text()}
    rounds = 1500
    swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(root), str(victim), str(base), str(rounds), mode],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    removed = {"dir": 0, "symlink": 0}
    passes = errors = 0
    try:
        # Dos recolectores a la vez (como el daemon y `videonote-dl reap`) contra el que cambia cosas.
        def reap_loop() -> None:
            nonlocal passes, errors
            while swapper.poll() is None and passes < 200_000:
                report = reap_temp_root(root, max_age=3600)
                passes += 1
                errors += report.errors
                for entry in report.removed:
                    removed[entry.kind] = removed.get(entry.kind, 0) + 1

        second = threading.Thread(target=reap_loop)
        second.start()
        reap_loop()
        second.join(60)
        out, err = swapper.communicate(timeout=60)
    finally:
        if swapper.poll() is None:
            swapper.kill()
            swapper.wait(10)
    assert swapper.returncode == 0, err
    assert int(out.strip()) > 0, "the swapper never managed to swap a dir for a symlink"
    assert passes > 0
    # Lo de fuera, intacto: ni borrado ni cambiado.
    assert _tree(victim) == before["victim"]
    assert (base / "sentinel.txt").read_text() == before["sentinel"]
    assert sorted(p.name for p in base.iterdir()) == ["sentinel.txt", "temp_root", "victim"]
    # La carrera se dio de verdad: el recolector borró directorios rancios y enlaces durante ella.
    assert removed["dir"] > 0, (removed, passes)
    if mode == "top":
        # Un cambio de la entrada entre stat, open y rmtree no es un error: la próxima pasada lo ve.
        assert errors == 0, f"{errors} reaper errors in {passes} passes"
    # Al final, una pasada deja la raíz limpia (sólo quedan restos que no son del recolector).
    final = reap_temp_root(root, max_age=0)
    assert final.errors == 0
    assert [p.name for p in root.iterdir() if p.name.startswith("videonote_")] == []
    assert _tree(victim) == before["victim"]
