"""Qué sistema de archivos hay bajo una ruta (``statfs``), y si inotify ve lo que escriben otros hosts.

inotify sólo informa de lo que hace este núcleo: en un sistema de archivos de red (NFS, CIFS/SMB,
CephFS...) lo que escribe otro host no genera ningún evento. Ahí ``watch: auto`` elige ``poll``
(sólo reescaneos periódicos). La detección usa el número mágico de ``statfs(2)``, que el núcleo
fija por tipo de sistema de archivos; sólo se listan los que son de red sin duda. FUSE no está:
puede ser local o de red (sshfs, ceph-fuse) y su número no lo dice; ahí se pone ``watch: poll`` a
mano.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NETWORK_FILESYSTEMS", "FsKind", "choose_watch", "fs_kind"]

# Números mágicos de linux/magic.h (y de cada módulo) de sistemas de archivos compartidos por red
# o por varios hosts.
NETWORK_FILESYSTEMS: dict[int, str] = {
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x517B: "smb",
    0x00C36400: "ceph",
    0x5346414F: "afs",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x7461636F: "ocfs2",
    0x01161970: "gfs2",
}


class _StatfsBuffer(ctypes.Structure):
    # ``struct statfs`` empieza por ``f_type`` (un ``long``); el resto se reserva con holgura.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


@dataclass(frozen=True, slots=True)
class FsKind:
    """El tipo de sistema de archivos de una ruta: su número mágico y un nombre si es de red."""

    magic: int | None
    network: str | None  # "nfs", "cifs", "ceph"...; None si es local o no se sabe

    @property
    def label(self) -> str:
        if self.network is not None:
            return self.network
        return "unknown" if self.magic is None else f"local (0x{self.magic:x})"


def fs_kind(path: Path) -> FsKind:
    """``statfs(path)``: el número mágico y, si es un sistema de archivos de red conocido, su nombre."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        buffer = _StatfsBuffer()
        if libc.statfs(os.fsencode(path), ctypes.byref(buffer)) != 0:
            return FsKind(None, None)
    except (OSError, AttributeError):
        return FsKind(None, None)
    magic = buffer.f_type & 0xFFFFFFFF
    return FsKind(magic, NETWORK_FILESYSTEMS.get(magic))


def choose_watch(configured: str, spool: Path) -> tuple[str, str]:
    """``watch`` efectivo (``inotify`` o ``poll``) y por qué, a partir del configurado y del spool."""
    if configured in ("inotify", "poll"):
        return configured, "set in the config"
    kind = fs_kind(spool)
    if kind.network is not None:
        return "poll", f"the spool is on {kind.network}: inotify does not see what other hosts write"
    return "inotify", f"the spool is on a {kind.label} file system"
