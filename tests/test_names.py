"""Reglas de nombres de archivo (daemon/names.py): las del ``filename`` de un trabajo y las que
pasan los nombres de un servidor antes de publicarse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.jobs import JobRejected, validate_bare_name
from daemon.names import MAX_NAME_BYTES, bare_name_problem, safe_name


@given(st.text(max_size=400))
def test_safe_name_always_gives_a_name_a_job_could_use(raw: str) -> None:
    name = safe_name(raw)
    assert bare_name_problem(name) is None
    assert validate_bare_name(name, "filename") == name  # la misma regla que un trabajo
    assert safe_name(name) == name  # idempotente: un nombre válido no cambia


@pytest.mark.parametrize(("raw", "expected"), [
    ("evil\u202egpj.exe", "evil_gpj.exe"),
    ("clip\u200b.mp4", "clip_.mp4"),
    ("a\u2028b.txt", "a_b.txt"),
    ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
    ("...", "download"),
    ("  .hidden  ", "hidden"),
    ("x" * 300 + ".mkv", "x" * (MAX_NAME_BYTES - 4) + ".mkv"),
    ("\udce9t\u00e9.txt", "_t\u00e9.txt"),  # un sustituto suelto (bytes no UTF-8 de una cabecera)
])
def test_safe_name_examples(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


@pytest.mark.parametrize("bad", ["a\u202eb", "a\u200bb", "a\ufeffb", "a\u00adb", "a\x00b", "..", ".x", "a/b", "a\\b"])
def test_job_filename_refuses_what_a_server_name_would_lose(bad: str) -> None:
    with pytest.raises(JobRejected, match="bare file name"):
        validate_bare_name(bad, "filename")
    assert safe_name(bad) != bad
