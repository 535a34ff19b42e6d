"""El daemon real como subproceso, para pruebas de extremo a extremo.

``DaemonProcess(tmp_path, **overrides)`` escribe un config.yaml bajo ``tmp_path`` (todas las
rutas dentro), arranca ``python -m daemon run`` y ofrece ayudas: dejar trabajos como lo haría un
productor (tmp/ y rename a incoming/), esperar registros, leer eventos, señales y kill -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = ["DaemonProcess", "wait_until"]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
    error: Callable[[str], Exception] = AssertionError,
) -> Any:
    """Espera a que ``predicate()`` sea verdadero y devuelve su valor; si vence el plazo, lanza
    ``error(mensaje)`` (``AssertionError`` en las pruebas; los bancos piden ``TimeoutError``).

    El único ``wait_until`` del proyecto: lo usan las pruebas, los bancos (bench/common.py) y el
    contenedor de systemd (tests/support/nspawn.py). El plazo sólo evita colgarse: no mide nada.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


class DaemonProcess:
    """Un daemon de videonote-dl en un directorio propio."""

    def __init__(self, base: Path, **overrides: Any) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "spool_dir": "spool", "temp_dir": "tmp", "output_dir": "out", "event_log": "log/events.jsonl",
            "status_file": "run/status.json", "max_concurrent": 4, "rescan_interval": "1s",
            "shutdown_grace": "5s", "log_level": "info",
            "download": {"allow_private_networks": True, "backoff": "50ms", "timeout": "30s"},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        self.config = config
        self.config_path = base / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        # Las rutas salen de la configuración (relativas a ``base``, como hace el daemon con las
        # del config.yaml): un spool_dir u output_dir compartido se respeta también aquí.
        self.spool = self._path(config["spool_dir"])
        self.temp_root = self._path(config["temp_dir"])
        self.output = self._path(config["output_dir"])
        self.event_log = self._path(config["event_log"])
        self.status_file = self._path(config["status_file"])
        self.proc: subprocess.Popen[bytes] | None = None
        self._seq = 0

    def _path(self, value: str | Path) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base / path

    # --- proceso ------------------------------------------------------------------------
    def start(self, wait_ready: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        ready_before = self.count_events("daemon.ready")
        self.stderr_path = self.base / f"stderr.{int(time.time() * 1000)}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        if wait_ready:
            wait_until(lambda: self._ready(ready_before) or self.proc.poll() is not None, 30, what="daemon ready")
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.stderr_text()}")
        return self

    def _ready(self, ready_before: int) -> bool:
        """Listo: un daemon.ready nuevo en el registro, o su archivo de estado con su pid."""
        if self.count_events("daemon.ready") > ready_before:
            return True
        try:
            status = orjson.loads(self.status_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False
        return status.get("pid") == self.pid and status.get("state") == "running"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM y espera; devuelve el código de salida."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self._stderr.close()

    # --- trabajos -----------------------------------------------------------------------
    def drop_job(self, job: dict[str, Any] | str | bytes, name: str | None = None) -> str:
        """Deja un trabajo como un productor: escribe en tmp/ y lo renombra a incoming/."""
        self._seq += 1
        if isinstance(job, dict):
            data = yaml.safe_dump(job).encode()
            name = name or f"{job.get('id', f'job{self._seq}')}.yaml"
        else:
            data = job.encode() if isinstance(job, str) else job
            name = name or f"job{self._seq}.yaml"
        (self.spool / "tmp").mkdir(parents=True, exist_ok=True)
        (self.spool / "incoming").mkdir(parents=True, exist_ok=True)
        tmp = self.spool / "tmp" / f".{name}.{self._seq}"
        tmp.write_bytes(data)
        os.rename(tmp, self.spool / "incoming" / name)
        return name

    def record(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        for folder in ("done", "failed"):
            path = self.spool / folder / f"{job_id}.json"
            if path.exists():
                return folder, orjson.loads(path.read_bytes())
        return None

    def wait_record(self, job_id: str, timeout: float = 60.0) -> tuple[str, dict[str, Any]]:
        def check() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon died ({self.proc.returncode}): {self.stderr_text()}")
            return self.record(job_id)

        return wait_until(check, timeout, what=f"terminal record of {job_id}")

    def rejected(self) -> list[str]:
        folder = self.spool / "rejected"
        return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".reason")) if folder.exists() else []

    def temp_dirs(self) -> list[str]:
        return sorted(p.name for p in self.temp_root.glob("videonote_dl_*")) if self.temp_root.exists() else []

    def wait_temp_dirs_gone(self, timeout: float = 15) -> None:
        """Espera a que no quede ningún directorio aislado: el registro terminal se escribe antes de
        borrar el del trabajo, así que justo tras ``wait_record`` aún puede existir un instante."""
        wait_until(lambda: not self.temp_dirs(), timeout, interval=0.02,
                   what="the job's temp dir to go after its outcome")

    def active_files(self) -> list[str]:
        active = self.spool / "active"
        return sorted(str(p.relative_to(active)) for p in active.rglob("*") if p.is_file()) if active.exists() else []

    # --- eventos ------------------------------------------------------------------------
    def events(self, job_id: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.event_log.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            event = orjson.loads(line)
            if job_id is not None and event.get("correlation_id") != job_id:
                continue
            if name is not None and event.get("event") != name:
                continue
            found.append(event)
        return found

    def iter_event_names(self, job_id: str) -> Iterator[str]:
        return (e["event"] for e in self.events(job_id))

    def count_events(self, name: str) -> int:
        try:
            data = self.event_log.read_bytes()
        except FileNotFoundError:
            return 0
        return data.count(f'"event":"{name}"'.encode())
