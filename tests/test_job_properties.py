"""Propiedades de parse_job con hypothesis: ante cualquier entrada, acepta o rechaza con un motivo.

Se generan documentos (mapas con claves conocidas y desconocidas y valores de cualquier tipo),
texto YAML escrito a mano, bytes al azar y texto al azar. Nunca debe salir otra excepción que
``JobRejected``: en el daemon, cualquier otra dejaría el archivo atascado en active/. Lo aceptado
debe cumplir los invariantes que protegen el sistema de archivos.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import unicodedata
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.jobs import JOB_FIELDS, JobLimits, JobRejected, JobSpec, parse_job

ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = JobLimits(allowed_schemes=("http", "https"), max_bytes=10 * 1024**3)
NAMES = st.sampled_from(["job.yaml", "job.yml", "job.json", "clip-42.yaml", "a b.yaml", "x.YAML", "job.txt"])

# --- estrategias ----------------------------------------------------------------------------------
# Texto con lo peligroso bien representado: separadores, puntos, control, bidi, no BMP.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("/\\.:-_ ~%@?#&=\t\r\n\x00\x1b\x7f\x85\u2028\u202e\ufeff")),
        st.characters(codec="utf-8"),
    ),
    max_size=40,
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(), tricky_text,
)
any_value = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
urls = st.one_of(
    st.sampled_from([
        "https://example.org/clip.mp4", "http://127.0.0.1:8080/a", "https://user:pw@example.org/x",
        "file:///etc/passwd", "ftp://example.org/x", "data:text/plain,hi", "-o /tmp/x", "//example.org/x",
        "http:///x", "https://[::1]:0/x", "https://example.org:99999/", "javascript:alert(1)", "HTTPS://EXAMPLE.ORG",
    ]),
    st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
              st.sampled_from(["http", "https", "ftp", "file", "HTTP", ""]), tricky_text, tricky_text),
    tricky_text,
)
path_like = st.one_of(
    st.sampled_from(["clip.mp4", "cats", "cats/2026", "../x", "a/../../b", "/etc", ".", "..", ".hidden", "a\\b",
                     "./a//b/", "a/./b", "a" * 250, "con", "x/y/z/w/v/u/t/s/r"]),
    tricky_text,
    st.lists(st.sampled_from(["..", ".", "a", "", "b.mp4", ".x"]), max_size=10).map("/".join),
)
# Números enormes incluidos: más allá de 1e308 un float es infinito y int(inf) desborda.
huge_integers = st.integers(min_value=10**300, max_value=10**420)
sizes = st.one_of(
    st.integers(), huge_integers, tricky_text,
    st.from_regex(r"\A-?\d{1,25}(\.\d{1,3})? ?(B|KB|MB|GB|TB|KiB|MiB|GiB|k|m|g|x)?\Z"),
    st.from_regex(r"\A\d{300,420}(GiB|B)?\Z"),
)
durations = st.one_of(
    st.integers(), huge_integers, st.floats(), tricky_text,
    st.from_regex(r"\A-?\d{1,25}(\.\d{1,3})?(ms|s|m|h|d|y)?\Z"), st.from_regex(r"\A\d{300,420}(ms|s|h)?\Z"),
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "url": urls,
    "id": st.one_of(st.from_regex(rf"\A{ID_PATTERN}\Z"), tricky_text, st.integers()),
    "downloader": st.one_of(st.sampled_from(["auto", "http", "ytdlp", "wget", "HTTP"]), any_value),
    "filename": path_like,
    "output_dir": path_like,
    "sha256": st.one_of(st.from_regex(r"\A[0-9a-fA-F]{62,66}\Z"), tricky_text),
    "max_bytes": sizes,
    "timeout": durations,
    "retries": st.one_of(st.integers(min_value=-5, max_value=200), st.booleans(), tricky_text),
    "format": st.one_of(st.sampled_from(["best", "best[height<=720]"]), tricky_text),
    "priority": st.one_of(st.integers(min_value=-2000, max_value=2000), st.floats(), tricky_text),
    "playlist": st.one_of(st.booleans(), st.sampled_from(["true", "yes", 1, 0])),
    "headers": st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["Authorization", "authorization", "Host", "X-A", "Bad Name"]),
                                  tricky_text),
                        st.one_of(tricky_text, st.integers()), max_size=4),
        any_value,
    ),
    "postprocess": st.one_of(st.sampled_from(["videonote", "nosuch", "", "-x"]), tricky_text),
    "forward_headers": st.one_of(
        st.lists(st.one_of(st.sampled_from(["X-Api-Key", "Authorization", "Cookie", "Bad Name"]), tricky_text),
                 max_size=3),
        any_value,
    ),
}
documents = st.builds(
    lambda extra, known: {**extra, **known},
    st.dictionaries(st.one_of(tricky_text, st.integers(), st.booleans()), any_value, max_size=2),
    st.fixed_dictionaries({}, optional={key: st.one_of(FIELD_VALUES[key], any_value) for key in JOB_FIELDS}),
)
# Casi válidos: una URL buena y uno o dos campos alterados, para llegar hondo en la validación.
near_valid = st.fixed_dictionaries(
    {"url": st.sampled_from(["https://example.org/clip.mp4", "http://cdn.example.net/a/b.webm?x=1"])},
    optional={key: FIELD_VALUES[key] for key in JOB_FIELDS if key != "url"},
)


def _unquoted_yaml(document: dict[Any, Any]) -> bytes:
    """YAML escrito como lo haría una persona: ``clave: valor`` sin comillas (valores como 10m, yes, 0x1)."""
    lines = []
    for key, value in document.items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"{key}: {shown}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# --- la propiedad ---------------------------------------------------------------------------------
def check(data: bytes, name: str, limits: JobLimits = LIMITS) -> JobSpec | None:
    """parse_job acepta (con invariantes) o rechaza con motivo; cualquier otra excepción sube."""
    try:
        job = parse_job(data, name, limits)
    except JobRejected as exc:
        assert isinstance(exc.reason, str) and exc.reason.strip(), f"empty reason for {data[:200]!r}"
        assert exc.reason.isprintable(), f"reason with control characters: {exc.reason!r}"
        return None
    assert isinstance(job, JobSpec)
    assert_job_invariants(job, limits)
    return job


def no_controls(text: str) -> bool:
    """Sin control C0/C1, separadores de línea, sustitutos ni controles bidi (sí letras sin asignar)."""
    return not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in BIDI_CONTROLS for ch in text)


def assert_job_invariants(job: JobSpec, limits: JobLimits) -> None:
    assert re.fullmatch(ID_PATTERN, job.id), job.id
    assert job.id_source in ("explicit", "stem", "generated")
    parts = urlsplit(job.url)
    assert parts.scheme.lower() in limits.allowed_schemes and parts.hostname
    assert no_controls(job.url) and " " not in job.url and not job.url.startswith("-")
    host = parts.hostname.rstrip(".")
    if all(re.fullmatch(r"0x[0-9a-f]*|[0-9]+", label) for label in host.split(".")):
        ipaddress.IPv4Address(host)  # una IPv4 aceptada está en forma canónica a.b.c.d
    if job.filename is not None:
        assert job.filename not in ("", ".", "..") and not job.filename.startswith(".")
        assert "/" not in job.filename and "\\" not in job.filename and no_controls(job.filename)
        assert len(job.filename.encode("utf-8")) <= 200
    if job.output_dir is not None:
        path = PurePosixPath(job.output_dir)
        assert not path.is_absolute() and no_controls(job.output_dir)
        assert all(part not in ("", ".", "..") and not part.startswith(".") for part in path.parts)
        assert job.output_dir == "/".join(path.parts) and "\\" not in job.output_dir
    if job.max_bytes is not None:
        assert 0 < job.max_bytes <= limits.max_bytes
    if job.timeout is not None:
        assert math.isfinite(job.timeout) and 0 < job.timeout <= 86400
    if job.retries is not None:
        assert 0 <= job.retries <= 100
    assert -1000 <= job.priority <= 1000 and isinstance(job.playlist, bool)
    assert job.downloader in ("auto", "http", "ytdlp")
    for header, value in job.headers:
        assert header.isascii() and header.isprintable() and ":" not in header and no_controls(value)
    orjson.dumps(job.to_record())  # los registros deben poder escribirse siempre


# --- pruebas ----------------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(document=documents, name=NAMES, form=st.sampled_from(["yaml", "json", "unquoted"]))
@example(document={"url": "https://example.org/clip.mp4", "id": "clip-42"}, name="job.yaml", form="yaml")
def test_generated_documents_are_accepted_or_rejected(document: dict[Any, Any], name: str, form: str) -> None:
    if form == "yaml":
        data = yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    elif form == "json":
        data = json.dumps(document, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        data = _unquoted_yaml(document)
    job = check(data, name)
    if job is not None and form != "unquoted" and isinstance(document.get("id"), str):
        assert job.id == document["id"] and job.id_source == "explicit"


@PROPERTY_SETTINGS
@given(document=near_valid, name=NAMES, as_json=st.booleans())
def test_near_valid_documents_keep_invariants(document: dict[str, Any], name: str, as_json: bool) -> None:
    if as_json:
        data = json.dumps(document, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        data = yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    check(data, name.replace(".txt", ".yaml"))


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=2048), name=NAMES)
def test_random_bytes_are_accepted_or_rejected(data: bytes, name: str) -> None:
    check(data, name)


@PROPERTY_SETTINGS
@given(
    text=st.text(alphabet=st.one_of(st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\n ")), st.characters()),
                 max_size=300),
    name=NAMES,
)
def test_random_yaml_text_is_accepted_or_rejected(text: str, name: str) -> None:
    check(text.encode("utf-8", "surrogatepass"), name)


@PROPERTY_SETTINGS
@given(prefix=st.sampled_from(["url: https://example.org/clip.mp4\n", "url: https://example.org/clip.mp4\nid: p1\n"]),
       tail=st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"\n ,?#0123456789.")), max_size=200))
def test_valid_prefix_with_yaml_garbage(prefix: str, tail: str) -> None:
    check((prefix + tail).encode(), "job.yaml")
