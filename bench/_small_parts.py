"""Ayudante del escenario 2: el suelo de un trabajo pequeño, sin el daemon alrededor.

Uso: ``python -m bench._small_parts MODO RESULTADO.json LISTA_DE_URLS CARPETA``. Descarga cada URL
de la lista, 8 a la vez (el ``max_concurrent`` del escenario), con una sesión como la del daemon
(``new_session``: aiohttp, ``iter_any``), en un solo bucle de asyncio. Según MODO:

- ``get``: sólo la petición y el cuerpo, en memoria;
- ``steps``: la petición más los pasos de archivo que el daemon da por trabajo en tmpfs, en su
  orden y en el bucle (``file_io: inline``): reclamar el archivo del trabajo con ``rename`` y
  leerlo, crear el directorio aislado y su cerrojo (``flock``), escribir el cuerpo en un ``.part``
  con sha256, fsync y ``rename`` al nombre final, publicar con ``link`` y fsync de la carpeta, el
  registro terminal (fsync de la carpeta de reclamos, temporal con fsync, ``link`` a done/, fsync
  de done/), y limpiar (el reclamo, el directorio aislado);
- ``steps_x2``: lo mismo en dos procesos (la mitad de la lista cada uno, 8 a la vez cada uno), que
  empiezan a la vez tras calentar: lo más que dan los dos núcleos con un proceso por núcleo, como
  una flota de dos daemons. El tiempo va del primer comienzo al último final;
- ``events`` y ``events_x2``: ``steps`` (y ``steps_x2``) más el registro de eventos que promete el
  daemon: los 8 eventos de un trabajo pequeño, cada uno con sus claves, en el orden del daemon, una
  línea JSON (orjson, marca de tiempo de ``units.utc_timestamp``) con un ``write`` en O_APPEND y su
  eco de una línea (el stderr del daemon, que systemd lleva al journal), como ``daemon/events.py``;
  el eco va a un archivo, como el stderr del daemon en el banco;
- ``batched`` y ``batched_x2``: como ``events``, pero las líneas de cada trabajo se juntan y se
  escriben con un solo ``write`` (y otro el eco) al terminar el trabajo: la cota de "escrituras de
  eventos por lotes" que aún deja cada trabajo en el registro antes de acabar.

Fuera de ``events`` no hay eventos; en ningún modo hay análisis del archivo del trabajo, ni cola, ni
tareas por trabajo: es lo que cuesta en Python, con aiohttp, lo que el daemon garantiza, y nada más.
Escribe en RESULTADO.json el tiempo de pared y la CPU medidos dentro del proceso (sin el arranque
del intérprete).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

from daemon.downloaders.http_session import new_session
from daemon.units import utc_timestamp

MODES = ("get", "steps", "steps_x2", "events", "events_x2", "batched", "batched_x2")
CONCURRENCY = 8
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _layout(root: Path, n: int) -> dict[str, Path]:
    folders = {name: root / name for name in ("incoming", "active", "tmp", "work", "out", "done")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i in range(n):  # como los del escenario: escritos antes de medir
        (folders["incoming"] / f"j{i:05d}.yaml").write_bytes(b"url: x\nid: j%05d\n" % i)
    return folders


async def _fetch(session: aiohttp.ClientSession, url: str, sink: int, hasher: hashlib._Hash | None) -> int:
    size = 0
    async with session.get(url) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if sink >= 0:
                _write_all(sink, chunk)
            if hasher is not None:
                hasher.update(chunk)
    return size


class _EventLog:
    """Una línea JSON por evento con un ``write`` (O_APPEND) y su eco de una línea, como el daemon."""

    def __init__(self, folder: Path, batched: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.fd = os.open(folder / "events.jsonl", flags, 0o640)
        self.echo_fd = os.open(folder / "stderr.log", flags, 0o640)
        self.pending: dict[str, tuple[list[bytes], list[bytes]]] | None = {} if batched else None

    def __call__(self, event: str, job: str, **fields: object) -> None:
        line = orjson.dumps({"ts": utc_timestamp(time.time()), "level": "info", "event": event,
                             "correlation_id": job, **fields}, option=orjson.OPT_APPEND_NEWLINE)
        echo = f"INFO {event} [{job}] {' '.join(f'{key}={value}' for key, value in fields.items())}\n".encode()
        if self.pending is None:
            _write_all(self.fd, line)
            _write_all(self.echo_fd, echo)
            return
        lines, echoes = self.pending.setdefault(job, ([], []))
        lines.append(line)
        echoes.append(echo)
        if event == "tempdir.removed":  # el último evento del trabajo: sus líneas, de una vez
            del self.pending[job]
            _write_all(self.fd, b"".join(lines))
            _write_all(self.echo_fd, b"".join(echoes))

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.echo_fd)


def _no_event(event: str, job: str, **fields: object) -> None:
    return None


async def _job(session: aiohttp.ClientSession, i: int, url: str, f: dict[str, Path], fds: dict[str, int],
               emit: Callable[..., None] = _no_event) -> int:
    job = f"j{i:05d}"
    claimed = os.path.join(f["active"], f"{job}.yaml")
    os.rename(os.path.join(f["incoming"], f"{job}.yaml"), claimed)
    with open(claimed, "rb") as spec:
        spec.read()
    emit("job.received", job, file=f"{job}.yaml", url=url, downloader="auto", id_source="explicit", submitter=0)
    emit("job.queued", job, priority=0, downloader="auto", queued=1, running=0)
    work = os.path.join(f["work"], f"videonote_dl_{job}")
    os.mkdir(work, 0o700)
    lock = os.open(os.path.join(work, ".lock"), _NEW, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    emit("tempdir.created", job, temp_dir=work, reused=False)
    emit("job.started", job, attempt=1, temp_dir=work)
    part = os.path.join(work, f"{job}.bin.part")
    sink = os.open(part, _NEW, 0o600)
    hasher = hashlib.sha256()
    try:
        size = await _fetch(session, url, sink, hasher)
        os.fsync(sink)
    finally:
        os.close(sink)
    sha256 = hasher.hexdigest()
    final = os.path.join(work, f"{job}.bin")
    os.rename(part, final)
    os.link(final, f"{job}.bin", dst_dir_fd=fds["out"])
    os.fsync(fds["out"])
    published = os.path.join(f["out"], f"{job}.bin")
    emit("job.published", job, path=published, renamed=False, size=size, sha256=sha256)
    record = orjson.dumps({"id": job, "status": "succeeded", "size": size}, option=orjson.OPT_INDENT_2)
    os.fsync(fds["active"])
    tmp = os.path.join(f["tmp"], f".{job}.tmp")
    fd = os.open(tmp, _NEW, 0o644)
    try:
        _write_all(fd, record)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, os.path.join(f["done"], f"{job}.json"))
    os.unlink(tmp)
    os.fsync(fds["done"])
    emit("job.recorded", job, record=os.path.join(f["done"], f"{job}.json"), outcome="succeeded")
    emit("job.succeeded", job, attempt=1, path=published, size=size, sha256=sha256, duration_s=0.001)
    os.unlink(claimed)
    os.close(lock)
    shutil.rmtree(work)
    emit("tempdir.removed", job, temp_dir=work)
    return size


async def _run(mode: str, urls: list[str], root: Path, barrier: tuple[int, int] | None = None) -> dict[str, float]:
    folders = _layout(root, len(urls)) if mode != "get" else {}
    fds = {name: os.open(folders[name], _DIR) for name in ("out", "active", "done")} if folders else {}
    log = _EventLog(root, batched=mode == "batched") if mode in ("events", "batched") else None
    emit: Callable[..., None] = log if log is not None else _no_event
    gate = asyncio.Semaphore(CONCURRENCY)

    async with new_session("videonote-dl-bench", True, allow_private=True) as session:
        async def one(i: int, url: str) -> int:
            async with gate:
                if mode == "get":
                    return await _fetch(session, url, -1, None)
                return await _job(session, i, url, folders, fds, emit)

        await _fetch(session, urls[0], -1, None)  # la conexión y lo que aiohttp carga una vez, fuera
        if barrier is not None:  # listo; esperar la salida común
            os.write(barrier[0], b"r")
            os.read(barrier[1], 1)
        started, cpu0 = time.time(), _cpu()
        sizes = await asyncio.gather(*(one(i, url) for i, url in enumerate(urls)))
        ended, cpu = time.time(), _cpu() - cpu0
    for fd in fds.values():
        os.close(fd)
    if log is not None:
        log.close()
    return {"wall": ended - started, "start": started, "end": ended, "cpu": cpu, "files": len(sizes),
            "size": sum(sizes)}


def _two_processes(mode: str, urls: list[str], root: Path) -> dict[str, float]:
    """``mode`` (``steps``, ``events`` o ``batched``) en dos procesos hijos (fork) con la mitad de la lista cada uno,
    soltados a la vez."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    children: list[tuple[int, Path]] = []
    for half in range(2):
        out = root / f"half-{half}.json"
        pid = os.fork()
        if pid == 0:  # hijo: su mitad, su carpeta; sale sin volver al llamador
            code = 1
            try:
                measured = asyncio.run(_run(mode, urls[half::2], root / f"half-{half}", (ready_w, go_r)))
                out.write_bytes(orjson.dumps(measured))
                code = 0
            finally:
                os._exit(code)
        children.append((pid, out))
    for _ in children:
        os.read(ready_r, 1)
    os.write(go_w, b"g" * len(children))
    for pid, _ in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"child {pid} failed")
    halves = [orjson.loads(out.read_bytes()) for _, out in children]
    start, end = min(h["start"] for h in halves), max(h["end"] for h in halves)
    return {"wall": end - start, "start": start, "end": end, "cpu": sum(h["cpu"] for h in halves),
            "files": sum(h["files"] for h in halves), "size": sum(h["size"] for h in halves)}


def main() -> int:
    if len(sys.argv) != 5 or sys.argv[1] not in MODES:
        print(f"usage: python -m bench._small_parts {{{','.join(MODES)}}} RESULT.json URL_LIST FOLDER",
              file=sys.stderr)
        return 2
    mode, result, url_list, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    urls = [line for line in url_list.read_text().splitlines() if line]
    if mode.endswith("_x2"):
        measured = _two_processes(mode.removesuffix("_x2"), urls, folder)
    else:
        measured = asyncio.run(_run(mode, urls, folder))
    result.write_bytes(orjson.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
