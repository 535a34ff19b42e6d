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
  una flota de dos daemons. El tiempo va del primer comienzo al último final.

No hay eventos, ni análisis del archivo del trabajo, ni cola, ni tareas por trabajo: es lo que
cuesta en Python, con aiohttp, lo que el daemon garantiza, y nada más. Escribe en RESULTADO.json el
tiempo de pared y la CPU medidos dentro del proceso (sin el arranque del intérprete).
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
from pathlib import Path

import aiohttp
import orjson

from daemon.downloaders.http_session import new_session

MODES = ("get", "steps", "steps_x2")
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


async def _job(session: aiohttp.ClientSession, i: int, url: str, f: dict[str, Path], fds: dict[str, int]) -> int:
    job = f"j{i:05d}"
    claimed = os.path.join(f["active"], f"{job}.yaml")
    os.rename(os.path.join(f["incoming"], f"{job}.yaml"), claimed)
    with open(claimed, "rb") as spec:
        spec.read()
    work = os.path.join(f["work"], f"videonote_dl_{job}")
    os.mkdir(work, 0o700)
    lock = os.open(os.path.join(work, ".lock"), _NEW, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    part = os.path.join(work, f"{job}.bin.part")
    sink = os.open(part, _NEW, 0o600)
    hasher = hashlib.sha256()
    try:
        size = await _fetch(session, url, sink, hasher)
        os.fsync(sink)
    finally:
        os.close(sink)
    hasher.hexdigest()
    final = os.path.join(work, f"{job}.bin")
    os.rename(part, final)
    os.link(final, f"{job}.bin", dst_dir_fd=fds["out"])
    os.fsync(fds["out"])
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
    os.unlink(claimed)
    os.close(lock)
    shutil.rmtree(work)
    return size


async def _run(mode: str, urls: list[str], root: Path, barrier: tuple[int, int] | None = None) -> dict[str, float]:
    folders = _layout(root, len(urls)) if mode == "steps" else {}
    fds = {name: os.open(folders[name], _DIR) for name in ("out", "active", "done")} if folders else {}
    gate = asyncio.Semaphore(CONCURRENCY)

    async with new_session("videonote-dl-bench", True, allow_private=True) as session:
        async def one(i: int, url: str) -> int:
            async with gate:
                if mode == "get":
                    return await _fetch(session, url, -1, None)
                return await _job(session, i, url, folders, fds)

        await _fetch(session, urls[0], -1, None)  # la conexión y lo que aiohttp carga una vez, fuera
        if barrier is not None:  # listo; esperar la salida común
            os.write(barrier[0], b"r")
            os.read(barrier[1], 1)
        started, cpu0 = time.time(), _cpu()
        sizes = await asyncio.gather(*(one(i, url) for i, url in enumerate(urls)))
        ended, cpu = time.time(), _cpu() - cpu0
    for fd in fds.values():
        os.close(fd)
    return {"wall": ended - started, "start": started, "end": ended, "cpu": cpu, "files": len(sizes),
            "size": sum(sizes)}


def _two_processes(urls: list[str], root: Path) -> dict[str, float]:
    """``steps`` en dos procesos hijos (fork) con la mitad de la lista cada uno, soltados a la vez."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    children: list[tuple[int, Path]] = []
    for half in range(2):
        out = root / f"half-{half}.json"
        pid = os.fork()
        if pid == 0:  # hijo: su mitad, su carpeta; sale sin volver al llamador
            code = 1
            try:
                measured = asyncio.run(_run("steps", urls[half::2], root / f"half-{half}", (ready_w, go_r)))
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
    measured = _two_processes(urls, folder) if mode == "steps_x2" else asyncio.run(_run(mode, urls, folder))
    result.write_bytes(orjson.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
