"""La copia que se guarda de un archivo de trabajo rechazado: sin los valores de sus cabeceras.

Un archivo rechazado se conserva (0600, del daemon) para que se vea qué se envió, pero los
valores de ``headers`` (Authorization, Cookie...) no: se sustituyen por ``<removed>``. Si el
archivo se puede analizar, se reescribe; si no (YAML roto), se tachan por texto los valores de
los nombres que suelen llevar secretos.
"""

from __future__ import annotations

import os
import re
from typing import Any

import orjson
import yaml

from daemon.job_rejected import JobRejected
from daemon.strict_yaml import load_job_document

__all__ = ["REMOVED", "scrub_job_file"]

REMOVED = "<removed>"
_NOTE = b"# videonote-dl: header values were removed from this copy; the .reason file says what to fix\n"
# Por texto: ``Authorization: ...``, ``"Cookie": "..."``, ``X-Api-Key: ...`` (y cualquier *token*/*secret*).
_SECRET_LINE = re.compile(
    r"""(?im)(?P<key>["']?(?:authorization|proxy-authorization|cookie|set-cookie|[a-z0-9_-]*(?:token|secret|"""
    r"""api[-_]?key|password|session)[a-z0-9_-]*)["']?\s*[:=]\s*)(?P<value>"[^"\n]*"|'[^'\n]*'|[^,}\n]*)"""
)


def _scrub_document(document: dict[Any, Any], suffix: str) -> bytes:
    headers = document.get("headers")
    if isinstance(headers, dict):
        document["headers"] = {key: REMOVED for key in headers}
    if suffix == ".json":
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE, default=str)
    return _NOTE + yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode("utf-8")


def scrub_job_file(data: bytes, name: str) -> bytes:
    """``data`` sin valores de cabeceras (y sin valores de claves con aspecto de secreto si no se analiza)."""
    suffix = os.path.splitext(name)[1].lower()
    try:
        document = load_job_document(data, ".json" if suffix == ".json" else ".yaml")
    except (JobRejected, ValueError, yaml.YAMLError, RecursionError):
        document = None
    if isinstance(document, dict):
        try:
            return _scrub_document(document, suffix)
        except (TypeError, ValueError, yaml.YAMLError):
            pass
    text = data.decode("utf-8", errors="replace")
    scrubbed = _SECRET_LINE.sub(lambda m: f'{m.group("key")}"{REMOVED}"', text)
    return scrubbed.encode("utf-8")
