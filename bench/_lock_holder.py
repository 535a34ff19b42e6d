"""Ayudante del escenario 6: toma y mantiene un ``flock`` exclusivo sobre cada directorio
``videonote_dl_*`` de una raíz, como haría un daemon vivo con sus descargas en curso.

Uso: ``python -m bench._lock_holder RAIZ`` escribe ``LOCKED N`` en stdout cuando los tiene
todos y los mantiene hasta que se cierre su stdin.
"""

from __future__ import annotations

import fcntl
import os
import resource
import sys


def main() -> int:
    root = sys.argv[1]
    names = [n for n in os.listdir(root) if n.startswith("videonote_dl_")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(names) + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    fds = []
    for name in names:
        fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
    sys.stdout.write(f"LOCKED {len(fds)}\n")
    sys.stdout.flush()
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
