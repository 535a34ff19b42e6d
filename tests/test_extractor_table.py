"""La tabla de ``_VALID_URL`` hecha en un proceso hijo (``extractor_table``) decide como yt-dlp.

Se compara con el índice en proceso (las clases de yt-dlp importadas, ``suitable()`` incluido)
sobre todas las URL de prueba de los extractores de yt-dlp instalado, más variantes y URL que no
son de ningún sitio; y se comprueba que el daemon no importa yt_dlp para decidir.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from daemon.downloaders.ytdlp import extractors
from daemon.downloaders.ytdlp.extractor_cache import CACHE_NAME, cache_key
from daemon.downloaders.ytdlp.extractor_table import ExtractorTable, load_table_from_child
from daemon.reaper import reap_temp_root
from tests.support.daemon_proc import DaemonProcess
from tests.support.http_server import Behavior, TestServer

_PLAIN = [
    "http://127.0.0.1:8080/media/clip.mp4", "https://example.org/file.bin", "https://example.org/",
    "http://[::1]:9/x", "https://downloads.example.com/a/b/c?token=1#frag", "ftp://example.org/x",
]


def _ytdlp_test_urls() -> list[str]:
    from yt_dlp.extractor import gen_extractor_classes  # type: ignore[import-untyped]

    urls: list[str] = []
    for klass in gen_extractor_classes():
        real = getattr(klass, "real_class", klass)
        for case in list(getattr(real, "_TESTS", None) or []) + list(getattr(real, "_EMBED_TESTS", None) or []):
            url = case.get("url") if isinstance(case, dict) else None
            if isinstance(url, str):
                urls.append(url)
    return urls


@pytest.fixture(scope="module")
def table() -> ExtractorTable:
    return load_table_from_child()


def test_table_decides_like_the_in_process_index(table: ExtractorTable) -> None:
    index = extractors._load_in_process()
    # Clases con su propio suitable(): su patrón filtra, pero la clave exacta sólo la da yt-dlp.
    custom = {key for key, match in index.ordered if isinstance(getattr(match, "__self__", None), type)}
    assert custom and len(custom) < 200
    urls = _ytdlp_test_urls()
    assert len(urls) > 3000  # yt-dlp trae miles de URL de prueba: si no, la comparación no dice nada
    variants = [u.upper() for u in urls[::7]] + [u + "?x=1" for u in urls[::11]] + [u[:-1] for u in urls[::13]]
    claimed = 0
    for url in urls + variants + _PLAIN:
        fast = table.first_claim(url)
        exact = next((key for key, match in index.ordered if extractors._safe(match, url)), None)
        assert (fast is None) == (exact is None), url
        if exact is not None and not {exact, fast} & custom:
            assert fast == exact, url
        claimed += exact is not None
    assert claimed > 2000
    for url in _PLAIN[:3]:
        assert table.first_claim(url) is None


def test_candidates_are_few_for_a_plain_url(table: ExtractorTable) -> None:
    # El filtro de 4-gramas deja probar unas decenas de patrones de ~1.800, no todos.
    assert len(table.entries) > 1000
    assert len(table.candidates("http://127.0.0.1:8080/f/s2-r0-00001.bin")) < 60
    # Una URL no ASCII se prueba contra todos (IGNORECASE de Unicode: ſ, ı, K...).
    assert len(table.candidates("http://exámple.org/x")) == len(table.entries)
    started = time.perf_counter()
    for i in range(2000):
        table.first_claim(f"http://127.0.0.1:8080/f/s2-{i}.bin")
    per_call = (time.perf_counter() - started) / 2000
    print(f"first_claim: {per_call * 1e6:.0f} us per plain URL")


def test_ytdlp_is_never_imported_by_the_daemon_to_route() -> None:
    code = (
        "import sys, daemon, daemon.downloaders, daemon.downloaders.ytdlp as y\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        "before = rss()\n"
        "assert y.pick_downloader('https://example.org/a.bin') == 'http'\n"
        "assert y.pick_downloader('https://www.youtube.com/watch?v=dQw4w9WgXcQ') == 'ytdlp'\n"
        "print('yt_dlp' in sys.modules, round(rss() - before, 1))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported, grown = proc.stdout.split()
    assert imported == "False"
    assert float(grown) < 6.0, f"routing grew RSS by {grown} MiB"


def test_the_child_reads_flags_as_re_compile_would(table: ExtractorTable) -> None:
    # El hijo ya no compila los patrones: saca las banderas del análisis. Deben ser las de re.compile.
    sample = table.entries[::5]
    assert any(entry.flags & re.VERBOSE for entry in table.entries)  # hay patrones con (?x): la muestra dice algo
    for entry in sample:
        assert re.compile(entry.source).flags == entry.flags, entry.key


def _cached_key(folder: Path) -> bytes:
    return (folder / CACHE_NAME).read_bytes().split(b"\n", 1)[0]


def test_the_table_is_kept_in_the_temp_dir_and_rebuilt_when_it_does_not_match(tmp_path: Path) -> None:
    first = load_table_from_child(tmp_path)
    assert first.source == "child"
    key = cache_key()
    assert key is not None and "yt_dlp" in key and "version.py=" in key
    assert _cached_key(tmp_path) == key.encode()
    body = (tmp_path / CACHE_NAME).read_bytes().split(b"\n", 1)[1]

    # Una copia con la clave de este yt-dlp se usa tal cual (se nota en la versión marcada).
    marked = orjson.loads(body)
    marked["version"] = "marked-copy"
    (tmp_path / CACHE_NAME).write_bytes(key.encode() + b"\n" + orjson.dumps(marked))
    again = load_table_from_child(tmp_path)
    assert (again.source, again.version) == ("cache", "marked-copy")
    assert [e.source for e in again.entries] == [e.source for e in first.entries]
    assert again.first_claim("https://www.youtube.com/watch?v=dQw4w9WgXcQ") == "Youtube"

    # Otra clave (otro yt-dlp, otro daemon, otro Python) o una copia rota: se rehace y se reescribe.
    for stale in (b"format=1 yt-dlp=1999.01.01\n" + body, key.encode() + b"\n" + body[: len(body) // 2]):
        (tmp_path / CACHE_NAME).write_bytes(stale)
        rebuilt = load_table_from_child(tmp_path)
        assert (rebuilt.source, rebuilt.version) == ("child", first.version)
        assert _cached_key(tmp_path) == key.encode()
        assert orjson.loads((tmp_path / CACHE_NAME).read_bytes().split(b"\n", 1)[1]) == orjson.loads(body)

    # Sin poder escribir (carpeta que no existe), la tabla vale igual y no queda nada a medias.
    missing = tmp_path / "gone"
    assert load_table_from_child(missing).source == "child"
    assert not missing.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(CACHE_NAME)) == [CACHE_NAME]  # sin .tmp


def test_a_restarted_daemon_routes_with_the_saved_table(tmp_path: Path, test_server: TestServer) -> None:
    url = test_server.add("/page-or-file", Behavior(data=b"x" * 5000))
    daemon = DaemonProcess(tmp_path)
    for life, expected in enumerate(("child", "cache")):
        with daemon:
            daemon.drop_job({"url": url, "id": f"auto-{life}"})  # downloader auto: consulta la tabla
            folder, _record = daemon.wait_record(f"auto-{life}", timeout=60)
            assert folder == "done"
            [event] = daemon.events(name="daemon.extractor_table")[life:]
            assert event["source"] == expected, event
        assert (daemon.temp_root / CACHE_NAME).is_file()
        # El recolector sólo toca videonote_*: la tabla guardada sobrevive a una pasada sin edad mínima.
        reap_temp_root(daemon.temp_root, max_age=0)
        assert (daemon.temp_root / CACHE_NAME).is_file()
        assert daemon.temp_dirs() == []
