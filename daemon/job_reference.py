"""Tabla de campos de docs/jobs.md, generada desde ``JOB_SCHEMA`` (como docs/config.md desde ``SCHEMA``).

La tabla vive entre dos marcas en docs/jobs.md; el resto del documento se escribe a mano.
``python -m daemon.job_reference docs/jobs.md`` reescribe la tabla en su sitio; sin argumento,
la imprime. Una prueba falla si el documento y el código no coinciden.
"""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.jobs import JOB_SCHEMA

__all__ = ["BEGIN_MARK", "END_MARK", "render_job_table", "splice_job_table"]

BEGIN_MARK = ("<!-- BEGIN job fields: generated from daemon/jobs.py JOB_SCHEMA by "
              "`python -m daemon.job_reference docs/jobs.md` -->")
END_MARK = "<!-- END job fields -->"


def render_job_table() -> str:
    """La tabla Markdown de campos, marcas incluidas, terminada en salto de línea."""
    rows = [f"| `{spec.key}` | {spec.kind} | {spec.default} | {spec.help} |" for spec in JOB_SCHEMA]
    return "\n".join([BEGIN_MARK, "| field | type | default | meaning |", "|---|---|---|---|", *rows, END_MARK]) + "\n"


def splice_job_table(document: str) -> str:
    """``document`` con la tabla entre las marcas sustituida por la actual.

    ``ValueError`` si faltan las marcas (o están desordenadas): nunca se añade la tabla a ciegas.
    """
    start = document.find(BEGIN_MARK)
    end = document.find(END_MARK, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"the document lacks the markers {BEGIN_MARK!r} ... {END_MARK!r}; add them where "
                         "the field table goes")
    tail = end + len(END_MARK)
    if document[tail:tail + 1] == "\n":
        tail += 1
    return document[:start] + render_job_table() + document[tail:]


def main(argv: list[str]) -> int:
    """Sin argumentos imprime la tabla; con una ruta la reescribe en ese documento."""
    if not argv:
        sys.stdout.write(render_job_table())
        return 0
    path = Path(argv[0])
    try:
        updated = splice_job_table(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"job_reference: {path}: {exc}\n")
        return 1
    path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover - orden de mantenimiento
    sys.exit(main(sys.argv[1:]))
