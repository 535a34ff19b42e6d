"""Identificadores de correlación: validación estricta y generación."""

from __future__ import annotations

import re
import secrets

__all__ = ["CORRELATION_ID_PATTERN", "InvalidCorrelationId", "new_correlation_id", "validate_correlation_id"]

CORRELATION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidCorrelationId(ValueError):
    """Un id de correlación que no cumple ``[A-Za-z0-9_-]{1,64}``; nunca se usa como ruta."""


def validate_correlation_id(correlation_id: object) -> str:
    """Devuelve el id si es válido; si no, lanza ``InvalidCorrelationId`` con un mensaje claro."""
    if not isinstance(correlation_id, str) or not CORRELATION_ID_PATTERN.fullmatch(correlation_id):
        shown = repr(correlation_id)[:80]
        raise InvalidCorrelationId(
            f"invalid correlation id {shown}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    return correlation_id


def new_correlation_id() -> str:
    """Genera un id nuevo, corto y único en la práctica (96 bits aleatorios)."""
    return secrets.token_hex(12)
