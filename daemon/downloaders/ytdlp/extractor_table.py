"""La tabla de ``_VALID_URL`` de yt-dlp, hecha en un proceso hijo e indexada por 4-gramas.

Importar los extractores de yt-dlp cuesta ~19 MiB de RSS que un proceso de larga vida no
devuelve nunca. Para ``downloader: auto`` el daemon sólo necesita sus ``_VALID_URL``: un proceso
hijo (``write_table``, lanzado con ``python -c``) importa yt-dlp, vuelca en JSON los
patrones en el orden de yt-dlp con su índice (abajo) y termina; el daemon guarda las cadenas y
compila sólo las que llega a probar.

Índice: de cada patrón se saca un conjunto de literales de los que toda coincidencia contiene
al menos uno (rachas de ``LITERAL`` del árbol de ``re._parser``, con los grupos en línea; una
alternativa aporta la unión de lo que exige cada rama; una repetición de mínimo >= 1, lo que exige
su cuerpo) y de cada literal su 4-grama menos frecuente en la tabla. Si un patrón coincide con la
URL, uno de sus literales está en la URL y con él su 4-grama: basta probar los patrones con algún
4-grama en la URL (en minúsculas, lo que sólo ensancha el filtro) y los que no tienen literal útil.
Es exacto para URL ASCII; una URL con otros caracteres (IGNORECASE de Unicode: ``ſ``, ``ı``…) se
prueba contra todos.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from daemon.memory import release_freed_memory

__all__ = ["ExtractorTable", "default_suitable", "dump_table", "load_table_from_child", "parse_pattern",
           "table_from_json", "write_table"]

GRAM = 4
_NEEDS_SOURCE_MIN = 1000
_NEEDS_STRINGS_MIN = 8
_CHILD_TIMEOUT_S = 120.0


@dataclass(slots=True)
class _Entry:
    """Un ``_VALID_URL`` de un extractor: clave, fuente y banderas; compilado al primer uso."""

    key: str
    source: str
    flags: int
    # Todas sus exigencias (ver ``parse_pattern``), cada una con sus cadenas unidas por "\n": un objeto
    # por exigencia y no uno por cadena (PeerTube tiene ~1.300), que es lo que pesa en memoria.
    needs: list[str] = field(default_factory=list)
    compiled: re.Pattern[str] | None = None
    # Por exigencia, el primer 4-grama de cada cadena: sin ninguno en la URL, ninguna de sus
    # cadenas está en ella (un ``isdisjoint`` en C). Se calcula sólo para los candidatos.
    need_grams: list[frozenset[str]] | None = None

    def match(self, url: str, lowered: str, grams: set[str]) -> bool:
        """Primero las exigencias (4-gramas, luego subcadenas; sin compilar nada); sólo si se
        cumplen, el patrón. Así los patrones enormes (PeerTube: 65 KB, ~2 MiB compilado) casi nunca
        se compilan ni cuestan más que unas búsquedas en conjuntos."""
        if self.need_grams is None:
            self.need_grams = [frozenset(text[:GRAM] for text in need.split("\n")) for need in self.needs]
        for need, first_grams in zip(self.needs, self.need_grams, strict=True):
            if first_grams.isdisjoint(grams) or not any(text in lowered for text in need.split("\n")):
                return False
        if self.compiled is None:
            self.compiled = re.compile(self.source, self.flags)
        return self.compiled.match(url) is not None

    def match_all(self, url: str) -> bool:
        """Sin exigencias (una URL no ASCII: el IGNORECASE de Unicode escapa a las minúsculas)."""
        if self.compiled is None:
            self.compiled = re.compile(self.source, self.flags)
        return self.compiled.match(url) is not None


@dataclass(slots=True)
class ExtractorTable:
    """Los patrones en orden de yt-dlp, con su índice de 4-gramas (ver el docstring del módulo)."""

    version: str
    entries: list[_Entry]
    by_gram: dict[str, str] = field(default_factory=dict)  # 4-grama -> "i,j,k" (índices de entries)
    unindexed: list[int] = field(default_factory=list)
    source: str = "child"  # de dónde salió: "child" (hecha ahora) o "cache" (``extractor_cache``)

    @classmethod
    def build(cls, version: str, rows: list[tuple[str, str, int]], needs: list[list[_Need]]) -> ExtractorTable:
        """``needs``: las exigencias de cada fila, sacadas al leer los patrones (``parse_pattern``)."""
        entries = [_Entry(key, source, flags) for key, source, flags in rows]
        for entry, ns in zip(entries, needs, strict=True):
            # Sólo donde ahorran algo: patrones largos (caros de compilar) o exigencias de muchas
            # cadenas; para los demás basta el índice (cada cadena guardada pesa en el daemon).
            if len(entry.source) > _NEEDS_SOURCE_MIN or any(len(n) > _NEEDS_STRINGS_MIN for n in ns):
                entry.needs = ["\n".join(sorted(n)) for n in ns]
        counts: Counter[str] = Counter(g for ns in needs for n in ns for s in n for g in set(_grams(s)))

        def rarest(text: str) -> str:
            return min(_grams(text), key=counts.__getitem__)

        table = cls(version, entries)
        for i, ns in enumerate(needs):
            if not ns:
                table.unindexed.append(i)
                continue
            # La exigencia más selectiva: la menor suma de frecuencias de los 4-gramas elegidos.
            need = min(ns, key=lambda n: sum(counts[rarest(s)] for s in n))
            for gram in {rarest(text) for text in need}:
                table.by_gram[gram] = f"{table.by_gram[gram]},{i}" if gram in table.by_gram else str(i)
        return table

    def candidates(self, url: str) -> list[int]:
        """Índices (en orden de yt-dlp) de los únicos patrones que pueden coincidir con ``url``."""
        if not url.isascii():
            return list(range(len(self.entries)))  # y ``first_claim`` no usa las exigencias
        found = set(self.unindexed)
        for gram in set(_grams(url.lower())):
            hit = self.by_gram.get(gram)
            if hit:
                found.update(map(int, hit.split(",")))
        return sorted(found)

    def first_claim(self, url: str) -> str | None:
        """Clave del primer extractor (en orden de yt-dlp) cuyo ``_VALID_URL`` coincide, o None."""
        lowered = url.lower() if url.isascii() else None
        grams = set(_grams(lowered)) if lowered is not None else set()
        for i in self.candidates(url):
            entry = self.entries[i]
            try:
                if entry.match_all(url) if lowered is None else entry.match(url, lowered, grams):
                    return entry.key
            except re.error:
                continue
        return None


def _grams(text: str) -> list[str]:
    return [text[i:i + GRAM] for i in range(len(text) - GRAM + 1)]


_Need = frozenset[str]  # toda coincidencia contiene al menos una de estas cadenas


def parse_pattern(source: str) -> tuple[int, list[_Need]]:
    """Las banderas que tendría ``re.compile(source)`` y sus exigencias, con un solo análisis y sin
    compilar: ``re.compile`` analiza el patrón y luego genera su código, que aquí no hace falta
    (compilar los ~1.900 ``_VALID_URL`` era la mitad del coste del hijo). ``re.error`` si no es válido."""
    from re import _parser  # type: ignore[attr-defined]

    tree = _parser.parse(source, 0)
    flags: int = tree.state.flags  # las de ``(?x)``, ``(?i)``... más UNICODE, como en ``re.compile``
    try:
        needs = _seq_needs(_parser, list(tree))
    except Exception:
        needs = []
    return flags, needs


def _seq_needs(sp: Any, items: list[tuple[Any, Any]]) -> list[_Need]:
    """Una secuencia: rachas de ``LITERAL`` ASCII (los grupos se recorren en línea), más lo que
    exigen sus alternativas (si toda rama exige algo) y sus repeticiones de mínimo >= 1."""
    found: list[_Need] = []
    run: list[str] = []

    def cut() -> None:
        if len(run) >= GRAM:
            found.append(frozenset(["".join(run).lower()]))
        run.clear()

    def walk(seq: list[tuple[Any, Any]]) -> None:
        for op, arg in seq:
            if op is sp.LITERAL and arg < 128:
                run.append(chr(arg))
            elif op is sp.SUBPATTERN:
                walk(list(arg[-1]))  # (grupo, banderas añadidas, quitadas, secuencia): en línea
            else:
                cut()
                if op is sp.BRANCH:
                    branch = [_best(_seq_needs(sp, list(alt))) for alt in arg[1]]
                    if all(branch):
                        found.append(frozenset().union(*branch))  # type: ignore[arg-type]
                elif op in (sp.MAX_REPEAT, sp.MIN_REPEAT, getattr(sp, "POSSESSIVE_REPEAT", sp.MAX_REPEAT)) \
                        and arg[0] >= 1:
                    found.extend(_seq_needs(sp, list(arg[2])))
    walk(items)
    cut()
    return found


_GENERIC = re.compile(r"(?:https?|://|www\.|[:/.])+")


def _best(needs: list[_Need]) -> _Need | None:
    """Sin frecuencias: mejor algo que no esté en toda URL (``http``, ``://``, ``www.``); luego la
    exigencia con menos cadenas y, a igualdad, la de cadena más corta más larga."""
    return min(needs, key=lambda n: (all(_GENERIC.fullmatch(s) for s in n), len(n), -min(map(len, n))),
               default=None)


# --- el proceso hijo ----------------------------------------------------------------------------
def default_suitable(klass: type) -> bool:
    """True si ``suitable`` y ``_match_valid_url`` son los de la clase base de yt-dlp."""
    for name in ("suitable", "_match_valid_url"):
        owner = next((k for k in klass.__mro__ if name in k.__dict__), None)
        if owner is None or owner.__name__ not in ("InfoExtractor", "LazyLoadExtractor"):
            return False
    return True


def dump_table() -> dict[str, Any]:
    """En el hijo: importa yt-dlp y devuelve sus patrones (sin el genérico ni los desactivados).

    ``custom``: claves de clases que redefinen ``suitable`` o ``_match_valid_url`` (su patrón sigue
    valiendo como filtro: sólo estrechan en favor de otro extractor no genérico); ``always``: las
    que no tienen ``_VALID_URL`` (hay que llamar a su ``suitable``: el daemon no puede sin yt-dlp)."""
    import yt_dlp.version  # type: ignore[import-untyped]
    from yt_dlp.extractor import gen_extractor_classes  # type: ignore[import-untyped]
    from yt_dlp.utils import variadic  # type: ignore[import-untyped]

    rows: list[tuple[str, str, int]] = []
    needs: list[list[_Need]] = []
    always: list[str] = []
    for klass in gen_extractor_classes():
        key = klass.ie_key()
        if key == "Generic" or not getattr(klass, "_ENABLED", True):
            continue
        if not klass._VALID_URL:
            if not default_suitable(klass):
                always.append(key)  # sin patrón, con su propio suitable(): hay que llamarlo
            continue  # sin patrón ni suitable propio: nunca reclama una URL (sólo incrustados)
        # Las mismas fuentes que compilaría ``_match_valid_url`` (``variadic(_VALID_URL)``), sin compilarlas.
        for source in variadic(klass._VALID_URL):
            flags, pattern_needs = parse_pattern(source)
            rows.append((key, source, flags))
            needs.append(pattern_needs)
    table = ExtractorTable.build(yt_dlp.version.__version__, rows, needs)
    return {"version": table.version, "rows": rows, "always": always, "by_gram": table.by_gram,
            "unindexed": table.unindexed, "needs": [e.needs for e in table.entries]}


def load_table_from_child(cache_dir: Path | None = None) -> ExtractorTable:
    """La tabla guardada en ``cache_dir`` (``extractor_cache``) si es la del yt-dlp instalado; si no,
    la hace un hijo, que también la guarda allí. ``RuntimeError`` si no se puede usar (el hijo falla,
    o yt-dlp tiene extractores sin ``_VALID_URL``): el llamador carga en proceso."""
    from daemon.downloaders.ytdlp.extractor_cache import cache_key

    key = cache_key() if cache_dir is not None else None
    saved = (cache_dir, key) if cache_dir is not None and key is not None else None
    table = _table_from_cache(*saved) if saved is not None else None
    if table is None:
        raw = _table_json_from_child(saved)
        table = table_from_json(raw)
        del raw
    release_freed_memory()  # el JSON leído (del hijo o de la copia) ya no hace falta
    return table


def _table_from_cache(cache_dir: Path, key: str) -> ExtractorTable | None:
    from daemon.downloaders.ytdlp.extractor_cache import read_cached_table

    raw = read_cached_table(cache_dir, key)
    if raw is None:
        return None
    try:
        table = table_from_json(raw)
    except (ValueError, KeyError, TypeError):  # copia rota o ajena: se rehace
        return None
    table.source = "cache"
    return table


def _table_json_from_child(saved: tuple[Path, str] | None) -> bytes:
    # ``-c`` y no ``-m``: el paquete ya importa este módulo, y ``-m`` lo ejecutaría otra vez como
    # ``__main__`` (runpy lo avisa en stderr en cada arranque del hijo). La copia la escribe el hijo:
    # escribirla aquí, en el hilo que carga la tabla, dejaba ~0,3 MiB más de RSS en su arena de malloc.
    child = f"import sys; from {__name__} import write_table; write_table(*sys.argv[1:])"
    where = [str(saved[0]), saved[1]] if saved is not None else []  # dónde guardarla, y con qué clave
    proc = subprocess.run([sys.executable, "-c", child, *where], capture_output=True, timeout=_CHILD_TIMEOUT_S,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"extractor table child exited {proc.returncode}: {' '.join(tail)}")
    return proc.stdout


def table_from_json(raw: bytes) -> ExtractorTable:
    """La tabla a partir del JSON del hijo (o de su copia guardada)."""
    data = orjson.loads(raw)
    if data["always"]:
        raise RuntimeError(f"extractors without _VALID_URL need yt-dlp in process: {data['always'][:3]}")
    # Lo escribe nuestro propio hijo: se usan las listas y cadenas del JSON tal cual, sin copiarlas.
    entries = [_Entry(key, source, flags, needs)
               for (key, source, flags), needs in zip(data["rows"], data["needs"], strict=True)]
    table = ExtractorTable(data["version"], entries, data["by_gram"], data["unindexed"])
    del data
    for i in table.unindexed:  # candidatos de toda URL (Youtube acepta un id suelto): ya compilados
        with contextlib.suppress(re.error):
            entries[i].match_all("")
    return table


def write_table(cache_dir: str | None = None, key: str | None = None) -> None:
    """En el hijo: la tabla en JSON por stdout y, con ``cache_dir`` y ``key``, su copia guardada."""
    from daemon.downloaders.ytdlp.extractor_cache import write_cached_table

    text = json.dumps(dump_table())
    if cache_dir is not None and key is not None:
        write_cached_table(Path(cache_dir), key, text.encode())
    sys.stdout.write(text)


if __name__ == "__main__":
    write_table()
