"""El propio powerfs: qué sobrevive a un corte de luz (datos, nombres, renames, enlaces, borrados).

Cada prueba escribe a través del montaje, corta la luz, "reinicia" (monta otra vez sobre el
mismo respaldo) y mira qué quedó. Sin /dev/fuse o sin pyfuse3 se saltan con el motivo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.powerfs import PowerFS, powerfs_unavailable

pytestmark = pytest.mark.skipif(powerfs_unavailable() is not None, reason=str(powerfs_unavailable()))


class Machine:
    """Un disco powerfs con corte y reinicio."""

    def __init__(self, base: Path, writeback: str = "none") -> None:
        self.backing, self.mnt = base / "backing", base / "mnt"
        self.writeback = writeback
        self.fs = PowerFS(self.backing, self.mnt, writeback=writeback).mount()

    def reboot(self, cut: bool = True) -> None:
        if cut:
            self.fs.cut()
        self.fs.unmount()
        self.fs = PowerFS(self.backing, self.mnt, writeback=self.writeback).mount()

    def write(self, rel: str, data: bytes, sync: bool = False) -> None:
        fd = os.open(self.mnt / rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def sync_dir(self, rel: str = ".") -> None:
        fd = os.open(self.mnt / rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, rel: str) -> bytes:
        return (self.mnt / rel).read_bytes()

    def names(self, rel: str = ".") -> list[str]:
        return sorted(os.listdir(self.mnt / rel))


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path)
    try:
        yield m
    finally:
        m.fs.unmount()


def test_data_is_durable_only_up_to_the_last_fsync(machine: Machine) -> None:
    machine.write("a", b"first", sync=True)
    machine.sync_dir()
    with open(machine.mnt / "a", "ab") as handle:
        handle.write(b" second")  # sin fsync
    assert machine.read("a") == b"first second"  # vivo: se ve todo
    machine.reboot()
    assert machine.read("a") == b"first"


def test_a_created_file_needs_its_directory_fsynced(machine: Machine) -> None:
    machine.write("synced-data-only", b"x" * 10, sync=True)  # fsync del archivo, no del directorio
    os.mkdir(machine.mnt / "sub")
    machine.write("sub/inner", b"y", sync=True)
    machine.sync_dir("sub")  # sub/ sincronizado, pero su propio nombre en la raíz no
    machine.reboot()
    assert machine.names() == []


def test_a_durable_name_without_synced_data_is_an_empty_file(machine: Machine) -> None:
    machine.write("empty", b"never synced")
    machine.sync_dir()
    machine.reboot()
    assert machine.read("empty") == b""


def test_rename_is_atomic_and_durable_with_either_directory(machine: Machine) -> None:
    for name in ("src", "dst"):
        os.mkdir(machine.mnt / name)
    machine.sync_dir()
    for name in ("a", "b", "c"):
        machine.write(f"src/{name}", name.encode(), sync=True)
    machine.sync_dir("src")
    os.rename(machine.mnt / "src/a", machine.mnt / "dst/a")  # sin fsync: vuelve a src/
    os.rename(machine.mnt / "src/b", machine.mnt / "dst/b")
    machine.sync_dir("dst")  # hace durable el rename de b (y sólo ése, que toca dst/)
    os.rename(machine.mnt / "src/c", machine.mnt / "dst/c")
    machine.sync_dir("src")  # el de c, por el directorio de origen; también el de a
    os.rename(machine.mnt / "dst/a", machine.mnt / "src/a")  # y éste se pierde
    machine.reboot()
    assert machine.names("src") == []
    assert machine.names("dst") == ["a", "b", "c"]
    assert [machine.read(f"dst/{n}") for n in ("a", "b", "c")] == [b"a", b"b", b"c"]


def test_rename_over_an_existing_name_keeps_the_old_file_until_the_directory_fsync(machine: Machine) -> None:
    machine.write("target", b"old", sync=True)
    machine.sync_dir()
    machine.write(".tmp", b"new", sync=True)
    os.rename(machine.mnt / ".tmp", machine.mnt / "target")
    machine.reboot()
    assert machine.names() == ["target"] and machine.read("target") == b"old"
    machine.write(".tmp", b"new", sync=True)
    os.rename(machine.mnt / ".tmp", machine.mnt / "target")
    machine.sync_dir()
    machine.reboot()
    assert machine.names() == ["target"] and machine.read("target") == b"new"


def test_link_shares_the_inode_and_needs_the_new_directory_fsynced(machine: Machine) -> None:
    os.mkdir(machine.mnt / "out")
    machine.write("a", b"payload", sync=True)
    machine.sync_dir()
    os.link(machine.mnt / "a", machine.mnt / "out/lost")
    machine.reboot()
    assert machine.names("out") == []
    os.link(machine.mnt / "a", machine.mnt / "out/kept")
    machine.sync_dir("out")
    machine.reboot()
    a, kept = os.stat(machine.mnt / "a"), os.stat(machine.mnt / "out/kept")
    assert (a.st_ino, a.st_nlink) == (kept.st_ino, 2)
    assert machine.read("out/kept") == b"payload"


def test_unlink_and_rmdir_need_the_directory_fsynced(machine: Machine) -> None:
    os.mkdir(machine.mnt / "d")
    machine.write("f", b"data", sync=True)
    machine.sync_dir()
    os.unlink(machine.mnt / "f")
    os.rmdir(machine.mnt / "d")
    machine.reboot()
    assert machine.names() == ["d", "f"] and machine.read("f") == b"data"
    os.unlink(machine.mnt / "f")
    os.rmdir(machine.mnt / "d")
    machine.sync_dir()
    machine.reboot()
    assert machine.names() == []


def test_clean_unmount_keeps_everything(machine: Machine) -> None:
    machine.write("a", b"unsynced")
    os.mkdir(machine.mnt / "d")
    machine.reboot(cut=False)
    assert machine.names() == ["a", "d"] and machine.read("a") == b"unsynced"


def test_armed_cut_fires_before_the_nth_boundary_and_kills_the_registered_process(machine: Machine) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        machine.fs.kill_on_cut(victim.pid)
        start = machine.fs.stats()["boundaries"]
        machine.fs.arm(start + 3)  # create(1) fsync(2) fsyncdir(3): corta antes del fsync del directorio
        machine.write("a", b"data", sync=True)
        with pytest.raises(OSError) as info:
            machine.sync_dir()
        assert info.value.errno == 5  # EIO: la máquina ya no existe
        assert victim.wait(10) == -signal.SIGKILL
        reason = machine.fs.cut_reason
        assert reason is not None and "fsyncdir" in reason, reason
        with pytest.raises(OSError):
            os.listdir(machine.mnt)
        machine.reboot(cut=False)
        assert machine.names() == []  # el fsync del directorio nunca ocurrió
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_trace_and_counts_name_every_boundary(machine: Machine) -> None:
    machine.write("a", b"x", sync=True)
    machine.sync_dir()
    os.rename(machine.mnt / "a", machine.mnt / "b")
    stats, trace = machine.fs.stats(), machine.fs.trace()
    assert stats["counts"] == {"create": 1, "fsync": 1, "fsyncdir": 1, "rename": 1}
    assert [line.split(" ", 2)[1:] for line in trace] == [
        ["create", "/a"], ["fsync", "/a"], ["fsyncdir", "/"], ["rename", "/a -> /b"],
    ]


def test_prefix_writeback_keeps_a_random_prefix_of_unsynced_appends(tmp_path: Path) -> None:
    m = Machine(tmp_path, writeback="prefix")
    try:
        lines = b"".join(b'{"n":%d}\n' % n for n in range(2000))
        m.write("log", lines[:100], sync=True)
        m.sync_dir()
        with open(m.mnt / "log", "ab") as handle:
            handle.write(lines[100:])
        m.reboot()
        kept = m.read("log")
        assert lines.startswith(kept) and len(kept) >= 100  # nunca basura: un prefijo de lo escrito
    finally:
        m.fs.unmount()


def test_everything_after_a_cut_fails_until_the_remount(machine: Machine) -> None:
    machine.write("a", b"x", sync=True)
    machine.sync_dir()
    machine.fs.cut()
    time.sleep(0.05)
    for action in (lambda: machine.read("a"), lambda: machine.write("b", b"y"), lambda: machine.sync_dir()):
        with pytest.raises(OSError):
            action()
    machine.reboot(cut=False)
    assert machine.names() == ["a"] and machine.read("a") == b"x"
