"""La única validación de URLs (``daemon.urls``) y la única guarda de direcciones
(``daemon.downloaders.netguard``): las mismas reglas para el trabajo, HTTP y yt-dlp."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.downloaders.base import DownloadOptions, SchemeNotAllowed, UnsupportedUrl
from daemon.downloaders.netguard import forbidden_reason, is_forbidden_address, parse_networks
from daemon.downloaders.ytdlp import YtdlpDownloader
from daemon.downloaders.ytdlp.preflight import check_job_url
from daemon.jobs import JobLimits, JobRejected, parse_job
from daemon.urls import MAX_URL_CHARS, UrlRejected, check_url

HTTP_S = ("http", "https")


@pytest.mark.parametrize(("url", "scheme", "host", "port"), [
    ("https://example.org/a.mp4", "https", "example.org", 443),
    ("http://example.org/a.mp4", "http", "example.org", 80),
    ("HTTP://Example.org:8080/x", "http", "example.org", 8080),
    ("http://[::1]:81/x", "http", "::1", 81),
    ("https://user:pw@192.0.2.10/x", "https", "192.0.2.10", 443),
])
def test_a_good_url_gives_its_parts(url: str, scheme: str, host: str, port: int) -> None:
    checked = check_url(url, HTTP_S)
    assert (checked.url, checked.scheme, checked.host, checked.port) == (url, scheme, host, port)


@pytest.mark.parametrize(("value", "says"), [
    ("", "non-empty string"),
    (42, "non-empty string"),
    ("-x https://example.org/", "not '-'"),
    ("https://example.org/a b", "spaces or control characters"),
    ("https://example.org/\u202eevil", "spaces or control characters"),
    ("https://example.org/\x85", "spaces or control characters"),
    ("example.org/file.mp4", "no scheme"),
    ("https:///path-only", "no host"),
    ("http://0x7f000001/", "non-canonical"),
    ("http://127.1/", "non-canonical"),
    ("http://example.org:0/", "port 0"),
    ("http://example.org:99999/", "not a valid URL"),
    ("https://example.org/" + "a" * MAX_URL_CHARS, "longer than"),
])
def test_a_bad_url_says_what_to_fix(value: object, says: str) -> None:
    with pytest.raises(UrlRejected) as info:
        check_url(value, HTTP_S)
    assert says in info.value.reason
    assert info.value.scheme_refused is False


def test_a_scheme_outside_the_list_is_its_own_case() -> None:
    with pytest.raises(UrlRejected) as info:
        check_url("ftp://example.org/a", HTTP_S)
    assert info.value.scheme_refused is True
    assert "'ftp' is not allowed; allowed: http, https" in info.value.reason
    with pytest.raises(UrlRejected):
        check_url("http://example.org/a", ("https",))


@pytest.mark.parametrize("url", ["http://0x7f000001/", "ftp://example.org/a", "https://example.org/a b",
                                 "-https://example.org/"])
def test_job_and_ytdlp_refuse_the_same_urls_with_the_same_words(url: str, tmp_path: Path) -> None:
    with pytest.raises(UrlRejected) as rule:
        check_url(url, HTTP_S)
    # El trabajo: JobRejected con el motivo de daemon.urls.
    with pytest.raises(JobRejected) as job:
        parse_job(f"url: '{url}'\n".encode(), "job.yaml", JobLimits())
    assert job.value.reason == rule.value.reason
    # yt-dlp: el mismo motivo, con el kind de la lista cerrada, antes de lanzar ningún proceso.
    out = tmp_path / "out"
    out.mkdir()
    options = DownloadOptions(url=url, output_path=out)
    expected = SchemeNotAllowed if rule.value.scheme_refused else UnsupportedUrl
    with pytest.raises(expected) as refused:
        check_job_url(options)
    assert refused.value.message == rule.value.reason
    with pytest.raises(expected):
        asyncio.run(YtdlpDownloader(use_zygote=False).download(options))
    assert list(out.iterdir()) == []  # yt-dlp no llegó a escribir nada


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                                     "224.0.0.1", "::1", "fe80::1%lo", "fd00::1", "::ffff:10.0.0.1",
                                     "64:ff9b::a00:1", "64:ff9b::7f00:1", "[::1]"])
def test_one_guard_for_every_downloader(address: str) -> None:
    # Lo que rechaza la comprobación de yt-dlp lo rechaza también el conector HTTP, con motivo.
    assert is_forbidden_address(address) is True
    reason = forbidden_reason(address)
    assert reason is not None and "address" in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass_both_ways(address: str) -> None:
    assert is_forbidden_address(address) is False
    assert forbidden_reason(address) is None


def test_allowed_networks_open_only_their_own_addresses() -> None:
    allowed = parse_networks(["10.1.2.0/24", "fd00:1::/32"])
    assert forbidden_reason("10.1.2.7", allowed) is None
    assert forbidden_reason("::ffff:10.1.2.7", allowed) is None  # la IPv4 mapeada es la misma dirección
    assert forbidden_reason("fd00:1::5", allowed) is None
    assert forbidden_reason("10.1.3.7", allowed) == "10.1.3.7 is a private address"
    assert forbidden_reason("127.0.0.1", allowed) == "127.0.0.1 is a loopback address"


def test_a_name_is_not_an_address() -> None:
    assert forbidden_reason("example.org") == "'example.org' is not an IP address"
    with pytest.raises(ValueError):
        is_forbidden_address("example.org")
