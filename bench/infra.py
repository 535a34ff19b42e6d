"""Infraestructura de los bancos: tmpfs, servidor nginx de bucle local, herramientas y procesos.

- Los archivos servidos, el spool, los temporales y las salidas viven en tmpfs que este módulo
  monta (``mount -t tmpfs``) y desmonta al final: esta máquina vacía la caché de páginas en menos
  de un minuto, así que con disco se mediría el disco. Sin permiso para montar se usa
  ``/dev/shm`` (también tmpfs) y, en último caso, un directorio en disco; el resultado lo dice.
- nginx de Debian (se instala con apt-get si falta y somos root) con su propia configuración
  (``bench/nginx.conf.in``), arrancado con ``nginx -c``, sólo en 127.0.0.1 y con sendfile. Sólo si
  nginx no se puede tener se usa ``python -m http.server`` y el resultado lo dice.
- Cada proceso que arrancan los bancos va en su propia sesión y queda registrado: al terminar se
  matan sólo esos grupos de procesos, por su id.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.common import BENCH_DIR, log, wait_until

__all__ = [
    "Procs",
    "Server",
    "StallServer",
    "TmpfsArea",
    "cpu_seconds",
    "cpu_split",
    "descendants",
    "ensure_tools",
    "free_port",
    "rss_kib",
    "run_tool",
    "start_server",
    "tool_versions",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- procesos -----------------------------------------------------------------------------
class Procs:
    """Registro de los procesos arrancados por los bancos (cada uno líder de su sesión)."""

    _live: ClassVar[list[subprocess.Popen[bytes]]] = []

    @classmethod
    def popen(cls, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), start_new_session=True, **kwargs)  # type: ignore[call-overload]
        cls._live.append(proc)
        return proc

    @classmethod
    def kill_group(cls, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
        """Manda ``sig`` al grupo de ``proc`` (sólo procesos que arrancamos) y lo recoge."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        else:
            # El líder ya salió: quedan quizá hijos en su grupo (el pgid es su pid).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
        if proc in cls._live and proc.poll() is not None:
            cls._live.remove(proc)

    @classmethod
    def forget(cls, proc: subprocess.Popen[bytes]) -> None:
        if proc in cls._live:
            cls._live.remove(proc)

    @classmethod
    def kill_all(cls, keep: Sequence[subprocess.Popen[bytes]] = ()) -> None:
        """Mata los grupos de todos los procesos registrados salvo ``keep``."""
        for proc in list(cls._live):
            if proc not in keep:
                cls.kill_group(proc, signal.SIGKILL, wait=5)
        cls._live[:] = [p for p in cls._live if p in keep]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # El nombre del proceso va entre paréntesis y puede contener espacios.
    return data[data.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """Todos los descendientes vivos de ``pid`` (recorriendo /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """CPU (usuario + sistema) de ``pid``, sus hijos ya recogidos y, con ``tree``, sus descendientes vivos."""
    total = 0.0
    for p in [pid, *(descendants(pid) if tree else [])]:
        fields = _stat_fields(p)
        if fields is None:
            continue
        # utime, stime, cutime, cstime: campos 14-17 de stat (índices 11-14 tras el nombre).
        total += sum(int(x) for x in fields[11:15]) / _CLK_TCK
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """(usuario, sistema) de ``pid`` y de sus hijos ya recogidos, en segundos."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + cutime) / _CLK_TCK, (stime + cstime) / _CLK_TCK


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (o ``VmHWM``) de ``pid`` en KiB; 0 si ya no existe."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Pone ``VmHWM`` al RSS actual (``clear_refs`` = 5); False si el núcleo no lo permite."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(slots=True)
class ToolRun:
    wall: float
    cpu: float
    returncode: int
    stderr: str


def run_tool(argv: Sequence[str], cwd: Path | None = None, timeout: float = 300.0) -> ToolRun:
    """Corre una herramienta y mide su tiempo de pared y su CPU (con la de sus hijos, vía wait4)."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = Procs.popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                Procs.kill_group(proc)
                raise TimeoutError(f"{argv[0]} did not finish within {timeout}s")
            time.sleep(0.0005)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        Procs.forget(proc)
        err.seek(0)
        text = err.read().decode(errors="replace")[-2000:]
    return ToolRun(wall, usage.ru_utime + usage.ru_stime, proc.returncode, text)


# --- herramientas ---------------------------------------------------------------------------
_APT_PACKAGES = {"nginx": "nginx", "aria2c": "aria2", "curl": "curl", "wget": "wget"}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def ensure_tools(names: Sequence[str] = ("nginx", "aria2c", "curl", "wget")) -> dict[str, str | None]:
    """Ruta de cada herramienta; si falta y somos root, la instala con apt-get (una vez)."""
    found = {name: _which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({_APT_PACKAGES[m] for m in missing if m in _APT_PACKAGES})
        log(f"installing {' '.join(packages)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
        found = {name: _which(name) for name in names}
    for name, path in found.items():
        if path is None:
            log(f"WARNING: {name} is not available; its rows will be missing")
    return found


def tool_versions(paths: dict[str, str | None]) -> dict[str, str]:
    """Versión corta de cada herramienta encontrada."""
    versions: dict[str, str] = {}
    for name, path in paths.items():
        if path is None:
            continue
        flag = "-v" if name == "nginx" else "--version"
        try:
            out = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        text = (out.stdout or out.stderr).strip()
        match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
        versions[name] = match.group(1) if match else text.splitlines()[0] if text else "?"
    versions["python"] = sys.version.split()[0]
    return versions


# --- tmpfs ----------------------------------------------------------------------------------
class TmpfsArea:
    """Un directorio de trabajo en tmpfs: montado por nosotros si se puede."""

    def __init__(self, name: str, size: str) -> None:
        self.name = name
        self.size = size
        self.path: Path | None = None
        self.mounted = False
        self.kind = ""

    def __enter__(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix=f"videonote-bench-{self.name}-"))
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(base)],
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            self.path, self.mounted, self.kind = base, True, f"tmpfs mounted by the bench ({self.size})"
            return base
        base.rmdir()
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            self.path = Path(tempfile.mkdtemp(prefix=f"videonote-bench-{self.name}-", dir=shm))
            self.kind = "/dev/shm (tmpfs; mounting our own was refused)"
        else:
            self.path = Path(tempfile.mkdtemp(prefix=f"videonote-bench-{self.name}-"))
            self.kind = "DISK (no tmpfs available: the disk is part of what is measured)"
        log(f"WARNING: cannot mount tmpfs ({result.stderr.strip()}); using {self.path}")
        return self.path

    def __exit__(self, *_exc: object) -> None:
        if self.path is None:
            return
        if self.mounted:
            for attempt in range(20):
                if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode == 0:
                    break
                if attempt == 0:
                    log(f"{self.path} is busy; retrying the unmount")
                time.sleep(0.5)  # algún proceso aún tiene un archivo abierto
            else:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                self.path.rmdir()
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- servidores ----------------------------------------------------------------------------
@dataclass(slots=True)
class Server:
    """El servidor de bucle local en marcha."""

    base_url: str
    description: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        Procs.kill_group(self.proc)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(www: Path, run_dir: Path, nginx: str | None, workers: int = 1) -> Server:
    """nginx con ``bench/nginx.conf.in`` sirviendo ``www``; si no hay nginx, http.server de Python."""
    port = free_port()
    if nginx is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        conf = (BENCH_DIR / "nginx.conf.in").read_text()
        for key, value in {"@RUN@": str(run_dir), "@WWW@": str(www), "@PORT@": str(port),
                           "@WORKERS@": str(workers)}.items():
            conf = conf.replace(key, value)
        conf_path = run_dir / "nginx.conf"
        conf_path.write_text(conf)
        proc = Procs.popen([nginx, "-c", str(conf_path), "-p", str(run_dir), "-e", str(run_dir / "error.log")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: _port_open(port) or proc.poll() is not None, 10, what="nginx to listen")
        if proc.poll() is None and _port_open(port):
            version = tool_versions({"nginx": nginx}).get("nginx", "?")
            return Server(f"http://127.0.0.1:{port}", f"nginx {version} from Debian, {workers} worker, "
                          "sendfile on, 127.0.0.1 only, files on tmpfs", proc)
        log("WARNING: nginx did not start; falling back to python -m http.server")
        Procs.kill_group(proc)
    proc = Procs.popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www),
                        str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _port_open(port), 10, what="python http.server to listen")
    return Server(f"http://127.0.0.1:{port}", "FALLBACK python -m http.server (nginx could not be had; the "
                  "server is slower and HTTP/1.0, so the tools' absolute times are not comparable to nginx runs)",
                  proc)


class StallServer:
    """Un puerto que escucha y nunca acepta: las conexiones quedan en la cola del núcleo y la
    petición no recibe respuesta. Sirve para tener descargas bloqueadas (trabajos en cola)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/stall.bin"

    def close(self) -> None:
        self.sock.close()


def raise_nofile(wanted: int) -> int:
    """Sube el límite de descriptores propio hasta ``wanted`` (o el máximo permitido)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
