"""``daemon.text.printable``: la única forma de escapar texto ajeno (eventos, .reason, motivos)."""

from __future__ import annotations

import pytest

from daemon.jobs import JobRejected
from daemon.text import UNSAFE_CHARS, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("clip.mp4", "clip.mp4"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("line\nbreak\ttab", "line\\x0abreak\\x09tab"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        ("tag\U000e0041end", "tag\\U000e0041end"),  # fuera del BMP: ancho fijo, nunca ambiguo
        ("bad\udcffbyte", "bad\\udcffbyte"),  # sustituto de un byte no UTF-8
        ("ñandú ✓", "ñandú ✓"),
    ],
)
def test_printable_escapes_every_non_printable_character(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(raw).isprintable()


def test_printable_limit_cuts_after_escaping() -> None:
    assert printable("abcdef", 3) == "abc..."
    assert printable("\n" * 10, 8) == "\\x0a\\x0a..."
    assert printable("short", 10) == "short"


def test_job_rejected_reason_uses_the_same_escaping() -> None:
    error = JobRejected("unknown key(s) a\nb\u202e")
    assert error.reason == printable("unknown key(s) a\nb\u202e") == "unknown key(s) a\\x0ab\\u202e"
    assert str(error) == error.reason
    assert len(JobRejected("x" * 5000).reason) == 1000


def test_unsafe_chars_covers_controls_bidi_and_line_separators() -> None:
    for ch in ("\x00", "\x1f", "\x7f", "\x9f", "\u061c", "\u200e", "\u2028", "\u202e", "\u2066", "\ud800"):
        assert UNSAFE_CHARS.search(f"a{ch}b"), repr(ch)
    assert not UNSAFE_CHARS.search("https://example.org/ñandú?q=1")
