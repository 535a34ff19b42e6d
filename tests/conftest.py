"""Fixtures comunes de la suite: registro de eventos por prueba, raíz temporal y servidor HTTP.

Cada prueba escribe sus eventos en su propio ``events.jsonl`` (sin stderr); al terminar, cada
línea debe ser JSON con ``ts``, ``level`` y ``event``, y ``event`` debe estar en el vocabulario
de docs/events.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.events import configure_events
from daemon.temp_manager import TempManager
from tests.support.http_server import TestServer

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DOC = REPO_ROOT / "docs" / "events.md"
TS_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
_VOCABULARY_ROW = re.compile(r"^\|\s*`([a-z][a-z0-9_]*\.[a-z0-9_.]+)`\s*\|", re.MULTILINE)


def load_event_vocabulary(doc: Path = EVENTS_DOC) -> frozenset[str]:
    """Nombres de evento de la primera columna de la tabla de docs/events.md."""
    return frozenset(_VOCABULARY_ROW.findall(doc.read_text(encoding="utf-8")))


def check_event_line(line: str, vocabulary: frozenset[str]) -> dict[str, Any]:
    """Valida una línea del registro y devuelve el evento; lanza AssertionError si no cumple."""
    event = json.loads(line)
    assert isinstance(event, dict), f"not a JSON object: {line!r}"
    assert list(event)[:3] == ["ts", "level", "event"], f"keys out of order: {line!r}"
    assert TS_PATTERN.fullmatch(event["ts"]), f"bad ts {event['ts']!r}"
    assert event["level"] in LEVELS, f"bad level {event['level']!r}"
    assert event["event"] in vocabulary, f"event {event['event']!r} is not documented in docs/events.md"
    return event


class EventLog:
    """El registro de eventos de una prueba: ruta y lectura."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """Todos los eventos escritos hasta ahora (lista vacía si no hay archivo)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def named(self, name: str) -> list[dict[str, Any]]:
        """Los eventos con ese nombre, en orden."""
        return [event for event in self.read() if event["event"] == name]

    def names(self) -> list[str]:
        return [event["event"] for event in self.read()]


@pytest.fixture(scope="session")
def event_vocabulary() -> frozenset[str]:
    vocabulary = load_event_vocabulary()
    assert vocabulary, f"no event names found in {EVENTS_DOC}"
    return vocabulary


@pytest.fixture(autouse=True)
def event_log(tmp_path: Path, event_vocabulary: frozenset[str]) -> Iterator[EventLog]:
    """Eventos de la prueba en ``tmp_path/events.jsonl``; al final, cada línea se valida."""
    log = EventLog(tmp_path / "events.jsonl")
    configure_events(log.path, level="debug", stderr=False)
    yield log
    configure_events(None, stderr=False)
    if log.path.exists():
        raw = log.path.read_bytes()
        assert not raw or raw.endswith(b"\n"), "the event log ends in a partial line"
        for line in raw.decode("utf-8").splitlines():
            check_event_line(line, event_vocabulary)


@pytest.fixture
def temp_root(tmp_path: Path) -> Iterator[Path]:
    """Raíz temporal de TempManager en un directorio de la prueba; se restablece al terminar."""
    root = tmp_path / "temp_root"
    TempManager.set_temp_root(root)
    try:
        yield root
    finally:
        TempManager.set_temp_root(None)


@pytest.fixture
def test_server() -> Iterator[TestServer]:
    """Servidor HTTP real en 127.0.0.1, ya arrancado; se detiene al terminar."""
    server = TestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Ruedas para instalar sin red dentro de los contenedores de systemd (caché en ~/.cache)."""
    from tests.support.nspawn import build_wheelhouse

    try:
        return build_wheelhouse(REPO_ROOT, Path.home() / ".cache" / "videonote-dl-tests")
    except RuntimeError as exc:
        pytest.fail(f"could not prepare the offline wheelhouse: {exc}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Con pytest-xdist (``make test`` corre la suite en varios procesos): las pruebas que arrancan
    un systemd en un contenedor van todas al mismo proceso, una tras otra (``--dist loadgroup``),
    para que nunca arranquen dos contenedores a la vez en una máquina de dos núcleos."""
    for item in items:
        if item.get_closest_marker("systemd") is not None:
            item.add_marker(pytest.mark.xdist_group("systemd"))
