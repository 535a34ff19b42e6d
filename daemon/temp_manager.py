"""TempManager: directorios temporales por id de correlación, con cerrojos, listado y limpieza.

Dos clases de directorios viven en la raíz temporal:

- ``videonote_dl_<correlation_id>``: el directorio aislado de una descarga (uno por trabajo,
  estable entre reintentos y reinicios para poder reanudar);
- ``videonote_<correlation_id>_<aleatorio>`` / ``videonote_<aleatorio>``: temporales de uso
  general de una instancia de ``TempManager``.

La raíz es la del daemon (``temp_dir`` de la configuración) una vez llamado ``set_temp_root``;
antes, la del sistema (``tempfile.gettempdir()``).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from daemon.durable import fsync_dir
from daemon.events import get_logger
from daemon.ids import validate_correlation_id
from daemon.reaper import ReapReport, reap_temp_root
from daemon.temp_names import DOWNLOAD_DIR_PREFIX, TEMP_DIR_PREFIX, correlation_id_of, download_dir_name

# Los nombres viven en daemon.temp_names; se reexportan aquí por compatibilidad.
__all__ = ["DOWNLOAD_DIR_PREFIX", "TEMP_DIR_PREFIX", "TempManager", "download_dir_name"]

_log = get_logger()


class TempManager:
    """Temporales con id de correlación.

    Como instancia: un directorio propio ``videonote_{correlation_id}_{aleatorio}`` creado al
    primer uso (0700) y borrado con ``cleanup()`` o al salir del bloque ``with``.
    Como clase: los directorios de descarga ``videonote_dl_{correlation_id}``.
    """

    _temp_root: Path | None = None

    def __init__(self, correlation_id: str | None = None, base_dir: Path | str | None = None) -> None:
        self.correlation_id = validate_correlation_id(correlation_id) if correlation_id is not None else None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self._temp_dir: Path | None = None

    # --- raíz -----------------------------------------------------------------------------
    @classmethod
    def set_temp_root(cls, root: Path | str | None) -> None:
        """Fija la raíz de los temporales (el daemon la toma de ``temp_dir``)."""
        cls._temp_root = Path(root) if root is not None else None
        if cls._temp_root is not None:
            cls._temp_root.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def temp_root(cls, base_dir: Path | str | None = None) -> Path:
        """La raíz en uso: ``base_dir`` si se da, si no la configurada, si no la del sistema."""
        if base_dir is not None:
            return Path(base_dir)
        return cls._temp_root if cls._temp_root is not None else Path(tempfile.gettempdir())

    # --- temporales de instancia ---------------------------------------------------------
    @property
    def temp_dir(self) -> Path:
        """El directorio de esta instancia; se crea (0700) la primera vez que se pide."""
        if self._temp_dir is None:
            root = self.temp_root(self.base_dir)
            root.mkdir(parents=True, exist_ok=True)
            prefix = f"{TEMP_DIR_PREFIX}{self.correlation_id}_" if self.correlation_id else TEMP_DIR_PREFIX
            self._temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        return self._temp_dir

    def create_temp_file(self, suffix: str = "", prefix: str = "tmp") -> Path:
        """Crea un archivo vacío (0600) dentro del directorio de la instancia y devuelve su ruta."""
        fd, name = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=self.temp_dir)
        os.close(fd)
        return Path(name)

    def cleanup(self) -> None:
        """Borra el directorio de la instancia (si se llegó a crear)."""
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> TempManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # --- directorios de descarga -----------------------------------------------------------
    @classmethod
    def get_subdir(cls, correlation_id: str, base_dir: Path | str | None = None) -> Path:
        """Ruta (sin crearla) del directorio aislado ``<raíz>/videonote_dl_{correlation_id}``.

        Es el enlace del plan entre ``DownloadLifecycle`` y ``TempManager``: el ciclo de vida
        encuentra aquí su directorio. Valida el id (``InvalidCorrelationId``): nunca es una ruta.
        """
        return cls.temp_root(base_dir) / download_dir_name(correlation_id)

    @classmethod
    def download_temp_path(cls, correlation_id: str, base_dir: Path | str | None = None) -> Path:
        """Ruta (sin crearla) de ``videonote_dl_{correlation_id}``; lo mismo que ``get_subdir``."""
        return cls.get_subdir(correlation_id, base_dir)

    @classmethod
    def get_download_temp_dir(cls, correlation_id: str, base_dir: Path | str | None = None) -> Path:
        """Crea (si falta, 0700) y devuelve ``<raíz>/videonote_dl_{correlation_id}``.

        Si ya existe se reutiliza: así una descarga interrumpida puede reanudarse. Un enlace
        simbólico con ese nombre se rechaza: nunca se escribe fuera de la raíz.
        """
        path = cls.get_subdir(correlation_id, base_dir)
        try:
            try:
                os.mkdir(path, 0o700)
            except FileNotFoundError:  # la raíz aún no existe (la primera descarga): se crea una vez
                path.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(path, 0o700)
            # Durable: tras un corte, la recuperación encuentra aquí el archivo ya enlazado en la salida.
            fsync_dir(path.parent)
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a directory; remove it or run the reaper") from None
        return path

    @classmethod
    def cleanup_by_correlation_id(cls, correlation_id: str, base_dir: Path | str | None = None) -> bool:
        """Borra ``videonote_dl_{correlation_id}`` (coincidencia exacta). True si existía y se borró."""
        root = cls.temp_root(base_dir)
        name = download_dir_name(correlation_id)
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=root_fd)
            else:
                os.unlink(name, dir_fd=root_fd)
        except FileNotFoundError:
            return False
        finally:
            os.close(root_fd)
        _log.info("tempdir.removed", correlation_id=correlation_id, temp_dir=str(root / name), reason="manual")
        return True

    @classmethod
    def list_active_downloads(cls, base_dir: Path | str | None = None) -> list[str]:
        """Ids de correlación de los ``videonote_dl_*`` presentes (sólo directorios reales)."""
        root = cls.temp_root(base_dir)
        ids: list[str] = []
        try:
            entries = os.scandir(root)
        except FileNotFoundError:
            return ids
        with entries:
            for entry in entries:
                correlation_id = correlation_id_of(entry.name)
                if correlation_id is not None and entry.is_dir(follow_symlinks=False):
                    ids.append(correlation_id)
        return sorted(ids)

    @classmethod
    def cleanup_old_temp_directories(
        cls,
        max_age: float = 3600.0,
        base_dir: Path | str | None = None,
        skip_ids: frozenset[str] | set[str] = frozenset(),
        dry_run: bool = False,
    ) -> ReapReport:
        """Una pasada del recolector: borra ``videonote_dl_*`` y ``videonote_*`` viejos y no bloqueados."""
        return reap_temp_root(cls.temp_root(base_dir), max_age=max_age, skip_ids=skip_ids, dry_run=dry_run)

