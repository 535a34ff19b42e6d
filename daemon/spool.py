"""El spool: disposición de carpetas, reclamo por rename, registros terminales y rechazos.

    tmp/ incoming/ active/ done/ failed/ rejected/ cancel/

Cada daemon reclama en su propia subcarpeta ``active/<instancia>/``, bloqueada con ``flock``
mientras vive. Al arrancar, las subcarpetas cuyo cerrojo está libre son de daemons muertos:
sus trabajos vuelven a incoming/. Así varios daemons comparten un spool sin pisarse.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from daemon.dirlock import DirLock, DirLockBusy
from daemon.durable import fsync_dir
from daemon.faultpoints import crash_point
from daemon.ids import CORRELATION_ID_PATTERN, new_correlation_id
from daemon.job_scrub import scrub_job_file
from daemon.jobfile import is_candidate_name, read_job_file
from daemon.naming import numbered_names
from daemon.text import printable

__all__ = ["SPOOL_SUBDIRS", "CancelMarker", "IncomingEntry", "Spool"]

SPOOL_SUBDIRS = ("tmp", "incoming", "active", "done", "failed", "rejected", "cancel")


@dataclass(frozen=True, slots=True)
class IncomingEntry:
    """Una entrada de incoming/ tal como la ve ``lstat`` (nada se sigue ni se abre)."""

    name: str
    mtime_ns: int
    ctime_ns: int = 0
    mode: int = stat.S_IFREG
    ino: int = 0


@dataclass(frozen=True, slots=True)
class CancelMarker:
    """``cancel/<id>``: quién lo dejó (su dueño) y cuándo."""

    job_id: str
    uid: int
    mtime: float


class Spool:
    """Operaciones sobre un spool en disco. Todas las transiciones son ``rename()`` atómicos."""

    def __init__(self, root: Path, instance: str | None = None) -> None:
        self.root = root
        self.instance = instance or f"{socket.gethostname()[:32]}-{os.getpid()}-{new_correlation_id()[:6]}"
        self.tmp, self.incoming, self.active = root / "tmp", root / "incoming", root / "active"
        self.done, self.failed, self.rejected, self.cancel = (root / "done", root / "failed", root / "rejected",
                                                              root / "cancel")
        self.claimed = self.active / self.instance
        self._lock: DirLock | None = None
        self._claimed_fd: int | None = None

    # --- arranque y parada ----------------------------------------------------------------
    def prepare(self) -> None:
        """Crea la disposición y la subcarpeta de reclamos de esta instancia, bloqueada."""
        created = False
        for name in SPOOL_SUBDIRS:
            if not (self.root / name).is_dir():
                (self.root / name).mkdir(parents=True, exist_ok=True)
                created = True
        if created:  # la disposición nueva sobrevive a un corte de luz
            fsync_dir(self.root)
        # La carpeta se bloquea antes de tener su nombre: un daemon que barre active/ (cada
        # rescan_interval) nunca ve una carpeta nueva sin cerrojo y la toma por la de un muerto.
        fresh = self.active / f".{self.instance}.new"
        fresh.mkdir(mode=0o700, exist_ok=True)
        self._lock = DirLock(fresh)
        self._lock.acquire()
        os.rename(fresh, self.claimed)
        # Durable antes del primer reclamo: si no, un corte de luz podría dejar durable el rename de
        # un reclamo (lo hace durable el fsync de incoming/ de cualquier productor) dentro de una
        # carpeta cuyo propio nombre se perdió, y el trabajo con ella.
        fsync_dir(self.active)
        self._claimed_fd = os.open(self.claimed, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        """Suelta el cerrojo; borra la subcarpeta de reclamos si quedó vacía."""
        if self._claimed_fd is not None:
            os.close(self._claimed_fd)
            self._claimed_fd = None
        with contextlib.suppress(OSError):
            self.claimed.rmdir()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def orphaned_claims(self) -> Iterator[tuple[Path, list[str]]]:
        """Subcarpetas de active/ de daemons muertos (cerrojo libre), con sus archivos.

        El cerrojo se mantiene tomado mientras el llamador devuelve los trabajos a incoming/.
        """
        try:
            entries = sorted(os.scandir(self.active), key=lambda e: e.name)
        except FileNotFoundError:
            return
        loose = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        if loose:  # archivos sueltos en active/ (disposición antigua o manual)
            yield self.active, loose
        for entry in entries:
            if entry.name == self.instance or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith("."):  # una carpeta aún sin nombre (ver prepare)
                self._remove_abandoned(Path(entry.path))
                continue
            lock = DirLock(Path(entry.path))
            try:
                lock.acquire()
            except DirLockBusy:
                continue  # un daemon vivo comparte el spool
            except OSError:
                continue
            try:
                names = sorted(os.listdir(entry.path))
                yield Path(entry.path), names
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)
            finally:
                lock.release()

    @staticmethod
    def _remove_abandoned(path: Path) -> None:
        """Una carpeta ``.<instancia>.new`` sin cerrojo y de hace más de un minuto es de un daemon que
        murió al arrancar (vacía); una más joven puede ser de uno que arranca ahora mismo."""
        lock = DirLock(path)
        try:
            if time.time() - os.stat(path, follow_symlinks=False).st_mtime < 60:
                return
            lock.acquire()
            os.rmdir(path)
        except OSError:
            pass
        finally:
            lock.release()

    # --- incoming ------------------------------------------------------------------------
    def scan_incoming(self) -> list[IncomingEntry]:
        """Candidatos de incoming/, del más antiguo al más nuevo. Una entrada que no se puede
        examinar (desaparece, sin permiso) se salta: ninguna detiene el listado."""
        found: list[IncomingEntry] = []
        try:
            with os.scandir(self.incoming) as entries:
                for entry in entries:
                    if not is_candidate_name(entry.name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    found.append(IncomingEntry(entry.name, st.st_mtime_ns, st.st_ctime_ns,
                                               st.st_mode, st.st_ino))
        except FileNotFoundError:
            self.incoming.mkdir(parents=True, exist_ok=True)
        found.sort(key=lambda e: (e.mtime_ns, e.name))
        return found

    def claim(self, name: str) -> bool:
        """Mueve incoming/name a mis reclamos. False si otro lo tomó antes (o ya no está); otro
        ``OSError`` (sin permiso, un punto de montaje...) se propaga para que el llamador lo salte."""
        # Rutas de texto y no Path: pathlib internaría cada nombre de una ráfaga (y cuesta más).
        target = os.path.join(self.claimed, name)
        if os.access(target, os.F_OK, follow_symlinks=False):  # como lexists, sin crear una excepción
            return False  # mismo nombre aún en curso: se reintentará cuando termine
        try:
            os.rename(os.path.join(self.incoming, name), target)
        except FileNotFoundError:
            return False
        return True

    def read_claimed(self, name: str) -> tuple[bytes, os.stat_result]:
        assert self._claimed_fd is not None, "prepare() first"
        return read_job_file(name, self._claimed_fd)

    def release(self, name: str) -> None:
        """El trabajo terminó y tiene registro: se borra su archivo reclamado."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.claimed, name))

    def requeue(self, source: Path, name: str, new_name: str | None = None) -> str:
        """Devuelve ``source/name`` a incoming/ (con ``new_name`` si se da); nunca pisa nada."""
        target = self._free_name(self.incoming, new_name or name)
        os.rename(source / name, self.incoming / target)
        return target

    # --- terminales ---------------------------------------------------------------------
    def reject(self, name: str, reason: str, source: Path | None = None, content: bytes | None = None) -> Path:
        """Mueve el archivo a rejected/ y escribe ``<nombre>.reason`` con qué corregir.

        Con ``content`` (lo leído del archivo) se guarda una copia nueva, 0600 y del daemon, sin
        los valores de las cabeceras, y se borra el original; sin él, se mueve tal cual.
        Un ``OSError`` al mover (p. ej. un directorio ajeno sin permiso) se propaga."""
        source = source or self.claimed
        target = self._free_name(self.rejected, name, reserve_suffix=".reason")
        if content is not None:
            self._write_atomic(self.rejected / target, scrub_job_file(content, name), overwrite=False, mode=0o600)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(source / name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.rename(source / name, self.rejected / target)
        text = (
            f"{reason}\n\n"
            f"file: {printable(name)}\nrejected_at: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            "Fix the file and write it again into spool/tmp/, then rename it into spool/incoming/.\n"
        )
        self._write_atomic(self.rejected / f"{target}.reason", text.encode("utf-8"), overwrite=True)
        fsync_dir(self.rejected)  # el rename a rejected/ y el .reason, durables a la vez
        return self.rejected / target

    def terminal_record(self, job_id: str) -> Path | None:
        """El registro terminal de ``job_id`` si existe (done/ o failed/)."""
        name = f"{job_id}.json"
        for folder in (self.done, self.failed):
            # Se mira con texto (lo común es que no exista): un Path internaría cada nombre en pathlib;
            # y con access, que no crea una excepción por cada nombre que falta (exists sí).
            if os.access(os.path.join(folder, name), os.F_OK):
                return folder / name
        return None

    def write_record(self, outcome_dir: str, job_id: str, record: dict[str, Any]) -> Path:
        """Escribe done/<id>.json o failed/<id>.json; nunca sobrescribe un registro terminal.

        Al volver, el registro es durable: datos con fsync antes del link() y fsync de la carpeta
        después. Antes, fsync de la carpeta de reclamos: el rename del reclamo queda durable, así
        que tras un corte el archivo del trabajo no reaparece en incoming/ junto a su registro.
        """
        folder = self.done if outcome_dir == "done" else self.failed
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE, default=str)
        if self._claimed_fd is not None:
            os.fsync(self._claimed_fd)
        for n in range(10000):
            name = f"{job_id}.json" if n == 0 else f"{job_id}.{n}.json"
            if self._write_atomic(folder / name, data, overwrite=False):
                fsync_dir(folder)
                return folder / name
        raise OSError(errno.EEXIST, f"no free record name for {job_id} in {folder}")

    # --- cancelaciones -------------------------------------------------------------------
    def cancel_markers(self) -> tuple[list[CancelMarker], list[tuple[str, str]]]:
        """Los marcadores válidos de cancel/ y las entradas inválidas (nombre, por qué)."""
        markers: list[CancelMarker] = []
        invalid: list[tuple[str, str]] = []
        try:
            with os.scandir(self.cancel) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if not CORRELATION_ID_PATTERN.fullmatch(entry.name):
                        invalid.append((entry.name, "not a job id ([A-Za-z0-9_-]{1,64})"))
                    elif not stat.S_ISREG(st.st_mode):
                        invalid.append((entry.name, "not a regular file (create it with touch)"))
                    else:
                        markers.append(CancelMarker(entry.name, st.st_uid, st.st_mtime))
        except FileNotFoundError:
            pass
        return markers, invalid

    def cancel_marker(self, job_id: str) -> CancelMarker | None:
        """El ``cancel/<id>`` de un trabajo (un stat, no un listado), si es un archivo regular."""
        path = os.path.join(self.cancel, job_id)  # texto y no Path: pathlib internaría cada id
        if not os.access(path, os.F_OK, follow_symlinks=False):  # lo común: sin marcador, y sin excepción
            return None
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return CancelMarker(job_id, st.st_uid, st.st_mtime) if stat.S_ISREG(st.st_mode) else None

    def consume_cancel(self, job_id: str) -> str | None:
        """Retira ``cancel/<nombre>`` sea lo que sea; devuelve el problema si no se pudo."""
        path = self.cancel / job_id
        try:
            os.unlink(path)
        except FileNotFoundError:
            return None
        except (IsADirectoryError, PermissionError) as exc:
            # Un directorio: se borra con su contenido (rmtree no sigue enlaces); si no se puede
            # (sin permiso dentro), se queda y el llamador lo dice una vez.
            problems: list[str] = []
            shutil.rmtree(path, onerror=lambda _f, _p, e: problems.append(getattr(e[1], "strerror", None) or "error"))
            if problems and os.path.lexists(path):
                return problems[0] or exc.strerror or str(exc)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    # --- ayudas -------------------------------------------------------------------------
    @staticmethod
    def _free_name(folder: Path, name: str, reserve_suffix: str = "") -> str:
        """El primer nombre libre en ``folder`` según ``daemon.naming`` (``job.yaml``, ``job-1.yaml``...);
        con ``reserve_suffix`` también debe estar libre ``<nombre><reserve_suffix>``."""
        for candidate in numbered_names(name):
            if not os.path.lexists(folder / candidate) and not (
                reserve_suffix and os.path.lexists(folder / f"{candidate}{reserve_suffix}")
            ):
                return candidate
        raise OSError(errno.EEXIST, f"no free name for {printable(name)} in {folder}")

    def _write_atomic(self, path: Path, data: bytes, overwrite: bool, mode: int = 0o644) -> bool:
        """Escribe en tmp/, fsync, y publica con link() (sin pisar) o rename() (pisando).

        El temporal tiene un nombre imposible de adivinar y se crea con O_EXCL|O_NOFOLLOW: nada
        que otro usuario plante en tmp/ se sigue ni se trunca."""
        tmp = self.tmp / f".videonote-dl-{secrets.token_hex(16)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("mid_record_write")
        try:
            if overwrite:
                os.rename(tmp, path)
                return True
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            if not overwrite:
                os.unlink(tmp)
