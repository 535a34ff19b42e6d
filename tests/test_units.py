"""Duraciones y tamaños con unidades, y la marca de tiempo UTC."""

from __future__ import annotations

import time

import pytest

from daemon.units import format_duration, format_size, parse_duration, parse_size, utc_timestamp


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("90", 90.0),
        (" 2m ", 120.0),
        ("10 m", 600.0),
        ("1H", 3600.0),
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16KiB", 16 * 1024),
        ("500MB", 500 * 1000**2),
        ("2GiB", 2 * 1024**3),
        ("10GiB", 10 * 1024**3),
        ("1kb", 1000),
        ("3MiB", 3 * 1024**2),
        ("1TiB", 1024**4),
        ("1.5KiB", 1536),
        ("512", 512),
        ("512B", 512),
        ("4k", 4096),
        (0, 0),
        (1234, 1234),
    ],
)
def test_parse_size_accepts_units(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "10 minutes", "5x", "-5s", "1.2.3s", "s", True, None, [1], -1, float("nan"), float("inf")],
)
def test_parse_duration_refuses_bad_values(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert str(info.value)  # el mensaje dice algo


def test_parse_duration_message_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"ms, s, m, h"):
        parse_duration("10 minutes")


@pytest.mark.parametrize("bad", ["", "lots", "5 parsecs", "-1MB", "MB", True, None, 1.5, -1, [1]])
def test_parse_size_refuses_bad_values(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_parse_size_message_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"KiB"):
        parse_size("5 parsecs")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB"),
     (3 * 1024**3, "3.0 GiB"), (2048 * 1024**3, "2048.0 GiB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.85, "850ms"), (12.34, "12.3s"), (245, "4m05s"), (7380, "2h03m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text



def test_utc_timestamp_matches_strftime_whatever_second_came_before() -> None:
    # La caché del prefijo por segundo no puede devolver el de otro segundo: se alternan segundos,
    # se vuelve atrás y se prueba el borde de cada uno.
    stamps = [0.5, 1.25, 0.75, 1764563741.743219, 1764563741.999999, 1764563742.0, 1764563741.000001,
              86399.5, 86400.0, 951782400.123456]
    for ts in stamps + stamps[::-1]:
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"
        assert utc_timestamp(ts) == expected
