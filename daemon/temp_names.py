"""Nombres de los directorios temporales: prefijos y la correspondencia nombre <-> id de correlación.

Módulo hoja (sólo depende de ``daemon.ids``): lo usan ``TempManager``, el recolector y la
autoprueba sin importarse entre sí.

- ``videonote_dl_<correlation_id>``: el directorio aislado de una descarga;
- ``videonote_<...>``: cualquier temporal del daemon (incluye los anteriores); el recolector
  sólo mira entradas con este prefijo.
"""

from __future__ import annotations

from daemon.ids import validate_correlation_id

__all__ = ["DOWNLOAD_DIR_PREFIX", "TEMP_DIR_PREFIX", "correlation_id_of", "download_dir_name", "is_temp_name"]

DOWNLOAD_DIR_PREFIX = "videonote_dl_"
TEMP_DIR_PREFIX = "videonote_"


def download_dir_name(correlation_id: str) -> str:
    """Nombre del directorio aislado de una descarga; valida el id (nunca es una ruta)."""
    return DOWNLOAD_DIR_PREFIX + validate_correlation_id(correlation_id)


def correlation_id_of(name: str) -> str | None:
    """El id de un ``videonote_dl_<id>``; None si el nombre no es de un directorio de descarga.

    No exige que el resto sea un id válido: el recolector también debe poder nombrar (y borrar)
    una entrada rara con el prefijo.
    """
    if name.startswith(DOWNLOAD_DIR_PREFIX):
        return name[len(DOWNLOAD_DIR_PREFIX):]
    return None


def is_temp_name(name: str) -> bool:
    """Si una entrada de la raíz temporal es del daemon (el recolector sólo toca éstas)."""
    return name.startswith(TEMP_DIR_PREFIX)

