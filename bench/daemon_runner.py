"""El daemon real como subproceso para los bancos, más un lector incremental del registro de eventos.

``BenchDaemon`` escribe un config.yaml con todas las rutas dentro de un directorio (en tmpfs),
arranca ``python -m daemon run`` en su propia sesión (con ``NOTIFY_SOCKET`` apuntando a un
socket nuestro, para ver READY=1 como lo vería systemd), deja trabajos como un productor
(escribe en spool/tmp/ y los entrega con rename a incoming/, anotando ``time.time()`` justo
antes del rename: el mismo reloj que el ``ts`` de los eventos) y mide RSS y CPU.
Con ``profile`` el daemon corre bajo ``py-spy record`` y el perfil va a bench/results/raw/.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.common import RAW_DIR, wait_until
from bench.infra import Procs, cpu_seconds, cpu_split, descendants, rss_kib

__all__ = ["BenchDaemon", "EventTail", "job_yaml"]

REPO = Path(__file__).resolve().parent.parent
# Árbol del que se importa el paquete ``daemon`` (``--daemon-src``): por defecto, este checkout.
DAEMON_SRC: Path = REPO


def job_yaml(url: str, job_id: str, **extra: Any) -> bytes:
    """Un archivo de trabajo YAML mínimo (escrito a mano: rápido y sin sorpresas de formato)."""
    lines = [f"url: {url}", f"id: {job_id}"]
    lines += [f"{key}: {value}" for key, value in extra.items() if value is not None]
    return ("\n".join(lines) + "\n").encode()


def parse_ts(text: str) -> float:
    """``2026-11-23T10:00:00.123456Z`` -> segundos epoch (el reloj de ``time.time()``)."""
    return datetime.fromisoformat(text).timestamp()


def _read_from(path: Path, offset: int) -> bytes:
    """Lo escrito en ``path`` a partir de ``offset`` (nada si el archivo aún no existe)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


class _LineCounter:
    """Cuenta, sin analizarlas, las líneas completas nuevas de un archivo que contienen ``needle``."""

    def __init__(self, path: Path, offset: int, needle: bytes) -> None:
        self.path, self.offset, self.needle = path, offset, needle
        self.count = 0
        self._partial = b""

    def update(self) -> int:
        data = _read_from(self.path, self.offset)
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1  # una línea a medias se cuenta en la lectura siguiente
        self._partial = data[cut:]
        self.count += data.count(self.needle, 0, cut)
        return self.count


class EventTail:
    """Lee el registro de eventos de forma incremental y guarda el primer ``ts`` por evento e id."""

    def __init__(self, path: Path, keep: Iterable[str] = ()) -> None:
        self.path = path
        self.keep = frozenset(keep)
        self.offset = 0
        self._partial = b""
        self.first: dict[str, dict[str | None, float]] = {}
        self.counts: dict[str, int] = {}
        self.samples: dict[str, list[dict[str, Any]]] = {}

    def skip_to_end(self) -> None:
        """Ignora lo ya escrito (p. ej. al reutilizar un daemon entre rondas)."""
        self.poll()
        self.first.clear()
        self.counts.clear()
        self.samples.clear()

    def poll(self) -> int:
        """Procesa las líneas nuevas completas; devuelve cuántas."""
        data = _read_from(self.path, self.offset)
        if not data:
            return 0
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line:
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            name = event.get("event", "")
            self.counts[name] = self.counts.get(name, 0) + 1
            if self.keep and name not in self.keep:
                continue
            ts = parse_ts(event["ts"])
            per_id = self.first.setdefault(name, {})
            cid = event.get("correlation_id")
            if cid not in per_id:
                per_id[cid] = ts
            if name in ("daemon.error", "job.failed", "job.rejected", "job.retrying"):
                self.samples.setdefault(name, []).append(event)
        return len(lines)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def ts(self, name: str, cid: str | None = None) -> float | None:
        return self.first.get(name, {}).get(cid)

    def ids(self, name: str) -> dict[str | None, float]:
        return self.first.get(name, {})


class NotifyListener:
    """Socket AF_UNIX/SOCK_DGRAM que hace de systemd: anota cuándo llega ``READY=1``.

    Un hilo lo vacía sin parar, como systemd: si nadie leyera, la cola del socket se llenaría y
    cada ``sendto`` del daemon esperaría su tiempo límite (1 s), falseando las medidas.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready_at: float | None = None
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="notify-listener", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            self.messages += 1
            if self.ready_at is None and b"READY=1" in data.split(b"\n"):
                self.ready_at = now

    def poll(self) -> None:
        """Nada que hacer: el hilo ya lee (se mantiene por compatibilidad)."""

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BenchDaemon:
    """Un daemon de videonote-dl con su config, spool, temporales y salida bajo ``base``."""

    def __init__(self, base: Path, label: str, **overrides: Any) -> None:
        self.base = base
        self.label = label
        base.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "spool_dir": "spool", "temp_dir": "tmp", "output_dir": "out", "event_log": "log/events.jsonl",
            "status_file": "run/status.json", "max_concurrent": 4, "rescan_interval": "5s",
            "shutdown_grace": "5s", "log_level": "info",
            "download": {"allow_private_networks": True, "timeout": "10m"},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config = config
        self.config_path = base / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.spool = base / "spool"
        self.incoming = self.spool / "incoming"
        self.tmp = self.spool / "tmp"
        self.done = self.spool / "done"
        self.output = base / "out"
        self.event_log = base / "log" / "events.jsonl"
        self.events = EventTail(self.event_log, keep=(
            "daemon.ready", "job.received", "job.queued", "job.started", "job.published", "job.recorded",
            "job.failed", "job.rejected", "daemon.error", "job.retrying", "job.succeeded",
        ))
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.spawned_at = 0.0
        self.notify: NotifyListener | None = None
        self.profile_path: Path | None = None
        self._stderr: Any = None

    # --- proceso ----------------------------------------------------------------------------
    def start(self, wait_ready: bool = True, profile: str | None = None, timeout: float = 60.0) -> BenchDaemon:
        """Arranca el daemon; con ``profile`` (un nombre), bajo ``py-spy record``."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.notify = NotifyListener(self.base / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "PYTHONUNBUFFERED": "1"}
        if DAEMON_SRC != REPO:
            env["PYTHONPATH"] = str(DAEMON_SRC) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("WATCHDOG_USEC", None)
        argv = [sys.executable, "-m", "daemon", "run", "--config", str(self.config_path)]
        if profile:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            RAW_DIR.mkdir(parents=True, exist_ok=True)
            self.profile_path = RAW_DIR / f"profile-{profile}.txt"
            # BENCH_PYSPY_ARGS añade opciones (p. ej. "--gil" para contar sólo muestras con el GIL);
            # BENCH_PYSPY_RATE cambia las muestras por segundo (py-spy no admite --rate dos veces).
            extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
            rate = os.environ.get("BENCH_PYSPY_RATE", "250")
            argv = [py_spy, "record", "--rate", rate, "--format", "raw", "--nonblocking", "--subprocesses",
                    *extra, "-o", str(self.profile_path), "--", *argv]
        self._stderr = open(self.base / f"stderr-{self.label}.log", "ab")  # noqa: SIM115
        self.spawned_at = time.time()
        self.proc = Procs.popen(argv, cwd=DAEMON_SRC, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.pid = self.proc.pid
        if profile:
            # El daemon es el hijo de py-spy: se busca por su línea de órdenes.
            self.pid = wait_until(self._find_daemon_child, 20, interval=0.005, what="daemon under py-spy")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def _find_daemon_child(self) -> int:
        for pid in descendants(self.proc.pid if self.proc else 0):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"daemon" in cmdline and b"run" in cmdline:
                return pid
        return 0

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            self.alive_or_raise()
            self.events.poll()
            if self.notify is not None:
                self.notify.poll()
            return self.events.count("daemon.ready") > 0 and (self.notify is None or self.notify.ready_at is not None)

        wait_until(ready, timeout, interval=0.002, what=f"daemon {self.label} to be ready")

    @property
    def ready_at(self) -> float | None:
        """Cuándo llegó READY=1 al socket de notificación (reloj del banco)."""
        return self.notify.ready_at if self.notify else None

    def alive_or_raise(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"daemon {self.label} exited with {self.proc.returncode}: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        try:
            return (self.base / f"stderr-{self.label}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM y espera (con py-spy: el perfil se escribe al salir); SIGKILL al grupo si no basta."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        code = self.proc.poll()
        Procs.kill_group(self.proc)
        self._close()
        return code

    def save_events(self, name: str) -> Path | None:
        """Copia comprimida del registro de eventos en bench/results/raw/ (para analizar después)."""
        if not self.event_log.exists():
            return None
        RAW_DIR.mkdir(parents=True, exist_ok=True)
        target = RAW_DIR / f"events-{name}.jsonl.gz"
        with open(self.event_log, "rb") as src, gzip.open(target, "wb", compresslevel=3) as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        return target

    def kill(self) -> None:
        """SIGKILL a todo el grupo del daemon (cuando su estado ya no interesa)."""
        if self.proc is not None:
            Procs.kill_group(self.proc)
        self._close()

    def _close(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    # --- medidas ----------------------------------------------------------------------------
    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def tree_rss_kib(self) -> int:
        return sum(rss_kib(p) for p in [self.pid, *descendants(self.pid)])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid, tree=True)

    def cpu_split(self) -> tuple[float, float]:
        """(usuario, sistema) del proceso principal."""
        return cpu_split(self.pid)

    # --- trabajos ---------------------------------------------------------------------------
    def prepare_jobs(self, jobs: Sequence[tuple[str, bytes]]) -> list[tuple[Path, Path]]:
        """Escribe los trabajos en spool/tmp/ (aún no entregados); devuelve (tmp, destino)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        pairs = []
        for name, data in jobs:
            tmp = self.tmp / f".{name}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            pairs.append((tmp, self.incoming / name))
        return pairs

    @staticmethod
    def deliver(pairs: Sequence[tuple[Path, Path]]) -> list[float]:
        """Entrega con rename() lo preparado; devuelve ``time.time()`` de justo antes de cada rename."""
        times = []
        rename, now = os.rename, time.time
        for tmp, target in pairs:
            times.append(now())
            rename(tmp, target)
        return times

    def drop(self, jobs: Sequence[tuple[str, bytes]]) -> list[float]:
        return self.deliver(self.prepare_jobs(jobs))

    def wait_events(self, name: str, ids: Iterable[str], timeout: float, what: str = "") -> None:
        """Espera a que todos los ``ids`` tengan el evento ``name`` (o falla si el daemon murió)."""
        wanted = set(ids)
        # Mientras tanto sólo se cuentan las líneas de ese evento (``bytes.count``, sin analizar el
        # JSON): analizar cada evento en vivo quitaba CPU al daemon en los mismos 2 núcleos. El
        # análisis completo (y la decisión) empieza cuando ya hay tantas líneas como ids faltan.
        needle = b'"event":"' + name.encode() + b'"'
        missing_at_start = sum(1 for i in wanted if i not in self.events.ids(name))
        counted = _LineCounter(self.event_log, self.events.offset, needle)

        def check() -> bool:
            self.alive_or_raise()
            if counted.update() < missing_at_start:
                return False
            self.events.poll()
            got = self.events.ids(name)
            return all(i in got for i in wanted)

        try:
            wait_until(check, timeout, interval=0.005, what=what or f"{len(wanted)} x {name}")
        except TimeoutError:
            got = self.events.ids(name)
            missing = [i for i in wanted if i not in got]
            problems = {k: v[-3:] for k, v in self.events.samples.items()}
            raise TimeoutError(f"{len(missing)} of {len(wanted)} jobs lack {name} (e.g. {missing[:3]}); "
                               f"recent problems: {problems}; stderr: {self.stderr_tail()[-800:]}") from None

    def clear_outputs(self) -> None:
        """Borra salidas y registros terminales entre rondas (el daemon no los necesita)."""
        for folder in (self.output, self.done, self.spool / "failed", self.spool / "rejected"):
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)

    def terminal_counts(self) -> dict[str, int]:
        counts = {}
        for folder in ("incoming", "done", "failed", "rejected"):
            path = self.spool / folder
            counts[folder] = sum(1 for _ in os.scandir(path)) if path.is_dir() else 0
        active = self.spool / "active"
        counts["active"] = sum(len(os.listdir(p)) for p in active.iterdir() if p.is_dir()) if active.is_dir() else 0
        return counts
