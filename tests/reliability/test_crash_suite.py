"""Caídas: el daemon muere con SIGKILL en momentos al azar y en cada punto instrumentado.

Al final, ``verify_spool`` debe no encontrar nada: cada trabajo con un único registro, cada
archivo publicado completo, nada parcial ni duplicado, active/ e incoming/ vacíos, ningún
temporal tras una pasada del recolector, y los eventos de cada trabajo en una secuencia válida.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from daemon.config import load_settings
from daemon.faultpoints import CRASH_POINTS
from daemon.reaper import reap_temp_root
from daemon.verify import verify_spool
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import Behavior, TestServer


def _finished(daemon: DaemonProcess, ids: list[str]) -> bool:
    return all(daemon.record(job_id) is not None for job_id in ids)


def _final_checks(daemon: DaemonProcess, expected: dict[str, str | None]) -> None:
    settings = load_settings(daemon.config_path)
    report = reap_temp_root(settings.temp_dir, max_age=0)
    assert report.errors == 0
    assert not daemon.temp_dirs(), daemon.temp_dirs()
    result = verify_spool(settings, expected=expected, daemon_stopped=True)
    assert result.ok, "\n".join(result.problems[:30])
    assert result.published == sum(1 for sha in expected.values() if sha is not None)


@pytest.mark.slow
@pytest.mark.parametrize("file_io", ["auto", "inline"])
def test_random_sigkills_lose_nothing(tmp_path: Path, test_server: TestServer, file_io: str) -> None:
    rng = random.Random(20261124)
    expected: dict[str, str | None] = {}
    for n in range(100):
        size = rng.choice([1_000, 50_000, 400_000, 2_000_000])
        data = rng.randbytes(size)
        slow = n % 7 == 0
        test_server.add(f"/c{n}.bin", Behavior(data=data, rate=1_000_000 if slow else None, chunk=64 * 1024))
        expected[f"c{n}"] = hashlib.sha256(data).hexdigest()
    daemon = DaemonProcess(tmp_path, max_concurrent=6, rescan_interval="500ms", file_io=file_io,
                           download={"backoff": "50ms", "retries": 5})
    daemon.start()
    for n in range(100):
        daemon.drop_job({"url": test_server.url(f"/c{n}.bin"), "id": f"c{n}"})
    ids = list(expected)
    for _ in range(15):
        time.sleep(rng.uniform(0.05, 0.6))
        daemon.kill9()
        daemon.start()
    wait_until(lambda: _finished(daemon, ids), 180, interval=0.2, what="all 100 jobs to finish")
    assert daemon.stop() == 0
    _final_checks(daemon, expected)
    assert daemon.count_events("job.requeued") > 0  # las caídas sí interrumpieron trabajos


# En un hilo (un archivo de 3 MiB) y en el bucle (``file_io: inline``): con 300 KiB el cuerpo se
# cierra y se publica en el bucle; con 900 KiB se escribe por lotes (pasa por ``mid_download``) y
# sólo la publicación y el registro van en el bucle.
CRASH_CASES = [pytest.param(point, "auto", 3 * 1024 * 1024, id=point) for point in CRASH_POINTS] + [
    pytest.param(point, "inline", size, id=f"{point}-inline-{size // 1024}k")
    for size in (300 * 1024, 900 * 1024) for point in CRASH_POINTS
    if not (point == "mid_download" and size < 512 * 1024)]


@pytest.mark.parametrize(("point", "file_io", "size"), CRASH_CASES)
def test_crash_at_each_instrumented_step(tmp_path: Path, test_server: TestServer, point: str, file_io: str,
                                         size: int) -> None:
    data = os.urandom(size)
    url = test_server.add("/p.bin", Behavior(data=data))
    daemon = DaemonProcess(tmp_path, file_io=file_io)
    daemon.start(env={"VIDEONOTE_DL_TEST_HOOKS": "1", "VIDEONOTE_DL_CRASH_AT": point})
    daemon.drop_job({"url": url, "id": "p1"})
    assert daemon.proc is not None
    daemon.proc.wait(30)
    assert daemon.proc.returncode == -9, f"the daemon did not die at {point}"
    daemon._stderr.close()
    daemon.start()  # sin ganchos: debe terminar el trabajo
    folder, record = daemon.wait_record("p1")
    assert folder == "done", record
    assert [e["file_io"] for e in daemon.events(name="daemon.file_io")][-1:] == [
        "inline" if file_io == "inline" else "thread"]
    assert daemon.stop() == 0
    _final_checks(daemon, {"p1": hashlib.sha256(data).hexdigest()})
    published = list(daemon.output.iterdir())
    assert [p.name for p in published] == ["p.bin"], published  # ni duplicado ni renombrado
