"""Lado de las pruebas de powerfs: arrancar el proceso FUSE, hablarle y desmontarlo."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from functools import cache
from itertools import count
from pathlib import Path
from typing import Any

__all__ = ["SYSTEM_PYTHON", "PowerFS", "powerfs_unavailable"]

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("server.py")
_serial = count(1)


@cache
def powerfs_unavailable() -> str | None:
    """Motivo por el que powerfs no puede montarse aquí, o None si puede."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (load the fuse module or run the container with --device /dev/fuse)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing: apt-get install fuse3"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import pyfuse3, trio"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return (f"pyfuse3/trio are not importable by {SYSTEM_PYTHON}: apt-get install fuse3 python3-pyfuse3 "
                "python3-trio")
    return None


class PowerFS:
    """Un montaje de powerfs sobre ``backing`` en ``mountpoint``."""

    def __init__(self, backing: Path, mountpoint: Path, seed: int = 0, writeback: str = "none") -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        # Ruta corta: la de un socket Unix no puede pasar de 107 bytes (tmp_path de pytest es larga).
        self.control_path = Path(tempfile.gettempdir()) / f"powerfs-{os.getpid()}-{next(_serial)}.sock"
        self.log_path = backing.parent / f".{backing.name}.powerfs.log"
        self.seed = seed
        self.writeback = writeback
        self.proc: subprocess.Popen[bytes] | None = None

    def mount(self, timeout: float = 20.0) -> PowerFS:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.control_path.unlink()
        log = open(self.log_path, "wb")  # noqa: SIM115 - el hijo hereda el descriptor
        try:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER), str(self.backing), str(self.mountpoint), str(self.control_path),
                 "--seed", str(self.seed), "--writeback", self.writeback],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mountpoint) and self.control_path.exists()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"powerfs exited with {self.proc.returncode}: {self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"powerfs did not mount {self.mountpoint} in {timeout}s: {self.log_text()}")
            time.sleep(0.02)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def command(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control_path))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        return dict(json.loads(data))

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def trace(self) -> list[str]:
        return list(self.command("trace")["trace"])

    def arm(self, boundary: int) -> None:
        """Cortar justo antes de la frontera número ``boundary`` (contando desde el montaje)."""
        self.command(f"arm {boundary}")

    def arm_match(self, pattern: str, occurrence: int = 1) -> None:
        """Cortar justo antes de la ``occurrence``-ésima frontera, desde ahora, cuya línea de la
        traza (``tipo ruta``, p. ej. ``fsyncdir /spool/incoming``) case con ``pattern``."""
        self.command(f"arm_match {occurrence} {pattern}")

    def kill_on_cut(self, pid: int | None) -> None:
        self.command(f"pid {pid or ''}")

    def cut(self) -> dict[str, Any]:
        return self.command("cut")

    @property
    def cut_reason(self) -> str | None:
        reason = self.stats()["cut"]
        return str(reason) if reason is not None else None

    def unmount(self, timeout: float = 30.0) -> None:
        """Sin corte: sync + umount (todo queda escrito). Tras un corte: sólo lo durable."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.command("exit", timeout=5)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True)
        with contextlib.suppress(FileNotFoundError):  # el socket de control no se queda en /tmp
            self.control_path.unlink()
        self.proc = None

    def __enter__(self) -> PowerFS:
        return self.mount()

    def __exit__(self, *_exc: object) -> None:
        self.unmount()
