"""Ayudante del escenario 1: cuánto cuesta cada parte del trabajo de un cuerpo grande, por separado.

Uso: ``python -m bench._body_parts MODO RESULTADO.json URL SALIDA`` descarga URL con una sesión
como la del daemon (``new_session``: aiohttp, ``read_bufsize`` de 256 KiB, ``iter_any``) y, según
MODO, sólo recibe (``receive``), recibe y escribe en SALIDA (``write``), o recibe, escribe y resume
con sha256 en el mismo hilo, una parte tras otra (``write_sha256``). ``python -m bench._body_parts
sha256 RESULTADO.json BYTES`` sólo resume BYTES bytes que ya están en memoria (trozos de 256 KiB);
``python -m bench._body_parts sha256_file RESULTADO.json RUTA`` resume un archivo que ya está en la
caché de páginas leyéndolo en su sitio (``mmap`` por ventanas de 4 MiB), como el hilo de hash del
daemon en el camino ``splice``.
Escribe en RESULTADO.json su tiempo de pared y su CPU medidos dentro del proceso (sin el arranque
del intérprete), para que el escenario compare al daemon con el coste de cada parte.
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
import resource
import sys
import time
from pathlib import Path

import orjson

from daemon.downloaders.http_session import new_session

MODES = ("receive", "write", "write_sha256", "sha256", "sha256_file")
_WINDOW = 4 * 1024 * 1024  # la ventana del hilo de hash del daemon (``http_splice._HASH_BLOCK``)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fetch(url: str, out: Path, mode: str) -> dict[str, float]:
    async with new_session("videonote-dl-bench", True, allow_private=True) as session:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600) if mode != "receive" else -1
        hasher = hashlib.sha256()
        size = 0
        started, cpu0 = time.perf_counter(), _cpu()
        try:
            async with session.get(url) as response:
                response.raise_for_status()
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if fd >= 0:
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    if mode == "write_sha256":
                        hasher.update(chunk)
        finally:
            if fd >= 0:
                os.close(fd)
        return {"wall": time.perf_counter() - started, "cpu": _cpu() - cpu0, "size": size}


def _sha256_only(size: int) -> dict[str, float]:
    chunk = os.urandom(256 * 1024)
    hasher = hashlib.sha256()
    started, cpu0 = time.perf_counter(), _cpu()
    for _ in range(size // len(chunk)):
        hasher.update(chunk)
    hasher.update(chunk[: size % len(chunk)])
    return {"wall": time.perf_counter() - started, "cpu": _cpu() - cpu0, "size": size}


def _sha256_file(path: Path) -> dict[str, float]:
    hasher = hashlib.sha256()
    started, cpu0 = time.perf_counter(), _cpu()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size, done = os.fstat(fd).st_size, 0
        while done < size:
            end = min(size, done + _WINDOW)
            with mmap.mmap(fd, end - done, prot=mmap.PROT_READ, offset=done) as mapped, memoryview(mapped) as view:
                hasher.update(view)
            done = end
    finally:
        os.close(fd)
    return {"wall": time.perf_counter() - started, "cpu": _cpu() - cpu0, "size": size}


def main() -> int:
    mode, result = sys.argv[1], sys.argv[2]
    if mode not in MODES:
        print(f"mode must be one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    if mode == "sha256":
        measured = _sha256_only(int(sys.argv[3]))
    elif mode == "sha256_file":
        measured = _sha256_file(Path(sys.argv[3]))
    else:
        measured = asyncio.run(_fetch(sys.argv[3], Path(sys.argv[4]), mode))
    Path(result).write_bytes(orjson.dumps(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
