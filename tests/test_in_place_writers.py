"""Productores que escriben en el sitio (issue 14): cp, ``cat >``, tee, rsync (con y sin
``--inplace``), ``curl -o``, vim y un guion que escribe en dos mitades con una pausa. Cada trabajo
termina done con TODOS sus campos (sha256 comprobado, filename y output_dir respetados), y los
restos de editor (``4913``, ``x~``, ``.x.swp``) se ignoran: nada va a rejected/.

El daemon real, el servidor HTTP real en 127.0.0.1 (que también sirve los archivos de trabajo a
``curl -o``) y las herramientas reales del sistema.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon.settle import ArrivalTracker
from tests.support.daemon_proc import DaemonProcess, wait_until
from tests.support.http_server import TestServer

TOOLS = ("cp", "cat", "tee", "rsync", "rsync-inplace", "curl", "vim", "two-halves")


def _job_text(job_id: str, url: str, body: bytes) -> str:
    return (f"url: {url}\nid: {job_id}\nsha256: {hashlib.sha256(body).hexdigest()}\n"
            f"filename: {job_id}-final.bin\noutput_dir: inplace/{job_id}\n")


def _write_with(tool: str, text: str, source: Path, target: Path, server: TestServer) -> subprocess.Popen[bytes]:
    source.write_text(text)
    commands = {
        "cp": ["cp", str(source), str(target)],
        "cat": ["sh", "-c", f'cat "{source}" > "{target}"'],
        "tee": ["sh", "-c", f'tee "{target}" < "{source}" > /dev/null'],
        "rsync": ["rsync", str(source), str(target)],
        "rsync-inplace": ["rsync", "--inplace", str(source), str(target)],
        "curl": ["curl", "-sS", "--fail", "-o", str(target), server.add(f"/{source.name}", data=text.encode())],
        # vim en modo ex por lotes: escribe el búfer en el sitio (y deja 4913 y compañía por el camino).
        "vim": ["vim", "-es", "-u", "NONE", "-c", f"write {target}", "-c", "quit!", str(source)],
        # Una sola apertura: primera línea (la URL), flush, 2 s de pausa, el resto.
        "two-halves": ["python3", "-c", "import sys, time\n"
                       "first, rest = open(sys.argv[1]).read().split('\\n', 1)\n"
                       "f = open(sys.argv[2], 'w'); f.write(first + '\\n'); f.flush(); time.sleep(2)\n"
                       "f.write(rest); f.close()", str(source), str(target)],
    }
    return subprocess.Popen(commands[tool], stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("tool", TOOLS)
def test_a_job_file_written_in_place_is_claimed_only_when_complete(tmp_path: Path, test_server: TestServer,
                                                                   tool: str) -> None:
    binary = {"rsync-inplace": "rsync", "two-halves": "python3", "cat": "sh", "tee": "sh"}.get(tool, tool)
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")
    body = tool.encode() * 3000
    url = test_server.add(f"/{tool}.bin", data=body)
    with DaemonProcess(tmp_path) as daemon:
        job_id = f"inplace-{tool}"
        writer = _write_with(tool, _job_text(job_id, url, body), tmp_path / f"{job_id}.src",
                             daemon.spool / "incoming" / f"{job_id}.yaml", test_server)
        assert writer.wait(30) == 0
        folder, record = daemon.wait_record(job_id, 30)
        assert folder == "done", record
        assert record["job"]["sha256"] == hashlib.sha256(body).hexdigest()
        published = daemon.output / "inplace" / job_id / f"{job_id}-final.bin"
        assert record["path"] == str(published) and published.read_bytes() == body
        # Ni una media copia rechazada ni un resto de editor en rejected/.
        assert daemon.rejected() == [], daemon.rejected()
        assert daemon.events(name="job.rejected") == []


def test_editor_droppings_are_ignored_not_rejected(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path) as daemon:
        incoming = daemon.spool / "incoming"
        for name in ("4913", "clip.yaml~", "#clip.yaml#", "clip.yaml.swp", "clip.save", "clip.yaml.part"):
            (incoming / name).write_text("junk")
        os.sync()
        daemon.drop_job({"id": "marker", "url": "http://127.0.0.1:9/x"})  # un trabajo cualquiera, para esperar
        daemon.wait_record("marker", 30)
        assert daemon.rejected() == []
        assert sorted(os.listdir(incoming)) == sorted(("4913", "clip.yaml~", "#clip.yaml#", "clip.yaml.swp",
                                                       "clip.save", "clip.yaml.part"))


def test_a_burst_of_renamed_job_files_is_claimed_without_waiting_for_settle(tmp_path: Path,
                                                                           test_server: TestServer) -> None:
    """Una ráfaga de renames (el protocolo) se reclama según llega, aunque ``settle`` sea largo.

    Las pistas de inotify que llegan mientras el daemon lista incoming/ son de nombres que ese
    listado no vio; si el ``prune`` de después las olvidara, esos nombres (ya completos) parecerían
    escritos en el sitio y esperarían ``settle`` (60 s aquí) en vez de reclamarse ya.
    """
    url = test_server.add("/burst.bin", data=b"b" * 1024)
    count = 3000
    with DaemonProcess(tmp_path, max_concurrent=2, lookahead=count, max_queued=count,
                       producers={"settle": "60s"}) as daemon:
        staging = daemon.spool / "tmp"
        ids = [f"burst-{i:05d}" for i in range(count)]
        for job_id in ids:
            (staging / f"{job_id}.yaml").write_text(f"url: {url}\nid: {job_id}\n")
        # Un productor aparte renombra todo de golpe, mientras el daemon lista y reclama.
        script = ("import os, sys\nsrc, dst = sys.argv[1], sys.argv[2]\n"
                  "for name in sorted(os.listdir(src)): os.rename(os.path.join(src, name), os.path.join(dst, name))\n")
        subprocess.run(["python3", "-c", script, str(staging), str(daemon.spool / "incoming")], check=True, timeout=60)
        wait_until(lambda: daemon.count_events("job.received") >= count, 30,
                   what=f"{count} job.received well before settle (60 s)")
        received = {e["correlation_id"] for e in daemon.events(name="job.received")}
        assert received == set(ids)
        assert daemon.rejected() == []


def test_hints_that_arrive_during_a_listing_survive_the_prune_after_it() -> None:
    """El mecanismo de la prueba anterior, paso a paso (sin hilo lector: las llamadas en su orden)."""
    tracker = ArrivalTracker()
    now = time.time()
    young = int(now * 1e9)  # mtime y ctime de ahora: sin pista, el nombre espera ``settle`` entero
    tracker.observe("before.yaml", True, False, False)  # llegó antes del listado, que no lo vio: se fue
    tracker.mark()  # empieza un listado de incoming/
    tracker.observe("during.yaml", True, False, False)  # renombrado mientras se listaba
    tracker.prune(set())  # el listado no vio ninguno de los dos
    assert tracker.wait_for("during.yaml", young, young, settle=60, now=now) == 0.0
    assert tracker.wait_for("before.yaml", young, young, settle=60, now=now) == 60.0
    tracker.mark()  # el listado siguiente tampoco lo ve: ya no está en incoming/
    tracker.prune(set())
    assert tracker.wait_for("during.yaml", young, young, settle=60, now=now) == 60.0
