"""El atajo de YAML plano (``daemon.flat_yaml``) da lo mismo que el cargador completo, o se aparta.

Para cada texto que el atajo acepta, el resultado debe ser idéntico (valor y tipo) al de
``strict_yaml._load_yaml`` (libyaml, SafeLoader, YAML 1.1); si el cargador completo lo rechaza,
el atajo no puede aceptarlo. Se generan líneas con los escalares que YAML 1.1 resuelve de forma
sorprendente (booleanos, nulos, octales, sexagesimales, fechas, infinitos, comillas, comentarios,
controles), y se comprueba que lo que escribe ``videonote-dl submit`` sí toma el atajo.
"""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.flat_yaml import parse_flat_yaml
from daemon.job_rejected import JobRejected
from daemon.strict_yaml import _load_yaml, load_job_document

TRICKY_SCALARS = [
    "yes", "Yes", "YES", "no", "NO", "on", "Off", "true", "False", "null", "Null", "NULL", "~", "y", "n", "",
    "0", "-0", "007", "0o7", "0x1F", "1_000", "1:30", "190:20:30", "-5", "+5", "12345678901234567890123",
    "1e5", "1.5", ".5", ".inf", "-.inf", ".NaN", "2024-01-02", "2024-1-2 10:00:00", "=", "<<",
    "http://127.0.0.1:8080/f/x.bin", "https://u:p@h/x?a=1&b=2#frag", "a:b", "a:", "a: b", "a #c", "a#c",
    "'q'", "'it''s'", '"d"', '"esc\\n"', '"tab\t"', "'a' # c", "é", "a\x07", "[a]", "{a: 1}", "&x a", "*x",
    "!!str 5", "%x", "@x", "`x", "|", ">", "- a", "? a", "a,b", "a!b", "e5", "inf", "nan", "Y", "off:",
]
KEYS = ["url", "id", "filename", "priority", "on", "no", "y", "_x", "Url", "a-b", "<<", "null", "url"]

# Sobre todo líneas bien formadas (si no, el atajo casi nunca aceptaría y no habría nada que comparar).
URLISH = st.text(alphabet=st.sampled_from(list("abcxyzAZ0189._/:?=&%+~,@!*$;#()-'\" ")), max_size=14)
value = st.one_of(st.sampled_from(TRICKY_SCALARS), URLISH.map(lambda t: "h" + t), URLISH,
                  URLISH.map(lambda t: f"'{t}'"), URLISH.map(lambda t: f'"{t}"'),
                  st.integers(-10**25, 10**25).map(str), st.text(max_size=6))
good_line = st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(KEYS), value)
odd_line = st.one_of(
    st.builds(lambda k, sp, v: f"{k}:{sp}{v}", st.sampled_from(KEYS), st.sampled_from(["", "\t", "  "]), value),
    st.sampled_from(["# a comment", "#", "# é", "# \x07", "", "   ", "---", "...", "  url: x", "\turl: x",
                     "url: x\r"]),
)
line = st.one_of(good_line, good_line, good_line, odd_line)


def _full(text: str) -> object:
    try:
        return ("ok", _load_yaml(text))
    except JobRejected:
        return ("rejected", None)


@settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=6), st.sampled_from(["\n", "", "\n\n"]))
@example(["url: http://127.0.0.1:8080/f/a.bin", "id: s2-r0-00001", "filename: a.bin"], "\n")
@example(["url: x", "priority: 12345678901234567890"], "\n")
@example(["url: yes"], "\n")
def test_the_shortcut_agrees_with_the_full_loader(lines: list[str], end: str) -> None:
    text = "\n".join(lines) + end
    fast = parse_flat_yaml(text)
    if fast is None:
        return
    status, full = _full(text)
    assert status == "ok", (text, fast)
    assert full == fast, text
    assert isinstance(full, dict)
    assert [type(v) for v in full.values()] == [type(v) for v in fast.values()], text


def test_every_tricky_scalar_alone_agrees_with_the_full_loader() -> None:
    accepted = 0
    for scalar in TRICKY_SCALARS:
        for text in (f"url: {scalar}\n", f"id: '{scalar}'\n", f'id: "{scalar}"\n', f"{scalar}: x\n"):
            fast = parse_flat_yaml(text)
            if fast is not None:
                accepted += 1
                assert _full(text) == ("ok", fast), text
                assert [type(v) for v in fast.values()] == [type(v) for v in _load_yaml(text).values()], text
    assert accepted > 40  # la lista no es sólo de rechazos: el atajo se ejercita


def test_what_submit_writes_takes_the_shortcut() -> None:
    job = {"url": "https://cdn.example.org/v/clip-42.mp4?sig=abc&exp=1700000000", "id": "clip-42",
           "filename": "clip-42.mp4", "priority": 5, "retries": 2, "downloader": "auto"}
    text = yaml.safe_dump(job, sort_keys=False)
    assert parse_flat_yaml(text) == job
    assert load_job_document(text.encode(), ".yaml") == job


def test_what_it_does_not_know_goes_the_full_way() -> None:
    # Cada uno de éstos lo decide libyaml: el atajo se aparta (None), nunca adivina.
    for text in ["url: yes\n", "id: 007\n", "id: 1:30\n", "url: x\nurl: y\n", "url: x # c\n", "  url: x\n",
                 "headers:\n  A: b\n", "url: x\r\n", "---\nurl: x\n", "# only a comment\n", "url: 'it''s'\n",
                 "url: \"a\\tb\"\n", "on: x\n", "url: a:\n", "priority: 12345678901234567890123\n",
                 "# \x1b[31m\nurl: x\n"]:
        assert parse_flat_yaml(text) is None, text
