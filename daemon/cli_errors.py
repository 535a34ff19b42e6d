"""Errores de la orden ``videonote-dl``: un mensaje de una línea y el código de salida."""

from __future__ import annotations

from daemon.exit_codes import EXIT_FAILED, EXIT_USAGE

__all__ = ["CliError", "UsageError"]


class CliError(Exception):
    """Error que se informa en una línea y sale con ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Error de uso: se informa y se sale con 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
