"""Ayudas de durabilidad sin FUSE: la cola rota del registro de eventos y ``fsync_dir``."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from daemon.durable import fsync_dir
from daemon.events import EventLogFile


def test_a_torn_last_line_is_dropped_when_the_log_is_opened(tmp_path: Path) -> None:
    log = tmp_path / "daemon.jsonl"
    log.write_bytes(b'{"event":"a"}\n{"event":"b"}\n{"event":"job.succ')  # un corte a mitad de volcado
    writer = EventLogFile(log)
    writer.write(b'{"event":"c"}\n')
    writer.close()
    assert [orjson.loads(line)["event"] for line in log.read_bytes().splitlines()] == ["a", "b", "c"]


def test_an_intact_log_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "daemon.jsonl"
    log.write_bytes(b'{"event":"a"}\n')
    EventLogFile(log).close()
    assert log.read_bytes() == b'{"event":"a"}\n'


def test_fsync_dir_needs_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    fsync_dir(folder)
    (folder / "f").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        fsync_dir(folder / "f")
    assert os.listdir(folder) == ["f"]
