"""``videonote-dl demo``: un primer trabajo que funciona sin red.

Sirve un archivo generado en 127.0.0.1 (un puerto libre, a ritmo limitado para que se vea el
progreso), lo envía al daemon que ya corre como lo haría ``submit --wait`` (con su sha256, que el
daemon verifica antes de publicar) y espera el resultado. El daemon debe admitir loopback
(``download.allow_private_networks: true``, como el config.yaml de desarrollo del checkout).
"""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading
import time
from typing import Any

from daemon.config import Settings, config_label
from daemon.exit_codes import EXIT_CONFIG, EXIT_NOT_RUNNING
from daemon.units import format_size, parse_size

__all__ = ["DemoServer", "demo_payload", "run_demo"]

DEMO_FILENAME = "videonote-demo.bin"


def demo_payload(size: int) -> bytes:
    """Bytes deterministas (los mismos en cada demo): bloques sha256 encadenados."""
    out = bytearray()
    block = b"videonote-dl demo"
    while len(out) < size:
        block = hashlib.sha256(block).digest() * 1024  # 32 KiB por vuelta
        out += block
    return bytes(out[:size])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # la demo no ensucia la terminal
        pass

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != f"/{DEMO_FILENAME}":
            self.send_error(404)
            return
        data, rate = self.server.payload, self.server.rate
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        step = 64 * 1024
        started = time.monotonic()
        try:
            for offset in range(0, len(data), step):
                self.wfile.write(data[offset:offset + step])
                # A ritmo ``rate``: dormir lo que falta hasta donde deberíamos ir.
                ahead = (offset + step) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            return


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    payload: bytes
    rate: float


class DemoServer:
    """Servidor HTTP en 127.0.0.1 (puerto libre) con un único archivo."""

    def __init__(self, payload: bytes, rate: float) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.payload = payload
        self._httpd.rate = rate
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="demo-server")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{DEMO_FILENAME}"

    def __enter__(self) -> DemoServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def run_demo(settings: Settings, job_id: str, size: str, rate: str, timeout: float,
             daemon_state: tuple[dict[str, Any] | None, bool]) -> int:
    """Comprueba que el daemon corre y admite loopback, sirve el archivo, lo envía y espera."""
    from daemon.cli_errors import UsageError
    from daemon.progress_view import wait_for_job
    from daemon.submit import submit_job

    try:
        size_bytes, rate_bytes = parse_size(size), parse_size(rate)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if size_bytes <= 0 or rate_bytes <= 0:
        raise UsageError("--size and --rate must be above zero")
    _status, alive = daemon_state
    if not alive:
        print(f"videonote-dl: the daemon is not running ({config_label(settings)}); start it in another terminal "
              "with `make run` (checkout) or `sudo systemctl start videonote-dl`, then run the demo again",
              file=sys.stderr)
        return EXIT_NOT_RUNNING
    if not settings.download.allow_private_networks:
        where = settings.source or "the config"
        print(f"videonote-dl: the demo serves its file on 127.0.0.1, and {config_label(settings)} refuses loopback "
              "and private addresses (download.allow_private_networks: false, the safe default for an installed "
              f"daemon). To try the demo, set it to true in {where} and reload the daemon "
              "(`kill -HUP <pid from videonote-dl status>`, or `sudo systemctl reload videonote-dl`)", file=sys.stderr)
        return EXIT_CONFIG
    payload = demo_payload(size_bytes)
    with DemoServer(payload, float(rate_bytes)) as server:
        job = {"url": server.url, "id": job_id, "sha256": hashlib.sha256(payload).hexdigest()}
        submit_job(settings, job)
        print(f"serving {format_size(size_bytes)} at {server.url}; submitted as {job_id}", flush=True)
        code = wait_for_job(settings.spool_dir, settings.event_log, job_id, timeout)
    if code == 0:
        print(f"next: videonote-dl show {job_id}   (or: videonote-dl events --job {job_id})")
    return code
