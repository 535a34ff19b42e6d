"""Trabajos: ``JobSpec`` y la validación campo a campo, declarada en la tabla ``JOB_SCHEMA``.

Cada campo de un archivo de trabajo se declara una sola vez en ``JOB_SCHEMA`` (tipo, valor por
defecto, qué hace y su comprobación), como ``daemon.config.SCHEMA`` para la configuración; de
ahí salen la validación y la tabla de campos de docs/jobs.md (``daemon.job_reference``), así que
no pueden divergir. La lectura segura del archivo está en ``daemon.jobfile`` y el análisis
estricto de YAML/JSON en ``daemon.strict_yaml``; ``parse_job`` encadena análisis y validación.
Cualquier fallo es ``JobRejected`` con un motivo que dice qué corregir.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from daemon.ids import CORRELATION_ID_PATTERN, new_correlation_id
from daemon.job_headers import MAX_HEADERS, validate_forward_headers, validate_headers
from daemon.job_rejected import JobRejected, quoted
from daemon.jobfile import JOB_FILE_MAX_BYTES, is_candidate_name, read_job_file
from daemon.names import bare_name_problem
from daemon.strict_yaml import load_job_document
from daemon.text import UNSAFE_CHARS as _CONTROL
from daemon.units import parse_duration, parse_size
from daemon.urls import UrlRejected, check_url

__all__ = [
    "JOB_FIELDS",
    "JOB_FILE_MAX_BYTES",
    "JOB_SCHEMA",
    "JOB_SUFFIXES",
    "FieldContext",
    "JobField",
    "JobLimits",
    "JobRejected",
    "JobSpec",
    "is_candidate_name",
    "load_job_document",
    "parse_job",
    "read_job_file",
    "validate_bare_name",
]

JOB_SUFFIXES = (".yaml", ".yml", ".json")
DOWNLOADERS = ("auto", "http", "ytdlp")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_FORMAT = 256
_RETRIES = (0, 100)
_PRIORITY = (-1000, 1000)
_MAX_TIMEOUT = 86400.0


@dataclass(frozen=True, slots=True)
class JobLimits:
    """Lo que la configuración permite a un trabajo."""

    allowed_schemes: tuple[str, ...] = ("http", "https")
    max_bytes: int = 10 * 1024**3
    ytdlp_enabled: bool = True
    postprocess_profiles: tuple[str, ...] = ()  # los perfiles de ``postprocess.profiles`` del config


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Un trabajo validado."""

    id: str
    url: str
    downloader: str = "auto"
    filename: str | None = None
    output_dir: str | None = None
    sha256: str | None = None
    max_bytes: int | None = None
    timeout: float | None = None
    retries: int | None = None
    format: str | None = None
    priority: int = 0
    playlist: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    forward_headers: tuple[str, ...] = ()
    postprocess: str | None = None
    id_source: str = "explicit"  # explicit | stem | generated
    file_sha256: str = ""

    def to_record(self) -> dict[str, Any]:
        """Forma para registros y eventos: sin credenciales ni cabeceras."""
        from daemon.events import redact

        record: dict[str, Any] = {"id": self.id, "url": redact(self.url), "downloader": self.downloader}
        for name in ("filename", "output_dir", "sha256", "max_bytes", "timeout", "retries", "format", "postprocess"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        if self.priority:
            record["priority"] = self.priority
        if self.playlist:
            record["playlist"] = True
        if self.headers:
            record["headers"] = sorted(name for name, _ in self.headers)
        if self.forward_headers:
            record["forward_headers"] = list(self.forward_headers)
        return record


def validate_bare_name(value: Any, field: str) -> str:
    """Un nombre de archivo simple según ``daemon.names`` (las reglas que cumplen también los
    nombres que propone un servidor): sin rutas, sin control ni bidi, sin punto inicial, ≤ 200 bytes."""
    if not isinstance(value, str):
        raise JobRejected(f"'{field}' must be a string, got {type(value).__name__}")
    problem = bare_name_problem(value)
    if problem is not None:
        raise JobRejected(
            f"'{field}' must be a bare file name (no '/', no leading '.', no control, invisible or bidi "
            f"characters, at most 200 bytes), like clip.mp4; got {value[:80]!r}: {problem}"
        )
    return value


def _validate_url(value: Any, limits: JobLimits) -> str:
    try:
        return check_url(value, limits.allowed_schemes).url
    except UrlRejected as exc:
        raise JobRejected(exc.reason) from None


def _validate_output_dir(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobRejected("'output_dir' must be a relative folder name like cats or cats/2026")
    path = PurePosixPath(value)
    if path.is_absolute() or "\\" in value or _CONTROL.search(value):
        raise JobRejected(f"'output_dir' must be relative to the output root, like cats; got {value[:80]!r}")
    parts = [p for p in path.parts if p != "."]
    if not parts or len(parts) > 8:
        raise JobRejected("'output_dir' must name 1 to 8 nested folders inside the output root")
    for part in parts:
        if part == ".." or part.startswith("."):
            raise JobRejected(f"'output_dir' may not contain '..' or hidden folders; got {value[:80]!r}")
        validate_bare_name(part, "output_dir")
    return "/".join(parts)


# --- la tabla de campos -----------------------------------------------------------------------
@dataclass(slots=True)
class FieldContext:
    """Lo que una comprobación de campo puede consultar: los límites y los campos ya validados
    (en el orden de ``JOB_SCHEMA``: ``format`` mira ``downloader``, ``forward_headers`` mira ``headers``)."""

    limits: JobLimits
    values: dict[str, Any] = field(default_factory=dict)


FieldCheck = Callable[[Any, FieldContext], Any]


@dataclass(frozen=True, slots=True)
class JobField:
    """Un campo de un archivo de trabajo: tipo y valor por defecto legibles, qué hace y su comprobación.

    ``check(valor, contexto)`` devuelve el valor normalizado para ``JobSpec`` o lanza
    ``JobRejected``; sólo se llama si el campo está en el archivo (si no, vale el de ``JobSpec``).
    """

    key: str
    kind: str
    default: str
    help: str
    check: FieldCheck = field(repr=False, compare=False)


def _check_url(value: Any, ctx: FieldContext) -> str:
    return _validate_url(value, ctx.limits)


def _check_id(value: Any, _ctx: FieldContext) -> str:
    """Un id explícito (sin él, ``parse_job`` usa el nombre del archivo o genera uno)."""
    if not isinstance(value, str):
        raise JobRejected(f"'id' must be a string, got {_kind_name(value)}; quote it, like id: \"clip-42\"")
    if not CORRELATION_ID_PATTERN.fullmatch(value):
        raise JobRejected(
            f"'id' {str(value)[:80]!r} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, _ and -"
        )
    return value


def _check_downloader(value: Any, ctx: FieldContext) -> str:
    if value not in DOWNLOADERS:
        raise JobRejected(f"'downloader' must be one of {', '.join(DOWNLOADERS)}, got {str(value)[:40]!r}")
    if value == "ytdlp" and not ctx.limits.ytdlp_enabled:
        raise JobRejected("the yt-dlp downloader is disabled in this daemon's config (ytdlp.enabled: false)")
    return str(value)


def _check_filename(value: Any, _ctx: FieldContext) -> str:
    return validate_bare_name(value, "filename")


def _check_sha256(value: Any, _ctx: FieldContext) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise JobRejected("'sha256' must be 64 hexadecimal characters")
    return value.lower()


def _check_max_bytes(value: Any, ctx: FieldContext) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise JobRejected(f"'max_bytes': {exc}") from None
    except OverflowError:
        raise JobRejected("'max_bytes' is too large; give a size like 500MB or 2GiB") from None
    if size <= 0:
        raise JobRejected("'max_bytes' must be above zero")
    return min(size, ctx.limits.max_bytes)


def _check_timeout(value: Any, _ctx: FieldContext) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise JobRejected(f"'timeout': {exc}") from None
    except OverflowError:
        raise JobRejected("'timeout' is too large; give a duration like 600, 30s or 10m (at most 24h)") from None
    if not 0 < seconds <= _MAX_TIMEOUT:
        raise JobRejected("'timeout' must be above zero and at most 24h")
    return seconds


def _int_between(name: str, low: int, high: int) -> FieldCheck:
    def check(value: Any, _ctx: FieldContext) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise JobRejected(f"'{name}' must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _check_format(value: Any, ctx: FieldContext) -> str:
    if ctx.values.get("downloader", "auto") == "http":
        raise JobRejected("'format' is a yt-dlp format selector; it needs downloader: ytdlp or auto")
    if not isinstance(value, str) or not value or len(value) > _MAX_FORMAT or _CONTROL.search(value):
        raise JobRejected(f"'format' must be a string of 1 to {_MAX_FORMAT} printable characters")
    return value


def _check_playlist(value: Any, _ctx: FieldContext) -> bool:
    if not isinstance(value, bool):
        raise JobRejected("'playlist' must be true or false")
    return value


def _check_postprocess(value: Any, ctx: FieldContext) -> str:
    known = ctx.limits.postprocess_profiles
    if not isinstance(value, str) or value not in known:
        listed = ", ".join(known) if known else "none: the config defines no postprocess.profiles"
        raise JobRejected(f"'postprocess' {str(value)[:40]!r} is not a profile of this daemon; known: {listed}")
    return value


JOB_SCHEMA: tuple[JobField, ...] = (
    JobField("url", "string", "required",
             "`http://` or `https://` (the schemes in `download.allowed_schemes`). No spaces or control "
             "characters; must not start with `-`.", _check_url),
    JobField("id", "string", "file stem",
             "Correlation id, `[A-Za-z0-9_-]{1,64}`. Without it, the file's stem when that is a valid id, else a "
             "generated one. An explicit id that is live or already finished is rejected; a stem-derived one gets a "
             "unique suffix instead.", _check_id),
    JobField("downloader", " \\| ".join(f"`{d}`" for d in DOWNLOADERS), "`auto`",
             "`auto` picks yt-dlp when one of its site extractors (not the generic one) claims the URL, else plain "
             "HTTP.", _check_downloader),
    JobField("filename", "bare name", "from the server",
             "The published file's name: no `/` or `\\`, not `.`/`..`, no leading `.`, no control, invisible or "
             "bidi characters (Unicode categories Cc, Cf, Cs, Zl, Zp: e.g. U+202E, U+200B), at most 200 bytes. "
             "Default: the server's name (Content-Disposition, else the URL's last segment), which is never used "
             "raw: it goes through the same rules, NFC-normalised, with each bad character replaced by `_`, "
             "leading dots dropped, cut to 200 bytes keeping the extension, and `download` if nothing is left.",
             _check_filename),
    JobField("output_dir", "relative path", "output root",
             "A folder inside `output_dir` of the config, e.g. `cats/2026`; no `..`, no absolute paths, no hidden "
             "folders. Symlinks inside the output root are never followed.",
             lambda value, _ctx: _validate_output_dir(value)),
    JobField("sha256", "64 hex", "none",
             "Checked before publishing; a mismatch fails the job and publishes nothing.", _check_sha256),
    JobField("max_bytes", "size", "config",
             "Capped by `download.max_bytes`. Enforced from Content-Length and as bytes arrive.", _check_max_bytes),
    JobField("timeout", "duration", "config",
             "Limit for one attempt (`30s`, `10m`). At most 24h, and never above the config's `download.timeout`: "
             "a job may only lower it.", _check_timeout),
    JobField("retries", "integer {}..{}".format(*_RETRIES), "config",
             "Retries after transient errors (connection reset, timeout, 5xx, 408, 429, short body), with "
             "exponential backoff and jitter; Retry-After is honoured. Never above the config's "
             "`download.retries`: a job may only lower it.", _int_between("retries", *_RETRIES)),
    JobField("format", "string", "none",
             "yt-dlp format selector (passed as one argument; never parsed as options). Not allowed with "
             "`downloader: http`.", _check_format),
    JobField("priority", "integer {}..{}".format(*_PRIORITY), "0",
             "Higher runs first; equal priorities in arrival order. Above the config's "
             "`producers.priority_ceiling` (100) only root, the daemon's user and `producers.admin_group` may "
             "submit; others are rejected.", _int_between("priority", *_PRIORITY)),
    JobField("playlist", "boolean", "false", "yt-dlp only: download a whole playlist.", _check_playlist),
    JobField("postprocess", "profile name", "none",
             "A post-processing profile defined by the operator in the config (`postprocess.profiles`), e.g. "
             "`videonote`; it runs on the download before publishing, and only its output is published. An "
             "unknown name is rejected with the known ones listed.", _check_postprocess),
    JobField("headers", "mapping", "none",
             f"Extra request headers (at most {MAX_HEADERS}). Their values never reach logs or records. They are "
             "sent only to the origin (scheme, host, port) of `url`: after a redirect to another origin they are "
             "dropped, unless named in `forward_headers`. yt-dlp sends its headers to every host it visits, so "
             "it gets only those named in `forward_headers` (the rest are withheld: `ytdlp.started` names them).",
             lambda value, _ctx: validate_headers(value)),
    JobField("forward_headers", "list of names", "none",
             "Names from `headers` that may also be sent to another origin after a redirect (e.g. a trace id). "
             "`Authorization`, `Cookie` and `Proxy-Authorization` cannot be listed: credentials never follow a "
             "redirect to another origin. Use it only for headers that are no secret: a server can redirect "
             "anywhere.",
             lambda value, ctx: validate_forward_headers(value, ctx.values.get("headers", ()))),
)
JOB_FIELDS: tuple[str, ...] = tuple(spec.key for spec in JOB_SCHEMA)
_SPECS = {spec.key: spec for spec in JOB_SCHEMA}


# --- análisis y validación ------------------------------------------------------------------
def parse_job(data: bytes, file_name: str, limits: JobLimits) -> JobSpec:
    """Valida un archivo de trabajo ya leído; devuelve ``JobSpec`` o lanza ``JobRejected``."""
    suffix = os.path.splitext(file_name)[1].lower()
    if suffix not in JOB_SUFFIXES:
        raise JobRejected(
            f"job files must be named NAME.yaml, NAME.yml or NAME.json; {file_name[:80]!r} has another suffix"
        )
    document = load_job_document(data, suffix)
    if not isinstance(document, dict):
        raise JobRejected(
            f"a job file must be a mapping of keys to values (got {_kind_name(document)}), "
            "with at least a line like url: https://example.org/file.mp4"
        )
    unknown = sorted(str(k) if isinstance(k, str) else quoted(k, 40) for k in document if k not in _SPECS)
    if unknown:
        raise JobRejected(f"unknown key(s) {', '.join(unknown)[:200]}; allowed: {', '.join(JOB_FIELDS)}")
    if "url" not in document:
        raise JobRejected("the job has no 'url'; add a line like url: https://example.org/file.mp4")
    ctx = FieldContext(limits)
    ctx.values["url"] = _SPECS["url"].check(document["url"], ctx)
    stem = file_name[: -len(suffix)]
    if "id" in document:
        ctx.values["id"], id_source = _SPECS["id"].check(document["id"], ctx), "explicit"
    elif CORRELATION_ID_PATTERN.fullmatch(stem):
        ctx.values["id"], id_source = stem, "stem"
    else:
        ctx.values["id"], id_source = new_correlation_id(), "generated"
    try:
        for spec in JOB_SCHEMA:
            if spec.key not in ("url", "id") and spec.key in document:
                ctx.values[spec.key] = spec.check(document[spec.key], ctx)
    except JobRejected as exc:
        exc.job_id = ctx.values["id"]
        raise
    return JobSpec(**ctx.values, id_source=id_source, file_sha256=hashlib.sha256(data).hexdigest())


def _kind_name(value: Any) -> str:
    """Nombre del tipo de un valor en palabras de YAML/JSON."""
    return {
        dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number",
        float: "a number", type(None): "nothing (null)",
    }.get(type(value), type(value).__name__)
