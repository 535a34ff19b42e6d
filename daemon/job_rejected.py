"""``JobRejected``: un archivo de trabajo que no se acepta, con un motivo que dice qué corregir.

Módulo hoja compartido por la lectura (``daemon.jobfile``), el análisis (``daemon.strict_yaml``)
y la validación de campos (``daemon.jobs``).
"""

from __future__ import annotations

from typing import Any

from daemon.text import printable

__all__ = ["REASON_MAX_CHARS", "JobRejected", "quoted"]

REASON_MAX_CHARS = 1000


class JobRejected(Exception):
    """El archivo no se puede aceptar; ``reason`` dice qué corregir (una sola línea imprimible)."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        reason = printable(reason)[:REASON_MAX_CHARS]
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


def quoted(value: Any, limit: int = 80) -> str:
    """Un valor del archivo tal como se cita en un motivo: repr recortado (sin caracteres de control)."""
    return repr(value)[:limit]
