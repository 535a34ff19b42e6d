"""Referencia de configuración en Markdown, generada desde ``SCHEMA`` (docs/config.md sale de aquí)."""

from __future__ import annotations

from daemon.config import SCHEMA

__all__ = ["render_config_reference"]

_HEADER = """# Configuration reference

Generated from the code (`daemon/config.py`, `SCHEMA`) by
`videonote-dl check-config --reference`; a test fails if this file and the code disagree.

Durations take units (`500ms`, `30s`, `10m`, `1h`, `1d`; a bare number is seconds). Sizes take
units (`16KiB`, `500MB`, `2GiB`; a bare number is bytes). Relative paths resolve against the
folder of the config file. An unknown key or a bad value stops start-up (and `check-config`) with
a message naming the file, the key and what is allowed. Keys marked *live* change on
`systemctl reload` (SIGHUP); the others need a restart, and the reload says so in a
`config.reloaded` event (`restart_required`).

| key | type | default | live | what it does |
|---|---|---|---|---|
"""


def render_config_reference() -> str:
    """El documento completo, listo para escribir en docs/config.md."""
    rows = [
        f"| `{spec.key}` | {spec.kind} | `{spec.default}` | {'yes' if spec.live else 'no'} | {spec.help} |"
        for spec in SCHEMA
    ]
    return _HEADER + "\n".join(rows) + "\n"
