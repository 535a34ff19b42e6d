"""Quién puede qué entre productores: cancelar el trabajo de otro, pedir prioridades altas.

Un trabajo es de quien dejó su archivo (el dueño, por ``fstat`` al reclamarlo). Lo puede
cancelar su dueño, root, el usuario del propio daemon y los miembros de ``producers.admin_group``
(por su grupo primario o como miembro listado). Los grupos se consultan con caché corta: un
cambio en /etc/group vale en un minuto.
"""

from __future__ import annotations

import grp
import os
import pwd
import time

__all__ = ["Authority"]

_CACHE_SECONDS = 60.0


class Authority:
    """Decide si un uid es administrador y si puede cancelar el trabajo de otro."""

    def __init__(self, admin_group: str = "") -> None:
        self.admin_group = admin_group
        self._cache: dict[int, tuple[float, bool]] = {}

    def set_admin_group(self, admin_group: str) -> None:
        if admin_group != self.admin_group:
            self.admin_group = admin_group
            self._cache.clear()

    def is_admin(self, uid: int) -> bool:
        if uid == 0 or uid == os.geteuid():
            return True
        if not self.admin_group:
            return False
        now = time.monotonic()
        cached = self._cache.get(uid)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        verdict = self._in_admin_group(uid)
        self._cache[uid] = (now, verdict)
        return verdict

    def _in_admin_group(self, uid: int) -> bool:
        try:
            group = grp.getgrnam(self.admin_group)
        except KeyError:
            return False
        try:
            user = pwd.getpwuid(uid)
        except KeyError:
            return False
        return user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem

    def may_cancel(self, canceller: int, submitter: int) -> bool:
        """El dueño del trabajo, root, el daemon o un administrador."""
        return canceller == submitter or self.is_admin(canceller)
