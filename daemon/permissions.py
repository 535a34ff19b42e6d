"""Un mensaje por cada problema de permisos: qué ruta, qué grupo hace falta y la orden que lo arregla."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

__all__ = ["permission_message"]


def _owner_of(path: Path) -> tuple[Path, os.stat_result] | None:
    """La ruta existente más cercana (``path`` o un antecesor) que se puede examinar."""
    for candidate in (path, *path.parents):
        try:
            return candidate, os.stat(candidate)
        except OSError:
            continue
    return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def permission_message(path: Path | str, action: str, config: str, write: bool = False) -> str:
    """``cannot <action> <path>: permission denied`` con el grupo dueño y cómo entrar en él.

    ``config`` nombra la configuración en uso (el mensaje lo cita, por si la ruta no es la esperada).
    """
    path = Path(path)
    user = _user(os.geteuid())
    head = f"cannot {action} {path}: permission denied ({config})"
    found = _owner_of(path)
    if found is None:
        return f"{head}; check the path and its permissions"
    where, st = found
    group = _group(st.st_gid)
    # Si se pudo examinar la ruta misma, el problema es su modo; si no, la carpeta que no deja pasar.
    subject = "it" if where == path else f"its folder {where}"
    if st.st_gid not in os.getgroups() and st.st_gid != os.getegid():
        return (f"{head}. {subject[0].upper() + subject[1:]} belongs to group '{group}' and user '{user}' is not "
                f"in it: run `sudo usermod -aG {group} {user}`, then log in again (or `newgrp {group}` in this "
                "shell); see docs/operations.md, 'Who may do what'")
    mode = stat.filemode(st.st_mode)
    return (f"{head}. User '{user}' is in group '{group}', but {subject} is {mode}: the group lacks the right; "
            f"an administrator can fix it with `sudo systemd-tmpfiles --create` (installed layout) or "
            f"`chmod g+{'w' if write else 'r'}X {where}`")
