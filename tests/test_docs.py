"""La documentación no puede desviarse del código: tipos de error y órdenes de la CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.downloaders import base, http_downloader, ytdlp  # noqa: F401 (importar define sus clases de error)
from daemon.error_kinds import ABSTRACT_KINDS, ERROR_KINDS

REPO = Path(__file__).resolve().parents[1]


def _error_classes() -> list[type[base.DownloadError]]:
    """Todas las subclases de DownloadError definidas (recorrido del árbol completo)."""
    found: list[type[base.DownloadError]] = []
    pending = list(base.DownloadError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _kinds_table() -> dict[str, tuple[str, str]]:
    """kind -> (transient, fix) de la tabla "Error kinds" de docs/events.md."""
    text = (REPO / "docs" / "events.md").read_text(encoding="utf-8")
    section = text[text.index("## Error kinds"):]
    rows = re.findall(r"^\| `([a-z_]+)` \| (yes|no|depends) \| [^|]+ \| ([^|]+) \|$", section, re.MULTILINE)
    return {kind: (transient, fix.strip()) for kind, transient, fix in rows}


def test_every_error_class_has_an_enumerated_kind() -> None:
    classes = _error_classes()
    assert {cls.__name__ for cls in classes} >= {"MediaUnavailable", "TlsError", "BadResponse", "InternalDownloadError"}
    stray = {cls.__name__: cls.kind for cls in classes
             if cls.kind not in ERROR_KINDS and cls.kind not in ABSTRACT_KINDS}
    assert not stray, f"error classes with a kind outside daemon/error_kinds.py: {stray}"
    with pytest.raises(TypeError, match=r"not in daemon\.error_kinds\.ERROR_KINDS"):
        type("Made_up", (base.PermanentDownloadError,), {"kind": "made_up"})


def test_error_kinds_table_in_events_md_matches_the_code() -> None:
    table = _kinds_table()
    assert set(table) == set(ERROR_KINDS), (
        f"docs/events.md Error kinds: missing {sorted(set(ERROR_KINDS) - set(table))}, "
        f"stale {sorted(set(table) - set(ERROR_KINDS))}")
    for name, kind in ERROR_KINDS.items():
        transient = {True: "yes", False: "no", None: "depends"}[kind.transient]
        assert table[name] == (transient, kind.fix), f"docs/events.md row for {name!r} differs from the code"


def test_transient_column_matches_the_error_classes() -> None:
    for cls in _error_classes():
        declared = ERROR_KINDS.get(cls.kind)
        if declared is not None and declared.transient is not None:
            assert cls.transient is declared.transient, f"{cls.__name__}: transient differs from the table"


def test_operations_md_points_to_the_one_table() -> None:
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert "events.md#error-kinds" in operations
    assert not re.search(r"^\| `(http_status|timeout)` \|", operations, re.MULTILINE), "a second kinds table"


def test_every_cli_command_is_in_the_readme_or_docs() -> None:
    from daemon.cli import _parser

    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    text = (REPO / "README.md").read_text() + (REPO / "docs" / "operations.md").read_text()
    missing = {c for c in commands if f"videonote-dl {c}" not in text and f"`{c}`" not in text}
    assert not missing, f"commands not documented: {sorted(missing)}"
