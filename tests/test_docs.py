"""La documentación no puede desviarse del código: tipos de error y órdenes de la CLI."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.downloaders import base, ytdlp

REPO = Path(__file__).resolve().parents[1]


def _error_kinds() -> set[str]:
    kinds = set()
    for module in (base, ytdlp):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, base.DownloadError):
                kinds.add(value.kind)
    return kinds - {"error", "transient", "permanent"}  # las bases abstractas nunca se lanzan tal cual


def test_every_error_kind_has_a_fix_in_the_troubleshooting_table() -> None:
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", operations, re.MULTILINE))
    missing = _error_kinds() - documented
    assert not missing, f"docs/operations.md (Troubleshooting) lacks error kinds: {sorted(missing)}"


def test_every_cli_command_is_in_the_readme_or_docs() -> None:
    from daemon.cli import _parser

    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    text = (REPO / "README.md").read_text() + (REPO / "docs" / "operations.md").read_text()
    missing = {c for c in commands if f"videonote-dl {c}" not in text and f"`{c}`" not in text}
    assert not missing, f"commands not documented: {sorted(missing)}"
