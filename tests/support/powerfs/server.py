"""powerfs: un sistema de archivos FUSE que pierde lo no durable en un "corte de luz" (como LazyFS).

Se ejecuta como proceso propio bajo ``/usr/bin/python3`` (pyfuse3 y trio de Debian), no en el venv:

    /usr/bin/python3 tests/support/powerfs/server.py BACKING MOUNTPOINT CONTROL_SOCKET [--seed N]
                     [--writeback none|prefix]

Modelo (estricto, el de POSIX):

- Al montar se carga todo ``BACKING`` en memoria: ése es el estado durable inicial.
- Los datos de un archivo son durables sólo con ``fsync``/``fdatasync`` de ese archivo.
- Un nombre (create, mknod, mkdir, symlink, link, unlink, rmdir, rename) es durable sólo con
  ``fsync`` del directorio padre. Un rename es una sola operación atómica (como en un sistema
  con diario): la hace durable el fsync de cualquiera de los dos directorios, y nunca deja el
  archivo en los dos sitios ni en ninguno. Un fsync de directorio aplica, en orden, todas las
  operaciones pendientes que tocan ese directorio (y ninguna otra).
- En un corte (``cut``, o antes de la N-ésima frontera armada con ``arm N``) se mata el pid
  registrado (``pid P``), se escribe en ``BACKING`` el estado durable y desde entonces toda
  operación falla con EIO. Un nuevo montaje sobre ``BACKING`` ve sólo lo durable.
- ``--writeback prefix``: en el corte, un archivo que creció sin fsync conserva un prefijo al
  azar de lo no sincronizado (como páginas que el núcleo ya escribió): así aparecen colas rotas.
- ``exit`` sin corte equivale a sync + umount: se escribe el estado vivo.

Fronteras contadas (``arm N`` corta justo ANTES de la N-ésima): fsync, fsyncdir, create, mknod,
mkdir, symlink, link, unlink, rmdir, rename. ``trace`` devuelve cada frontera con su ruta.

Protocolo de control: una línea por conexión en ``CONTROL_SOCKET``; la respuesta es JSON.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

_TIMEOUT = 1.0


@dataclass
class Node:
    """Un inodo: estado vivo y estado durable."""

    ino: int
    mode: int
    uid: int = 0
    gid: int = 0
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    entries: dict[bytes, int] = field(default_factory=dict)
    parent: int = pyfuse3.ROOT_INODE
    nlink: int = 1
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    durable_data: bytes | None = None  # None: nunca sincronizado (vacío tras un corte)
    durable_entries: dict[bytes, int] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Change:
    """Un cambio de entrada: ``(dir, nombre) -> ino``; ``ino=None`` borra si aún apunta a ``old``."""

    dir_ino: int
    name: bytes
    ino: int | None
    old: int | None = None


@dataclass
class PendingOp:
    """Operación de nombres aún no durable."""

    kind: str
    changes: list[Change]
    dirs: frozenset[int]


class PowerFS(pyfuse3.Operations):
    """Las operaciones FUSE sobre el modelo en memoria."""

    enable_writeback_cache = False

    def __init__(self, backing: str, seed: int, writeback: str) -> None:
        super().__init__()
        self.backing = backing
        self.rng = random.Random(seed)
        self.writeback = writeback
        self.nodes: dict[int, Node] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.pending: list[PendingOp] = []
        self.handles: dict[int, int] = {}  # fh -> ino
        self.dir_handles: dict[int, list[tuple[bytes, int]]] = {}
        self.next_fh = 1
        self.boundaries = 0
        self.counts: dict[str, int] = {}
        self.trace: list[str] = []
        self.arm_at: int | None = None
        # Cortar antes de la N-ésima frontera cuya línea ("tipo ruta") case con un patrón: no depende
        # de cuántas fronteras de fondo (estado, barridos) caigan antes, como sí un número absoluto.
        self.arm_match: tuple[re.Pattern[str], int] | None = None
        self.kill_pid: int | None = None
        self.cut_reason: str | None = None
        self._load()

    # --- carga y materialización ---------------------------------------------------------
    def _load(self) -> None:
        st = os.lstat(self.backing)
        root = Node(pyfuse3.ROOT_INODE, st.st_mode, st.st_uid, st.st_gid, nlink=2,
                    atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        self.nodes[root.ino] = root
        seen: dict[int, int] = {}
        self._load_dir(self.backing, root, seen)

    def _load_dir(self, path: str, node: Node, seen: dict[int, int]) -> None:
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            name = os.fsencode(entry.name)
            if not stat.S_ISDIR(st.st_mode) and st.st_ino in seen:
                child = self.nodes[seen[st.st_ino]]
                child.nlink += 1
            else:
                child = Node(self._new_ino(), st.st_mode, st.st_uid, st.st_gid, parent=node.ino,
                             atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
                self.nodes[child.ino] = child
                if stat.S_ISDIR(st.st_mode):
                    child.nlink = 2
                    node.nlink += 1
                    self._load_dir(entry.path, child, seen)
                elif stat.S_ISLNK(st.st_mode):
                    child.target = os.fsencode(os.readlink(entry.path))
                else:
                    seen[st.st_ino] = child.ino
                    with open(entry.path, "rb") as handle:
                        child.data = bytearray(handle.read())
                    child.durable_data = bytes(child.data)
            node.entries[name] = child.ino
        node.durable_entries = dict(node.entries)

    def materialize(self, durable: bool) -> None:
        """Reescribe ``backing`` con el estado durable (corte) o el vivo (sync + umount)."""
        staging = self.backing.rstrip("/") + ".powerfs-new"
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging)
        written: dict[int, str] = {}
        self._write_dir(self.nodes[pyfuse3.ROOT_INODE], staging, durable, written, set())
        # La raíz del respaldo conserva su ruta (la del siguiente montaje): se vacía y se rellena.
        for name in os.listdir(self.backing):
            path = os.path.join(self.backing, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        for name in os.listdir(staging):
            os.rename(os.path.join(staging, name), os.path.join(self.backing, name))
        os.rmdir(staging)

    def _write_dir(self, node: Node, path: str, durable: bool, written: dict[int, str], stack: set[int]) -> None:
        stack.add(node.ino)
        entries = node.durable_entries if durable else node.entries
        for name, ino in sorted(entries.items()):
            child = self.nodes[ino]
            child_path = os.path.join(path, os.fsdecode(name))
            if child.is_dir:
                if ino in stack or ino in written:  # un directorio alcanzable dos veces: sólo el primero
                    continue
                written[ino] = child_path
                os.mkdir(child_path)
                self._write_dir(child, child_path, durable, written, stack)
                os.chmod(child_path, stat.S_IMODE(child.mode))
            elif stat.S_ISLNK(child.mode):
                os.symlink(os.fsdecode(child.target), child_path)
            elif ino in written:
                os.link(written[ino], child_path)
            else:
                written[ino] = child_path
                with open(child_path, "wb") as handle:
                    handle.write(self._content(child, durable))
                os.chmod(child_path, stat.S_IMODE(child.mode))
                os.utime(child_path, ns=(child.atime_ns, child.mtime_ns))
        stack.discard(node.ino)

    def _content(self, node: Node, durable: bool) -> bytes:
        if not durable:
            return bytes(node.data)
        synced = node.durable_data or b""
        if self.writeback == "prefix" and len(node.data) > len(synced) and node.data.startswith(synced):
            # Escritura diferida parcial: el núcleo ya había volcado parte de lo no sincronizado.
            keep = self.rng.randint(len(synced), len(node.data))
            return bytes(node.data[:keep])
        return synced

    # --- corte -------------------------------------------------------------------------
    def _boundary(self, kind: str, desc: str) -> None:
        """Cuenta una frontera; corta antes de ella si estaba armada."""
        self._alive()
        self.boundaries += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.trace.append(f"{self.boundaries} {kind} {desc}")
        if self.arm_at is not None and self.boundaries >= self.arm_at:
            self.cut(f"before boundary {self.boundaries}: {kind} {desc}")
            raise pyfuse3.FUSEError(errno.EIO)
        if self.arm_match is not None and self.arm_match[0].search(f"{kind} {desc}"):
            pattern, left = self.arm_match
            self.arm_match = (pattern, left - 1)
            if left <= 1:
                self.cut(f"before boundary {self.boundaries}: {kind} {desc}")
                raise pyfuse3.FUSEError(errno.EIO)

    def _alive(self) -> None:
        if self.cut_reason is not None:
            raise pyfuse3.FUSEError(errno.EIO)

    def cut(self, reason: str) -> None:
        if self.cut_reason is not None:
            return
        self.cut_reason = reason
        if self.kill_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.kill_pid, signal.SIGKILL)
        self.materialize(durable=True)

    # --- ayudas ------------------------------------------------------------------------
    def _new_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _path(self, ino: int, name: bytes | None = None) -> str:
        parts: list[str] = [] if name is None else [os.fsdecode(name)]
        node = self.nodes.get(ino)
        guard = 0
        while node is not None and node.ino != pyfuse3.ROOT_INODE and guard < 256:
            parent = self.nodes.get(node.parent)
            if parent is None:
                break
            label = next((os.fsdecode(n) for n, i in parent.entries.items() if i == node.ino), f"#{node.ino}")
            parts.append(label)
            node, guard = parent, guard + 1
        return "/" + "/".join(reversed(parts))

    def _file_path(self, ino: int) -> str:
        """Una ruta viva de un archivo (cualquier nombre suyo), para la traza."""
        for node in self.nodes.values():
            if node.is_dir:
                for name, child in node.entries.items():
                    if child == ino:
                        return self._path(node.ino, name)
        return f"#{ino} (unlinked)"

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = node.ino
        attr.generation = 0
        attr.entry_timeout = _TIMEOUT
        attr.attr_timeout = _TIMEOUT
        attr.st_mode = node.mode
        attr.st_nlink = node.nlink
        attr.st_uid = node.uid
        attr.st_gid = node.gid
        attr.st_rdev = 0
        size = len(node.target) if stat.S_ISLNK(node.mode) else len(node.data)
        attr.st_size = size
        attr.st_blksize = 4096
        attr.st_blocks = (size + 511) // 512
        attr.st_atime_ns = node.atime_ns
        attr.st_mtime_ns = node.mtime_ns
        attr.st_ctime_ns = node.ctime_ns
        return attr

    def _record(self, kind: str, changes: list[Change]) -> None:
        self.pending.append(PendingOp(kind, changes, frozenset(c.dir_ino for c in changes)))

    def _touch(self, *nodes: Node) -> None:
        now = time.time_ns()
        for node in nodes:
            node.mtime_ns = node.ctime_ns = now

    def _new_child(self, parent: Node, name: bytes, mode: int, ctx: pyfuse3.RequestContext, kind: str) -> Node:
        if name in parent.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        now = time.time_ns()
        node = Node(self._new_ino(), mode, ctx.uid, ctx.gid, parent=parent.ino, atime_ns=now, mtime_ns=now,
                    ctime_ns=now)
        if node.is_dir:
            node.nlink = 2
            parent.nlink += 1
        self.nodes[node.ino] = node
        parent.entries[name] = node.ino
        self._touch(parent)
        self._record(kind, [Change(parent.ino, name, node.ino)])
        return node

    # --- operaciones de lectura --------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._alive()
        parent = self._node(parent_inode)
        if name == b".":
            return self._attr(parent)
        if name == b"..":
            return self._attr(self._node(parent.parent))
        ino = parent.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.nodes[ino])

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._alive()
        return self._attr(self._node(inode))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        self._alive()
        return self._node(inode).target

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._alive()
        node = self._node(inode)
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = inode
        self.dir_handles[fh] = sorted(node.entries.items())
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        self._alive()
        entries = self.dir_handles.get(fh, [])
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            node = self.nodes.get(ino)
            if node is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(node), index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self.dir_handles.pop(fh, None)
        self.handles.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        self._alive()
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = data.f_bfree = data.f_bavail = 1 << 24
        data.f_files = data.f_ffree = data.f_favail = 1 << 20
        data.f_namemax = 255
        return data

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self._alive()
        node = self._node(inode)
        if flags & os.O_TRUNC and node.data:
            node.data = bytearray()
            self._touch(node)
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = inode
        return pyfuse3.FileInfo(fh=fh)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self._alive()
        node = self._node(self.handles[fh])
        return bytes(node.data[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._alive()
        node = self._node(self.handles[fh])
        end = off + len(buf)
        if off > len(node.data):
            node.data.extend(b"\0" * (off - len(node.data)))
        node.data[off:end] = buf
        self._touch(node)
        return len(buf)

    async def flush(self, fh: int) -> None:
        self._alive()

    async def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    async def forget(self, inode_list: Any) -> None:
        return None

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._alive()
        node = self._node(inode)
        if fields.update_size:
            if attr.st_size < len(node.data):
                del node.data[attr.st_size:]
            else:
                node.data.extend(b"\0" * (attr.st_size - len(node.data)))
            self._touch(node)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = time.time_ns()
        return self._attr(node)

    # --- durabilidad -------------------------------------------------------------------
    async def fsync(self, fh: int, datasync: bool) -> None:
        ino = self.handles[fh]
        self._boundary("fsync", self._file_path(ino))
        node = self._node(ino)
        node.durable_data = bytes(node.data)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        ino = self.handles[fh]
        self._boundary("fsyncdir", self._path(ino))
        keep: list[PendingOp] = []
        for op in self.pending:
            if ino not in op.dirs:
                keep.append(op)
                continue
            for change in op.changes:
                entries = self.nodes[change.dir_ino].durable_entries
                if change.ino is not None:
                    entries[change.name] = change.ino
                elif entries.get(change.name) == change.old:
                    del entries[change.name]
        self.pending = keep

    # --- operaciones de nombres --------------------------------------------------------
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._boundary("create", self._path(parent_inode, name))
        node = self._new_child(self._node(parent_inode), name, stat.S_IFREG | stat.S_IMODE(mode), ctx, "create")
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node.ino
        return pyfuse3.FileInfo(fh=fh), self._attr(node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._boundary("mknod", self._path(parent_inode, name))
        return self._attr(self._new_child(self._node(parent_inode), name, mode, ctx, "mknod"))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._boundary("mkdir", self._path(parent_inode, name))
        return self._attr(self._new_child(self._node(parent_inode), name, stat.S_IFDIR | stat.S_IMODE(mode),
                                          ctx, "mkdir"))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._boundary("symlink", self._path(parent_inode, name))
        node = self._new_child(self._node(parent_inode), name, stat.S_IFLNK | 0o777, ctx, "symlink")
        node.target = target
        return self._attr(node)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._boundary("link", f"{self._file_path(inode)} -> {self._path(new_parent_inode, new_name)}")
        node, parent = self._node(inode), self._node(new_parent_inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EPERM)
        if new_name in parent.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        parent.entries[new_name] = inode
        node.nlink += 1
        node.ctime_ns = time.time_ns()
        self._touch(parent)
        self._record("link", [Change(parent.ino, new_name, inode)])
        return self._attr(node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._boundary("unlink", self._path(parent_inode, name))
        parent = self._node(parent_inode)
        ino = parent.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        del parent.entries[name]
        node.nlink -= 1
        node.ctime_ns = time.time_ns()
        self._touch(parent)
        self._record("unlink", [Change(parent.ino, name, None, ino)])

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._boundary("rmdir", self._path(parent_inode, name))
        parent = self._node(parent_inode)
        ino = parent.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if node.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del parent.entries[name]
        parent.nlink -= 1
        node.nlink = 0
        self._touch(parent)
        self._record("rmdir", [Change(parent.ino, name, None, ino)])

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._boundary("rename", f"{self._path(parent_inode_old, name_old)} -> "
                                 f"{self._path(parent_inode_new, name_new)}")
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        ino = old_parent.entries.get(name_old)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        replaced_ino = new_parent.entries.get(name_new)
        if replaced_ino == ino:
            return
        changes = [Change(old_parent.ino, name_old, None, ino), Change(new_parent.ino, name_new, ino)]
        if replaced_ino is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            replaced = self.nodes[replaced_ino]
            if replaced.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.is_dir and not replaced.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if replaced.is_dir and replaced.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            if replaced.is_dir:
                new_parent.nlink -= 1
                replaced.nlink = 0
            else:
                replaced.nlink -= 1
        del old_parent.entries[name_old]
        new_parent.entries[name_new] = ino
        if node.is_dir and old_parent is not new_parent:
            old_parent.nlink -= 1
            new_parent.nlink += 1
            node.parent = new_parent.ino
        node.ctime_ns = time.time_ns()
        self._touch(old_parent, new_parent)
        self._record("rename", changes)

    # --- control -----------------------------------------------------------------------
    def control(self, line: str) -> dict[str, Any]:
        command, _, arg = line.strip().partition(" ")
        if command == "stats":
            return {"boundaries": self.boundaries, "counts": dict(self.counts), "cut": self.cut_reason,
                    "pending_ops": len(self.pending)}
        if command == "trace":
            return {"trace": self.trace}
        if command == "arm":
            self.arm_at = int(arg)
            return {"armed": self.arm_at}
        if command == "arm_match":
            occurrence, _, pattern = arg.partition(" ")
            self.arm_match = (re.compile(pattern), int(occurrence))
            return {"armed": pattern, "occurrence": int(occurrence)}
        if command == "pid":
            self.kill_pid = int(arg) if arg else None
            return {"pid": self.kill_pid}
        if command == "cut":
            self.cut(arg or f"on request after boundary {self.boundaries}")
            return {"cut": self.cut_reason, "boundaries": self.boundaries}
        if command == "exit":
            return {"exit": True}
        return {"error": f"unknown command {command!r}"}


async def _serve_control(fs: PowerFS, path: str, done: trio.Event) -> None:
    with trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM) as sock:
        # El cliente espera a que exista la ruta: sólo aparece (rename) cuando ya escucha. Con
        # ``bind`` en la ruta final, un connect entre el bind y el listen (``await sock.bind`` cede
        # el turno a las peticiones FUSE; en una máquina cargada, un buen rato) daba ECONNREFUSED.
        fresh = f"{path}.new"
        for stale in (path, fresh):
            if os.path.exists(stale):
                os.unlink(stale)
        await sock.bind(fresh)
        sock.listen(8)
        os.rename(fresh, path)
        while True:
            conn, _ = await sock.accept()
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    piece = await conn.recv(4096)
                    if not piece:
                        break
                    data += piece
                reply = fs.control(data.decode())
                out = memoryview(json.dumps(reply).encode() + b"\n")
                while out:
                    out = out[await conn.send(out):]
            if reply.get("exit"):
                done.set()
                return


async def _main(fs: PowerFS, control_path: str) -> None:
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pyfuse3.main)
        nursery.start_soon(_serve_control, fs, control_path, done)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(_wait_signal, signals, done)
            await done.wait()
        nursery.cancel_scope.cancel()


async def _wait_signal(signals: Any, done: trio.Event) -> None:
    async for _ in signals:
        done.set()
        return


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="powerfs")
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("control")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--writeback", choices=("none", "prefix"), default="none")
    args = parser.parse_args(argv)
    fs = PowerFS(os.path.abspath(args.backing), args.seed, args.writeback)
    options = set(pyfuse3.default_options)
    options.add("fsname=powerfs")
    pyfuse3.init(fs, args.mountpoint, options)
    try:
        trio.run(_main, fs, args.control)
    finally:
        pyfuse3.close(unmount=True)
        if fs.cut_reason is None:
            fs.materialize(durable=False)  # sync + umount: todo lo vivo queda escrito
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
