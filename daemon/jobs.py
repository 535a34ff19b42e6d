"""Archivos de trabajo: lectura segura, análisis estricto y validación campo a campo.

Un archivo de trabajo se lee con O_NOFOLLOW|O_NONBLOCK (un FIFO nunca bloquea al daemon), debe
ser un archivo regular con un solo enlace y de como mucho 64 KiB, texto UTF-8, y se analiza como
JSON (``.json``) o como YAML sin alias, anclas ni etiquetas (``.yaml``/``.yml``). Cualquier otra
cosa es ``JobRejected`` con un motivo que dice qué corregir.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import orjson
import yaml

from daemon.ids import CORRELATION_ID_PATTERN, new_correlation_id
from daemon.names import bare_name_problem
from daemon.units import parse_duration, parse_size
from daemon.urls import CONTROL_CHARS as _CONTROL
from daemon.urls import UrlRejected, check_url

__all__ = [
    "JOB_FIELDS",
    "JOB_FILE_MAX_BYTES",
    "JOB_SUFFIXES",
    "JobLimits",
    "JobRejected",
    "JobSpec",
    "is_candidate_name",
    "load_job_document",
    "parse_job",
    "read_job_file",
    "validate_bare_name",
]

JOB_FILE_MAX_BYTES = 64 * 1024
JOB_SUFFIXES = (".yaml", ".yml", ".json")
DOWNLOADERS = ("auto", "http", "ytdlp")
JOB_FIELDS = (
    "url", "id", "downloader", "filename", "output_dir", "sha256", "max_bytes", "timeout",
    "retries", "format", "priority", "playlist", "headers", "forward_headers",
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_DEPTH = 8


class JobRejected(Exception):
    """El archivo no se puede aceptar; ``reason`` dice qué corregir."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        reason = _printable(reason)[:1000]
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


def _printable(text: str) -> str:
    """Escapa lo no imprimible (ESC, saltos de línea, bidi...) para que un motivo sea una sola línea segura."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _shown(value: Any, limit: int = 80) -> str:
    """Un valor del archivo tal como se cita en un motivo: repr recortado, sin caracteres de control."""
    return repr(value)[:limit]


@dataclass(frozen=True, slots=True)
class JobLimits:
    """Lo que la configuración permite a un trabajo."""

    allowed_schemes: tuple[str, ...] = ("http", "https")
    max_bytes: int = 10 * 1024**3
    ytdlp_enabled: bool = True


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
    id_source: str = "explicit"  # explicit | stem | generated
    file_sha256: str = ""

    def to_record(self) -> dict[str, Any]:
        """Forma para registros y eventos: sin credenciales ni cabeceras."""
        from daemon.events import redact

        record: dict[str, Any] = {"id": self.id, "url": redact(self.url), "downloader": self.downloader}
        for name in ("filename", "output_dir", "sha256", "max_bytes", "timeout", "retries", "format"):
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


def is_candidate_name(name: str) -> bool:
    """Si un nombre en incoming/ ya es una entrega (no un temporal de un productor)."""
    return not name.startswith(".") and not name.endswith(".tmp")


def _kind_of(mode: int) -> str | None:
    """Qué es un archivo que no es regular, dicho para una persona; None si es regular."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _require_regular(st: os.stat_result) -> None:
    kind = _kind_of(st.st_mode)
    if kind is not None:
        raise JobRejected(f"the job file is {kind}; write a regular file in spool/tmp/ and rename it into incoming/")


def read_job_file(name: str, dir_fd: int) -> tuple[bytes, os.stat_result]:
    """Lee un archivo reclamado sin seguir enlaces ni bloquearse; valida tipo, enlaces y tamaño.

    Primero ``lstat``: un FIFO, un dispositivo, un socket o un enlace simbólico se rechazan sin
    abrirlos (abrir un dispositivo puede tener efectos). Después se abre con O_NOFOLLOW|O_NONBLOCK
    y ``fstat`` confirma que es el mismo inodo y sigue siendo un archivo regular.
    """
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise JobRejected("the job file disappeared before it could be read; write it again") from None
    except OSError as exc:
        raise JobRejected(f"cannot examine the job file: {exc.strerror}; check its permissions") from None
    _require_regular(before)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JobRejected("the job file is a symbolic link (links are never followed); "
                              "write a regular file in spool/tmp/ and rename it into incoming/") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):
            raise JobRejected(
                "the job file is a socket or a device, not a regular file; write a regular file"
            ) from None
        raise JobRejected(
            f"cannot open the job file: {exc.strerror}; make it readable by the daemon's user"
        ) from None
    try:
        st = os.fstat(fd)
        _require_regular(st)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise JobRejected("the job file was replaced while it was being read; write it again")
        if st.st_nlink > 1:
            raise JobRejected(
                "the job file has other hard links; write a new file in spool/tmp/ and rename it into incoming/"
            )
        if st.st_size > JOB_FILE_MAX_BYTES:
            raise JobRejected(
                f"the job file is {st.st_size} bytes; the limit is {JOB_FILE_MAX_BYTES} bytes (64 KiB): "
                "a job file only names a URL and a few options"
            )
        chunks = []
        remaining = JOB_FILE_MAX_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > JOB_FILE_MAX_BYTES:
            raise JobRejected(f"the job file grew past the limit of {JOB_FILE_MAX_BYTES} bytes (64 KiB)")
        return data, st
    except OSError as exc:
        raise JobRejected(f"cannot read the job file: {exc.strerror}; write it again") from None
    finally:
        os.close(fd)


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _JobLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Cargador seguro que además rechaza claves repetidas y claves de fusión (``<<``).

    PyYAML se queda en silencio con el último valor de una clave repetida: ``url`` escrito dos
    veces descargaría algo distinto de lo que una persona lee primero.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                raise JobRejected("YAML merge keys (<<) are not allowed in job files; write each key out")
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):
            seen: list[Any] = []
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise JobRejected(f"duplicate key {_shown(key, 40)} in the job file; write each key once")
                seen.append(key)
        return mapping


def _check_yaml_events(text: str) -> None:
    """Rechaza alias, anclas, etiquetas explícitas y anidamiento profundo antes de construir nada."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise JobRejected("YAML anchors and aliases (&x, *x) are not allowed in job files; write values out")
        if getattr(event, "tag", None) is not None:
            raise JobRejected(f"YAML tags like {event.tag!r} are not allowed in job files; use plain values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                raise JobRejected(f"the job file nests deeper than {_MAX_DEPTH} levels; use a flat mapping")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(document: Any, limit: int) -> bool:
    """Si un documento ya construido anida listas o mapas a más de ``limit`` niveles (iterativo)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` que rechaza claves repetidas (orjson y json se quedan con la última)."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise JobRejected(f"duplicate key {_shown(key, 40)} in the job file; write each key once")
        mapping[key] = value
    return mapping


def _load_json(text: str) -> Any:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise JobRejected(f"the job file nests deeper than {_MAX_DEPTH} levels; use a flat mapping") from None
        raise JobRejected(f"not valid JSON: {exc}; check the file with `jq . FILE`") from None
    if _too_deep(document, _MAX_DEPTH):
        raise JobRejected(f"the job file nests deeper than {_MAX_DEPTH} levels; use a flat mapping")
    try:
        # orjson ya validó el texto y la profundidad: aquí sólo se buscan claves repetidas.
        json.loads(text, object_pairs_hook=_json_pairs)
    except (ValueError, RecursionError) as exc:
        raise JobRejected(f"not valid JSON: {exc}") from None
    return document


def load_job_document(data: bytes, suffix: str) -> Any:
    """Convierte los bytes de un archivo de trabajo en un documento (JSON o YAML estricto)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobRejected("the job file is UTF-16 or UTF-32 text (it starts with a byte order mark); save it as UTF-8")
    if b"\x00" in data:
        raise JobRejected(
            "the job file contains NUL bytes (binary data or UTF-16/UTF-32 text); it must be UTF-8 text (YAML or JSON)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobRejected(f"the job file is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise JobRejected("the job file is empty; write at least a line like url: https://example.org/file.mp4")
    if suffix == ".json":
        return _load_json(text)
    try:
        _check_yaml_events(text)
        documents = list(yaml.load_all(text, Loader=_JobLoader))
    except JobRejected:
        raise
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('in "<unicode string>", ', "").split())
        raise JobRejected(f"not valid YAML: {detail[:300]}") from None
    except RecursionError:
        raise JobRejected(f"the job file nests deeper than {_MAX_DEPTH} levels; use a flat mapping") from None
    except (ValueError, OverflowError) as exc:
        # Fechas imposibles (2024-02-30), enteros de miles de cifras...: el mensaje de Python,
        # sin su consejo para programadores tras el punto y coma.
        detail = str(exc).split(";", 1)[0][:160]
        raise JobRejected(
            f"a value in the job file cannot be read ({detail}); quote dates, times and very long numbers"
        ) from None
    if not documents:
        raise JobRejected("the job file holds only comments; write at least a line like url: https://example.org/file.mp4")
    if len(documents) != 1:
        raise JobRejected(f"the job file holds {len(documents)} YAML documents; put exactly one job in a file")
    return documents[0]


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


def _kind_name(value: Any) -> str:
    """Nombre del tipo de un valor en palabras de YAML/JSON."""
    return {
        dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number",
        float: "a number", type(None): "nothing (null)",
    }.get(type(value), type(value).__name__)


def _validate_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobRejected(f"'{field}' must be an integer from {low} to {high}, got {value!r}")
    return value


def _validate_text(value: Any, field: str, max_len: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len or _CONTROL.search(value):
        raise JobRejected(f"'{field}' must be a string of 1 to {max_len} printable characters")
    return value


def _validate_headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or len(value) > 32:
        raise JobRejected("'headers' must be a mapping of at most 32 header names to string values")
    headers = []
    seen: set[str] = set()
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise JobRejected(f"header name {str(name)[:40]!r} is not a valid HTTP header name")
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection", "range", "if-range"):
            raise JobRejected(f"header {name!r} is set by the downloader and cannot be given in a job")
        if not isinstance(header_value, str) or _CONTROL.search(header_value) or len(header_value) > 4096:
            raise JobRejected(f"header {name!r} must be a single-line string of at most 4096 characters")
        if name.lower() in seen:
            raise JobRejected(f"header {name!r} is given twice (header names ignore case); keep one")
        seen.add(name.lower())
        headers.append((name, header_value))
    return tuple(headers)


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
    unknown = sorted(str(k) if isinstance(k, str) else _shown(k, 40) for k in document if k not in JOB_FIELDS)
    if unknown:
        raise JobRejected(f"unknown key(s) {', '.join(unknown)[:200]}; allowed: {', '.join(JOB_FIELDS)}")
    if "url" not in document:
        raise JobRejected("the job has no 'url'; add a line like url: https://example.org/file.mp4")
    fields: dict[str, Any] = {"url": _validate_url(document["url"], limits)}
    stem = file_name[: -len(suffix)]
    if "id" in document:
        if not isinstance(document["id"], str):
            raise JobRejected(
                f"'id' must be a string, got {_kind_name(document['id'])}; quote it, like id: \"clip-42\""
            )
        if not CORRELATION_ID_PATTERN.fullmatch(document["id"]):
            raise JobRejected(
                f"'id' {str(document['id'])[:80]!r} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, _ and -"
            )
        fields["id"], fields["id_source"] = document["id"], "explicit"
    elif CORRELATION_ID_PATTERN.fullmatch(stem):
        fields["id"], fields["id_source"] = stem, "stem"
    else:
        fields["id"], fields["id_source"] = new_correlation_id(), "generated"
    job_id = fields["id"]
    try:
        _validate_optional_fields(document, fields, limits)
    except JobRejected as exc:
        exc.job_id = job_id
        raise
    fields["file_sha256"] = hashlib.sha256(data).hexdigest()
    return JobSpec(**fields)


def _validate_optional_fields(document: dict[Any, Any], fields: dict[str, Any], limits: JobLimits) -> None:
    downloader = document.get("downloader", "auto")
    if downloader not in DOWNLOADERS:
        raise JobRejected(f"'downloader' must be one of {', '.join(DOWNLOADERS)}, got {str(downloader)[:40]!r}")
    if downloader == "ytdlp" and not limits.ytdlp_enabled:
        raise JobRejected("the yt-dlp downloader is disabled in this daemon's config (ytdlp.enabled: false)")
    fields["downloader"] = downloader
    if "filename" in document:
        fields["filename"] = validate_bare_name(document["filename"], "filename")
    if "output_dir" in document:
        fields["output_dir"] = _validate_output_dir(document["output_dir"])
    if "sha256" in document:
        value = document["sha256"]
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise JobRejected("'sha256' must be 64 hexadecimal characters")
        fields["sha256"] = value.lower()
    if "max_bytes" in document:
        try:
            size = parse_size(document["max_bytes"])
        except ValueError as exc:
            raise JobRejected(f"'max_bytes': {exc}") from None
        except OverflowError:
            raise JobRejected("'max_bytes' is too large; give a size like 500MB or 2GiB") from None
        if size <= 0:
            raise JobRejected("'max_bytes' must be above zero")
        fields["max_bytes"] = min(size, limits.max_bytes)
    if "timeout" in document:
        try:
            seconds = parse_duration(document["timeout"])
        except ValueError as exc:
            raise JobRejected(f"'timeout': {exc}") from None
        except OverflowError:
            raise JobRejected("'timeout' is too large; give a duration like 600, 30s or 10m (at most 24h)") from None
        if not 0 < seconds <= 86400:
            raise JobRejected("'timeout' must be above zero and at most 24h")
        fields["timeout"] = seconds
    if "retries" in document:
        fields["retries"] = _validate_int(document["retries"], "retries", 0, 100)
    if "priority" in document:
        fields["priority"] = _validate_int(document["priority"], "priority", -1000, 1000)
    if "format" in document:
        if downloader == "http":
            raise JobRejected("'format' is a yt-dlp format selector; it needs downloader: ytdlp or auto")
        fields["format"] = _validate_text(document["format"], "format", 256)
    if "playlist" in document:
        if not isinstance(document["playlist"], bool):
            raise JobRejected("'playlist' must be true or false")
        fields["playlist"] = document["playlist"]
    if "headers" in document:
        fields["headers"] = _validate_headers(document["headers"])
    if "forward_headers" in document:
        fields["forward_headers"] = _validate_forward_headers(document["forward_headers"], fields.get("headers", ()))


def _validate_forward_headers(value: Any, headers: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Cabeceras del trabajo que también pueden ir a otro origen tras una redirección: nombres de
    ``headers``, escritos en una lista (sin ellas, las cabeceras sólo van al origen de ``url``)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise JobRejected("'forward_headers' must be a list of header names from 'headers', like [X-Trace-Id]")
    given = {name.lower(): name for name, _ in headers}
    chosen: list[str] = []
    for name in value:
        if name.lower() not in given:
            raise JobRejected(
                f"'forward_headers' names {name[:40]!r}, which is not in 'headers'; list only headers the job sets"
            )
        if name.lower() in ("authorization", "cookie", "proxy-authorization"):
            raise JobRejected(f"'forward_headers' cannot name {name!r}: credentials never follow a redirect to "
                              "another origin; give the final URL instead")
        if given[name.lower()] not in chosen:
            chosen.append(given[name.lower()])
    return tuple(chosen)

