"""Códigos de salida de la orden ``videonote-dl``: una sola tabla, documentada en README.md."""

from __future__ import annotations

__all__ = ["EXIT_CODES", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NOT_FOUND", "EXIT_NOT_RUNNING",
           "EXIT_OK", "EXIT_PERMISSION", "EXIT_PIPE", "EXIT_USAGE", "render_exit_codes"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PERMISSION = 4
EXIT_CONFIG = 5
EXIT_NOT_RUNNING = 6
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141

# (código, significado): el README muestra esta tabla tal cual (una prueba lo comprueba).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the job failed, was rejected or cancelled (`submit --wait`, `demo`); `verify` found problems; "
                  "`reap` hit errors; `cancel` of a finished job; `--timeout` ran out"),
    (EXIT_USAGE, "usage: bad arguments, or a job the daemon would reject (bad URL, id already used)"),
    (EXIT_NOT_FOUND, "not found: no such job, no event log or status file yet, spool folder missing"),
    (EXIT_PERMISSION, "permission denied: the message names the group to join and the command that does it"),
    (EXIT_CONFIG, "config error: the file is missing or invalid, or it forbids what was asked (`demo`)"),
    (EXIT_NOT_RUNNING, "the daemon is not running (`status`, `demo`)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_PIPE, "the output was closed early (e.g. `show X` piped into `head`): stops quietly, no traceback"),
)


def render_exit_codes() -> str:
    """La tabla en Markdown (README.md) y en texto (``--help``)."""
    rows = "\n".join(f"| {code} | {meaning} |" for code, meaning in EXIT_CODES)
    return "| code | meaning |\n|---|---|\n" + rows + "\n"
