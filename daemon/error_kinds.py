"""La lista cerrada de tipos de error (``error.kind``) con su significado y cómo arreglarlo.

Es la única lista: ``DownloadError`` rechaza al definirse una subclase con un ``kind`` que no
esté aquí, ``videonote-dl show`` saca de aquí la pista de cada fallo y una prueba comprueba que
la tabla de docs/events.md ("Error kinds") dice lo mismo en las dos direcciones.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ABSTRACT_KINDS", "ERROR_KINDS", "ErrorKind", "fix_hint"]


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """Un tipo de error: ``transient`` es True (se reintenta), False (no) o None (depende)."""

    name: str
    transient: bool | None
    meaning: str
    fix: str


_KINDS = (
    ErrorKind("http_status", None,
              "the server answered with an HTTP status that is not a file (4xx, 5xx, 204, 304, ...); "
              "408, 429 and 5xx are retried, the others are not",
              "check the URL in a browser; a 4xx is the server refusing (wrong URL, auth), a 5xx its fault "
              "(retried); a 204/304 means the server has no file to give at that URL"),
    ErrorKind("connection", True, "the server could not be reached, or the connection broke",
              "the server could not be reached; check the host, DNS and the network, then retry"),
    ErrorKind("timeout", True, "the server sent nothing for `timeout` seconds (before the headers or mid-body)",
              "the server stalled; raise the job's timeout or download.timeout, then retry"),
    ErrorKind("incomplete_body", True,
              "the body ended before its declared length, or its framing (chunked encoding) broke",
              "the server kept cutting the transfer; retry later or raise retries"),
    ErrorKind("bad_response", False,
              "the server broke HTTP: malformed or oversized headers, a Location that is not a URL, "
              "a 1xx it never finished",
              "the server (or a proxy in between) is broken; nothing on this side fixes it: report it to "
              "the site, or download from another URL"),
    ErrorKind("tls", False,
              "the TLS handshake failed: the certificate is self-signed, from an unknown CA, expired, or "
              "for another host name",
              "if the server uses your own CA, set download.ca_bundle to that CA's PEM file and restart; "
              "otherwise check the host name in the URL and the machine's clock"),
    ErrorKind("checksum_mismatch", False, "the file's sha256 differs from the job's `sha256`",
              "the file differs from the sha256 in the job; check the expected hash or the source "
              "(the hash is over the bytes as sent, compressed or not)"),
    ErrorKind("too_large", False, "the file is over `max_bytes` (from Content-Length or as bytes arrived)",
              "the file is over max_bytes; raise the job's max_bytes (capped by download.max_bytes)"),
    ErrorKind("scheme_not_allowed", False,
              "the URL, or a redirect, uses a scheme that is not allowed (file:, data:, ftp:, javascript:, ...)",
              "use an http:// or https:// URL (download.allowed_schemes); a redirect to another scheme is "
              "never followed"),
    ErrorKind("private_address", False,
              "the URL or a redirect resolves to a loopback, private or link-local address",
              "the URL resolves to a private/loopback address; allowed only with "
              "download.allow_private_networks: true"),
    ErrorKind("too_many_redirects", False, "more than `download.max_redirects` redirects (often a loop)",
              "the server redirects in a loop; fix the URL"),
    ErrorKind("storage", False, "the disk is full or not writable (temp dir or output dir)",
              "the disk is full or not writable; free space or fix permissions of temp_dir/output_dir"),
    ErrorKind("invalid_url", False, "the URL cannot be used as it is (the HTTP client refuses it)",
              "the URL is malformed; fix it (percent-encode special characters) and submit again"),
    ErrorKind("unsupported_url", False, "yt-dlp has no extractor for this page",
              "yt-dlp has no extractor for this page; use downloader: http for a direct file URL"),
    ErrorKind("ytdlp_failed", False, "yt-dlp exited with an error we cannot classify",
              "yt-dlp exited with an error; `videonote-dl show ID` prints the last lines of its stderr"),
    ErrorKind("ytdlp_crashed", True, "the yt-dlp process died unexpectedly (signal, OOM)",
              "the yt-dlp process died unexpectedly; the job is retried, and `show ID` has its stderr"),
    ErrorKind("media_unavailable", False, "the site says the video is private, removed or geo-blocked",
              "the video is private, removed or geo-blocked; nothing to retry"),
    ErrorKind("format_unavailable", False, "the job's `format` selects nothing on that page",
              "the job's `format:` selects nothing on that page; loosen it (e.g. `best`)"),
    ErrorKind("postprocess", False,
              "the job's post-processing program (postprocess.profiles in the config) exited with an error or "
              "wrote no output; the record carries the tail of its stderr",
              "read the stderr tail with `videonote-dl show ID`; fix the input or the profile's command, then "
              "`videonote-dl retry ID`"),
    ErrorKind("cancelled", False, "the job was cancelled on request (`cancel/ID`)",
              "the job was cancelled on request; `videonote-dl retry ID` runs it again"),
    ErrorKind("interrupted", None, "the daemon stopped while the job ran (never final: it is requeued)",
              "nothing: the job went back to incoming/ when the daemon stopped and resumes"),
    ErrorKind("internal", False, "a bug in the daemon; the record carries the exception",
              "a bug: the record carries the exception; report it with the job file"),
)

ERROR_KINDS: dict[str, ErrorKind] = {kind.name: kind for kind in _KINDS}
# Las bases de la jerarquía de errores: nunca se lanzan tal cual, no son tipos de error.
ABSTRACT_KINDS = frozenset({"error", "transient", "permanent"})


def fix_hint(kind: str) -> str:
    """La pista de ``kind``; para un tipo desconocido (registro de otra versión), una genérica."""
    known = ERROR_KINDS.get(kind)
    if known is not None:
        return known.fix
    return f"unknown error kind {kind!r} (written by another version?); see docs/events.md, Error kinds"
